"""
A raw handler service for the bad-input scenario: the operon.v1 contract spoken directly (no
Kopf SDK in between to catch the junk first), with the core started as its child.

    python rawservice.py NAMESPACE HTTP_ADDRESS

One creation handler per kind of bad answer, chosen by the object's ``badinput`` label, each
with ``retries`` 2, ``backoff`` 1 s and a per-call deadline (``call_timeout``) of 2 s (10 s for
``raw-huge``, whose answer takes a while to travel):

- ``raw-huge``: a success whose result is 100 MiB of JSON (over the core's 64 MiB message limit;
  this server's own send limit is lifted);
- ``raw-junk``: a success whose result is not JSON;
- ``raw-hang``: never answers;
- ``raw-late``: answers with a success 1 s after the call's deadline;
- ``raw-plain``: a plain success (the control objects).

Every call appends a ledger line (``RELIABILITY_LEDGER``) when it starts, and when it answers
(``phase``: ``start``, ``end``). The core (``OPERON_BIN``) runs with ``--standalone`` and
``--default-backoff 1`` in NAMESPACE, its HTTP listener on HTTP_ADDRESS, its log on this
process's stdout; it dies with this process (``PR_SET_PDEATHSIG``).
"""
import asyncio
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import grpc
import grpc.aio
from google.protobuf import duration_pb2
from kopf._proto.operon.v1 import handler_pb2 as pb
from kopf._proto.operon.v1 import handler_pb2_grpc as pb_grpc
from ledgerline import ledger_append

LEDGER = os.environ['RELIABILITY_LEDGER']
MiB = 1024 * 1024
MODES = ('raw-huge', 'raw-junk', 'raw-hang', 'raw-late', 'raw-plain')
CALL_TIMEOUT = {'raw-huge': 10.0}  # else 2 s


def seconds(n: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(n * 1e9))
    return d


def manifest() -> pb.Manifest:
    handlers = [
        pb.Handler(
            id=mode, kind=pb.HANDLER_KIND_CREATE,
            resource=pb.ResourceSelector(group='kopf.dev', version='v1', name='kopfexamples'),
            filters=pb.Filters(labels={'badinput': pb.ValueFilter(equals_json=f'"{mode}"'.encode())}),
            options=pb.Options(retries=2, backoff=seconds(1), call_timeout=seconds(CALL_TIMEOUT.get(mode, 2.0))),
        )
        for mode in MODES
    ]
    return pb.Manifest(service_name='reliability raw service', contract_revision=1, handlers=handlers)


def success(result: bytes) -> pb.InvokeResponse:
    return pb.InvokeResponse(outcome=pb.Outcome(success=pb.Success(result_json=result)))


# Made once: building it in a call would hold this service's only thread for a second or two.
HUGE = success(b'"' + b'x' * (100 * MiB) + b'"')


class Servicer(pb_grpc.HandlerServiceServicer):
    async def Describe(self, request: pb.DescribeRequest, context: Any) -> pb.Manifest:
        return manifest()

    async def Invoke(self, request: pb.InvokeRequest, context: Any) -> pb.InvokeResponse:
        name = json.loads(request.body_json)['metadata']['name']
        remaining = context.time_remaining()

        def note(phase: str) -> None:
            ledger_append(LEDGER, handler=request.handler_id, name=name, retry=request.retry,
                          phase=phase, time=time.time(), remaining=remaining)
        note('start')
        if request.handler_id == 'raw-huge':
            answer = HUGE
        elif request.handler_id == 'raw-junk':
            answer = success(b'{"this is": not JSON')
        elif request.handler_id == 'raw-hang':
            await asyncio.sleep(3600)
            answer = success(b'')
        elif request.handler_id == 'raw-late':
            await asyncio.sleep((remaining or 2.0) + 1)
            answer = success(b'{"late": true}')
        else:
            answer = success(b'{"ok": true}')
        note('end')
        return answer


def die_with_parent() -> None:  # between fork & exec: only already-loaded code.
    LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


LIBC = ctypes.CDLL('libc.so.6', use_errno=True)


async def main(namespace: str, http: str) -> None:
    server = grpc.aio.server(options=[('grpc.max_send_message_length', -1),
                                      ('grpc.max_receive_message_length', -1)])
    pb_grpc.add_HandlerServiceServicer_to_server(Servicer(), server)  # type: ignore[abstract]  # the rest: UNIMPLEMENTED
    port = server.add_insecure_port('127.0.0.1:0')
    await server.start()
    argv = [os.environ['OPERON_BIN'], 'run', '--handler', f'http://127.0.0.1:{port}', '-n', namespace,
            '--http', http, '--standalone', '--default-backoff', '1']
    print(f"raw service on 127.0.0.1:{port}; starting the core: {' '.join(argv)}", flush=True)
    core = subprocess.Popen(argv, preexec_fn=die_with_parent)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    waiting = asyncio.ensure_future(loop.run_in_executor(None, core.wait))
    either: list[asyncio.Future[Any]] = [asyncio.ensure_future(stopping.wait()), waiting]
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if core.poll() is None:
        core.send_signal(signal.SIGTERM)
    code = await waiting
    await server.stop(1)
    sys.exit(code)


if __name__ == '__main__':
    asyncio.run(main(sys.argv[1], sys.argv[2]))
