#!/usr/bin/env python3
"""Generates the operon.v1 Python stubs into ``src/kopf/_proto/`` (committed; drift-checked).

Usage: ``python tools/gen_proto.py [OUTPUT_DIR]`` (default: ``src/kopf/_proto``). Needs
``grpcio-tools`` (the ``[test]`` extra pins the version whose output is committed).

The stubs keep the proto's own path (``operon/v1/handler_pb2.py``), so the descriptor is
registered as ``operon/v1/handler.proto`` as in every other language; the gRPC module's
absolute import of ``operon.v1`` is made relative, so the stubs live inside ``kopf``.
"""
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
SDK = HERE.parent
PROTO_ROOT = SDK.parent / 'proto'
PROTO_FILE = PROTO_ROOT / 'operon' / 'v1' / 'handler.proto'
GENERATED = ('handler_pb2.py', 'handler_pb2.pyi', 'handler_pb2_grpc.py')


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    from grpc_tools import protoc  # type: ignore[import-untyped]

    out_dir.mkdir(parents=True, exist_ok=True)
    include = pathlib.Path(protoc.__file__).parent / '_proto'
    rc = protoc.main([
        'grpc_tools.protoc',
        f'-I{PROTO_ROOT}',
        f'-I{include}',
        f'--python_out={out_dir}',
        f'--pyi_out={out_dir}',
        f'--grpc_python_out={out_dir}',
        str(PROTO_FILE),
    ])
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}")
    package = out_dir / 'operon' / 'v1'
    grpc_module = package / 'handler_pb2_grpc.py'
    text = grpc_module.read_text()
    text = text.replace('from operon.v1 import handler_pb2', 'from . import handler_pb2')
    grpc_module.write_text(text)
    return [package / name for name in GENERATED]


if __name__ == '__main__':
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else SDK / 'src' / 'kopf' / '_proto'
    for path in generate(target):
        print(path)
