"""The key convention must produce Kopf's exact keys (the values were produced by Kopf 1.45.2 itself)."""

import pytest

from kopf import StorageKeyFormingConvention


@pytest.mark.parametrize(
    "handler_id, expected",
    [
        ("create_fn", ["kopf.zalando.org/create_fn"]),
        ("create_fn/task_a", ["kopf.zalando.org/create_fn.task_a"]),
        ("update_fn/spec.field", ["kopf.zalando.org/update_fn.spec.field"]),
        (
            "x" * 64,
            ["kopf.zalando.org/" + "x" * 56 + "-SItAqA", "kopf.zalando.org/" + "x" * 39 + "-SItAqA"],
        ),
        (
            "reconcile_the_object_with_a_very_long_name/spec.template.spec.containers",
            [
                "kopf.zalando.org/reconcile_the_object_with_a_very_long_name.spec.template-23zNAA",
                "kopf.zalando.org/reconcile_the_object_with_a_very_long_n-rWDZmQ",
            ],
        ),
    ],
)
def test_keys_match_kopf(handler_id: str, expected: list[str]) -> None:
    assert StorageKeyFormingConvention().make_keys(handler_id) == expected


def test_custom_prefix_v1_key_matches_kopf() -> None:
    convention = StorageKeyFormingConvention(prefix="my-operator.example.com")
    assert convention.make_v1_key("x" * 40) == "my-operator.example.com/" + "x" * 30 + "xx-tEokcg"


def test_replicasets_of_deployments_get_the_drs_suffix() -> None:
    body = {"kind": "ReplicaSet", "metadata": {"ownerReferences": [{"kind": "Deployment"}]}}
    keys = StorageKeyFormingConvention().make_keys("create_fn", body=body)
    assert keys == ["kopf.zalando.org/create_fn-ofDRS"]


def test_other_replicasets_get_no_suffix() -> None:
    body = {"kind": "ReplicaSet", "metadata": {"ownerReferences": [{"kind": "StatefulSet"}]}}
    assert StorageKeyFormingConvention().make_keys("create_fn", body=body) == [
        "kopf.zalando.org/create_fn"
    ]


def test_an_empty_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="must be prefixed"):
        StorageKeyFormingConvention(prefix="")
