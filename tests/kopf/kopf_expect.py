#!/usr/bin/env python3
"""What real Kopf (PyPI ``kopf==1.45.2``) writes for given progress records and a given body.

The end-to-end tests (``tests/tests/engine.rs``) run this with the Python of
``~/.cache/operon/venv-kopf`` to get the expected annotations from Kopf's own storage classes,
never from a re-implementation. Input is one JSON object on stdin; output one JSON object on
stdout. Every part of the input is optional:

``body``
    The object as read from the API server (used for key forming and for the essence).
``prefix``
    The annotation prefix (default ``kopf.zalando.org``).
``records``
    ``{handler_id: record}`` as read from the object (decoded JSON of the annotations). Each is
    passed through Kopf's ``HandlerState.from_storage(...).for_storage()`` and stored with
    ``SmartProgressStorage.store`` -- exactly what Kopf would write for that state.
    Output: ``store`` (the merge patch Kopf produces).
``simulate``
    ``{handler_id: {"purpose": "create", "outcomes": [{"final": bool, "delay": secs|null,
    "error": "message"|null, "subrefs": [ids]}], ...}}``: a record built from scratch with
    Kopf's ``HandlerState.from_scratch(...).with_outcome(...)`` for each outcome in turn, then
    stored with ``SmartProgressStorage.store``.
    Output: ``simulated`` (``{handler_id: {"key": annotation key, "value": annotation value}}``)
    and ``simulated_patch``.
``diffbase``
    ``true``: build the essence of ``body`` as Kopf's processing does
    (``AnnotationsDiffBaseStorage.build`` then ``SmartProgressStorage.clear``) and store it with
    ``AnnotationsDiffBaseStorage.store``. Output: ``diffbase`` (the merge patch) and ``essence``.
``purge``
    ``[handler_id, ...]``: Kopf's ``SmartProgressStorage.purge`` of each id against ``body``.
    Output: ``purge`` (the merge patch).
``keys``
    ``[handler_id, ...]``: the annotation keys Kopf uses for each id (V2 first, then V1 if it
    differs). Output: ``keys`` (``{handler_id: [key, ...]}``).

Batches, so that thousands of cases go through one process (``tests/tests/differential/``):

``essences``
    ``[{"body": {...}, "extra_fields": ["status.phase", ...], "type": "MODIFIED", "initial":
    false}, ...]``: each body through the first step of Kopf's processing
    (``processing._detect_causes`` with a registry that has an ``on.create`` handler and one
    ``on.field`` handler per extra field): the stored diff-base fetched and cleared, the essence
    built and cleared, their diff and the cause; then the essence stored with
    ``AnnotationsDiffBaseStorage.store``. Output: ``essences``, one answer per body, in order:
    ``{"old": json|null, "new": json, "diff": [[op, path, old, new], ...], "reason": str,
    "stored": json}`` where ``old``, ``new`` and ``stored`` (the merge patch) are the texts of
    ``json.dumps(..., separators=(',', ':'))``; or ``{"error": "ExceptionType: message"}``
    where Kopf raises.
``diffs``
    ``[[old, new], ...]``: ``kopf._cogs.structs.diffs.diff(old, new)`` of each pair. Output:
    ``diffs``, one ``[[op, path, old, new], ...]`` per pair, in Kopf's order (which depends on
    Python's hash seed: it walks the keys of each level as ``frozenset`` objects).
``causes``
    ``[{"body": {...}, "type": "ADDED"|"MODIFIED"|"DELETED"|null, "initial": bool}, ...]``:
    the changing cause Kopf's processing detects for each (as in ``essences``; ``initial`` is
    the object's memory: noticed by the initial listing and not fully handled since). Output:
    ``causes``, one ``{"reason": str, "initial": bool, "deleted": bool}`` per case.

Run standalone: ``echo '{"simulate": {"h": {"outcomes": [{"final": true}]}}}' | python3 kopf_expect.py``

With ``--serve``, every line of stdin is a request and every answer is one line of stdout, until
stdin closes: one process for any number of batches.
"""
import asyncio
import datetime
import json
import logging
import sys
from typing import Any

import kopf
from kopf._cogs.structs import bodies, diffs, patches, references
from kopf._core.actions import execution, progression
from kopf._core.engines import indexing
from kopf._core.intents import causes, registries
from kopf._core.reactor import inventory, processing

EXPECTED_KOPF_VERSION = "1.45.2"


def _check_version() -> None:
    from importlib.metadata import version

    found = version("kopf")
    if found != EXPECTED_KOPF_VERSION:
        raise SystemExit(f"kopf=={EXPECTED_KOPF_VERSION} is required, found {found}")


def _basetime() -> datetime.datetime:
    loop = asyncio.get_running_loop()
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=loop.time())


_RESOURCE = references.Resource(
    group="kopf.dev", version="v1", plural="kopfexamples", kind="KopfExample", namespaced=True
)
_LOGGER = logging.getLogger("kopf_expect")
_REGISTRIES: dict[tuple[str, ...], registries.OperatorRegistry] = {}


def _registry(extra_fields: tuple[str, ...]) -> registries.OperatorRegistry:
    """A registry with an ``on.create`` handler and an ``on.field`` handler per extra field."""
    if extra_fields not in _REGISTRIES:
        registry = registries.OperatorRegistry()

        def fn(**_: Any) -> None:
            pass

        kopf.on.create("kopf.dev", "v1", "kopfexamples", registry=registry)(fn)
        for field in extra_fields:
            kopf.on.field(
                "kopf.dev", "v1", "kopfexamples", field=field, id=f"f/{field}", registry=registry
            )(fn)
        _REGISTRIES[extra_fields] = registry
    return _REGISTRIES[extra_fields]


def _changing_cause(
    case: dict[str, Any], settings: kopf.OperatorSettings
) -> causes.ChangingCause:
    """Kopf's processing up to the changing cause, for one body."""
    raw = case.get("body") or {}
    body = bodies.Body(raw)
    initial = bool(case.get("initial"))
    detected = processing._detect_causes(
        indexers=indexing.OperatorIndexers(),
        registry=_registry(tuple(case.get("extra_fields") or ())),
        settings=settings,
        resource=_RESOURCE,
        raw_event={"type": case.get("type", "MODIFIED"), "object": raw},
        body=body,
        patch=patches.Patch(),
        memory=inventory.ResourceMemory(noticed_by_listing=initial, fully_handled_once=False),
        local_logger=_LOGGER,
        event_logger=_LOGGER,
    )
    assert detected.changing_cause is not None, "the registry has a changing handler"
    return detected.changing_cause


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _diff(diff: diffs.Diff) -> list[Any]:
    return [[str(op), list(path), old, new] for op, path, old, new in diff]


def _essence(case: dict[str, Any], settings: kopf.OperatorSettings) -> dict[str, Any]:
    try:
        cause = _changing_cause(case, settings)
        patch = patches.Patch()
        body = bodies.Body(case.get("body") or {})
        settings.persistence.diffbase_storage.store(body=body, patch=patch, essence=cause.new)
    except Exception as e:  # what Kopf raises is the answer
        return {"error": f"{type(e).__name__}: {e}"}
    return {
        "old": None if cause.old is None else _dumps(cause.old),
        "new": _dumps(cause.new),
        "diff": _diff(cause.diff),
        "reason": str(cause.reason),
        "stored": _dumps(dict(patch)),
    }


def _cause(case: dict[str, Any], settings: kopf.OperatorSettings) -> dict[str, Any]:
    cause = _changing_cause(case, settings)
    return {"reason": str(cause.reason), "initial": cause.initial, "deleted": cause.deleted}


async def main(request: dict[str, Any]) -> dict[str, Any]:
    prefix = request.get("prefix", "kopf.zalando.org")
    body = bodies.Body(request.get("body") or {})
    progress = kopf.SmartProgressStorage(prefix=prefix)
    diffbase = kopf.AnnotationsDiffBaseStorage(prefix=prefix)
    basetime = _basetime()
    answer: dict[str, Any] = {"kopf_version": EXPECTED_KOPF_VERSION}

    if "records" in request:
        patch = patches.Patch()
        for handler_id, record in request["records"].items():
            state = progression.HandlerState.from_storage(record, basetime=basetime)
            progress.store(key=handler_id, record=state.for_storage(), body=body, patch=patch)
        answer["store"] = dict(patch)

    if "simulate" in request:
        patch = patches.Patch()
        simulated = {}
        for handler_id, spec in request["simulate"].items():
            state = progression.HandlerState.from_scratch(
                basetime=basetime, purpose=spec.get("purpose", "create")
            )
            for outcome in spec.get("outcomes", []):
                error = outcome.get("error")
                final = bool(outcome.get("final"))
                exception: Exception | None = None
                if error is not None:
                    exception = (
                        kopf.PermanentError(error) if final else kopf.TemporaryError(error)
                    )
                state = state.with_outcome(
                    execution.Outcome(
                        final=final,
                        delay=outcome.get("delay"),
                        exception=exception,
                        subrefs=outcome.get("subrefs") or (),
                    )
                )
            one = patches.Patch()
            progress.store(key=handler_id, record=state.for_storage(), body=body, patch=one)
            progress.store(key=handler_id, record=state.for_storage(), body=body, patch=patch)
            annotations = dict(one).get("metadata", {}).get("annotations", {})
            key = next(iter(progress.storages[0].make_keys(handler_id, body=body)))
            simulated[handler_id] = {"key": key, "value": annotations[key]}
        answer["simulated"] = simulated
        answer["simulated_patch"] = dict(patch)

    if request.get("diffbase"):
        patch = patches.Patch()
        essence = progress.clear(essence=diffbase.build(body=body))
        diffbase.store(body=body, patch=patch, essence=essence)
        answer["diffbase"] = dict(patch)
        answer["essence"] = essence

    if "purge" in request:
        patch = patches.Patch()
        for handler_id in request["purge"]:
            progress.purge(key=handler_id, body=body, patch=patch)
        answer["purge"] = dict(patch)

    if "keys" in request:
        annotations_storage = progress.storages[0]
        answer["keys"] = {
            handler_id: list(annotations_storage.make_keys(handler_id, body=body))
            for handler_id in request["keys"]
        }

    if "essences" in request or "causes" in request:
        settings = kopf.OperatorSettings()
        if "essences" in request:
            answer["essences"] = [_essence(case, settings) for case in request["essences"]]
        if "causes" in request:
            answer["causes"] = [_cause(case, settings) for case in request["causes"]]

    if "diffs" in request:
        answer["diffs"] = [_diff(diffs.diff(old, new)) for old, new in request["diffs"]]

    return answer


if __name__ == "__main__":
    _check_version()
    if sys.argv[1:] == ["--serve"]:
        for line in sys.stdin:
            result = asyncio.run(main(json.loads(line)))
            sys.stdout.write(_dumps(result) + "\n")
            sys.stdout.flush()
    else:
        request = json.load(sys.stdin)
        result = asyncio.run(main(request))
        json.dump(result, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
