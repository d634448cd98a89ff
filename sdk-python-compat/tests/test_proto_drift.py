"""The committed stubs are exactly what tools/gen_proto.py generates from the contract."""
import importlib.util
import pathlib

import pytest

SDK = pathlib.Path(__file__).resolve().parent.parent
COMMITTED = SDK / 'src' / 'kopf' / '_proto'


def test_the_generated_stubs_are_up_to_date(tmp_path):
    pytest.importorskip('grpc_tools', reason="grpcio-tools is not installed (it is in the [test] extra)")
    spec = importlib.util.spec_from_file_location('gen_proto', SDK / 'tools' / 'gen_proto.py')
    assert spec is not None and spec.loader is not None
    gen_proto = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_proto)
    fresh = gen_proto.generate(tmp_path)
    assert fresh
    for path in fresh:
        committed = COMMITTED / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `python tools/gen_proto.py` in sdk-python-compat/")
