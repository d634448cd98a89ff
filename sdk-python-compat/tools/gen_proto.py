#!/usr/bin/env python3
"""Generates the operon.v1 Python stubs into ``src/kopf/_proto/`` (committed; drift-checked).

Usage: ``python tools/gen_proto.py [OUTPUT_DIR]`` (default: ``src/kopf/_proto``). Needs
``grpcio-tools`` and ``mypy-protobuf`` (the ``[test]`` extra pins the versions whose output is
committed).

The stubs keep the proto's own path (``operon/v1/handler_pb2.py``), so the descriptor is
registered as ``operon/v1/handler.proto`` as in every other language; the gRPC module's (and its
type stub's) absolute import of ``operon.v1`` is made relative, so the stubs live inside ``kopf``.
The messages' type stub (``handler_pb2.pyi``) is protoc's own; the gRPC module's
(``handler_pb2_grpc.pyi``) is mypy-protobuf's, for the asyncio server only (``only_async``),
which is all the SDK serves with.
"""
import pathlib
import shutil
import sys

HERE = pathlib.Path(__file__).resolve().parent
SDK = HERE.parent
PROTO_ROOT = SDK.parent / 'proto'
PROTO_FILE = PROTO_ROOT / 'operon' / 'v1' / 'handler.proto'
GENERATED = ('handler_pb2.py', 'handler_pb2.pyi', 'handler_pb2_grpc.py', 'handler_pb2_grpc.pyi')


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    include = pathlib.Path(protoc.__file__).parent / '_proto'
    rc = protoc.main([
        'grpc_tools.protoc',
        f'-I{PROTO_ROOT}',
        f'-I{include}',
        f'--python_out={out_dir}',
        f'--pyi_out={out_dir}',
        f'--grpc_python_out={out_dir}',
        f'--plugin=protoc-gen-mypy_grpc={_plugin("protoc-gen-mypy_grpc")}',
        f'--mypy_grpc_out=only_async,quiet:{out_dir}',
        str(PROTO_FILE),
    ])
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}")
    package = out_dir / 'operon' / 'v1'
    for name in ('handler_pb2_grpc.py', 'handler_pb2_grpc.pyi'):
        module = package / name
        text = module.read_text()
        text = text.replace('from operon.v1 import handler_pb2', 'from . import handler_pb2')
        module.write_text(text)
    return [package / name for name in GENERATED]


def _plugin(name: str) -> str:
    """ A protoc plugin's script: next to this Python's (its venv), else on the PATH. """
    beside = pathlib.Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed (`pip install mypy-protobuf`; it is in the [test] extra)")
    return found


if __name__ == '__main__':
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else SDK / 'src' / 'kopf' / '_proto'
    for path in generate(target):
        print(path)
