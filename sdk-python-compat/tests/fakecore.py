"""A stand-in for the ``operon`` binary in CLI tests: speaks the contract, writes the core's log lines.

Environment:
  FAKECORE_ARGV   a file to write the command line into (JSON)
  FAKECORE_INVOKE a handler id to invoke once on a sample object (reason CREATE)
  FAKECORE_EXIT   exit with this code right after describing (default: wait for SIGTERM)
  FAKECORE_KUBECONFIG_COPY  a file to copy the kubeconfig into: with --login, the one `Login`
                            answers (at start, and again as FAKECORE_RELOGIN says); else $KUBECONFIG's
  FAKECORE_RELOGIN  with --login: log in again for this reason ("unauthorized") after describing
  FAKECORE_DONE   a file to create when the invocation is done
  FAKECORE_HEALTH a file to write the handler service's health into (JSON): as described, and as
                  seen on SIGTERM, before exiting (the operator drains: it stops the core first)
"""
import json
import os
import signal
import sys
import threading

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kopf._proto.operon.v1 import handler_pb2 as pb
from kopf._proto.operon.v1 import handler_pb2_grpc as pb_grpc

OBJ = {'apiVersion': 'kopf.dev/v1', 'kind': 'KopfExample',
       'metadata': {'name': 'kopf-example-1', 'namespace': 'default', 'uid': 'uid-1'},
       'spec': {'field': 'value'}}


def log(level: str, message: str, target: str = 'operon::runtime::engine', **fields: object) -> None:
    line = {'timestamp': '2026-01-01T00:00:00.000000Z', 'level': level,
            'fields': {'message': message, **fields}, 'target': target}
    print(json.dumps(line), file=sys.stderr, flush=True)


def health_of(channel: grpc.Channel) -> dict[str, str]:
    """ The statuses of the overall health ("") and the handler service, by name. """
    stub = health_pb2_grpc.HealthStub(channel)
    answers = {}
    for service in ('', 'operon.v1.HandlerService'):
        status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
        answers[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    return answers


def main() -> None:
    argv = sys.argv[1:]
    if os.environ.get('FAKECORE_ARGV'):
        with open(os.environ['FAKECORE_ARGV'], 'w') as f:
            json.dump(argv, f)
    url = argv[argv.index('--handler') + 1]
    if os.environ.get('FAKECORE_KUBECONFIG_COPY') and '--login' not in argv:
        with open(os.environ['KUBECONFIG']) as src, open(os.environ['FAKECORE_KUBECONFIG_COPY'], 'w') as dst:
            dst.write(src.read())
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())

    channel = grpc.insecure_channel(url.removeprefix('http://'))
    health = {}
    with channel:
        stub = pb_grpc.HandlerServiceStub(channel)
        manifest = stub.Describe(pb.DescribeRequest(core_version='fake', contract_revision=1), timeout=10)
        log('INFO', 'Handler service described.', service=url, handlers=len(manifest.handlers))
        if os.environ.get('FAKECORE_HEALTH'):
            health['described'] = health_of(channel)
        if '--login' in argv:
            reasons = ['start'] + ([os.environ['FAKECORE_RELOGIN']] if os.environ.get('FAKECORE_RELOGIN') else [])
            for reason in reasons:
                answer = stub.Login(pb.LoginRequest(reason=reason), timeout=10)
                if os.environ.get('FAKECORE_KUBECONFIG_COPY'):
                    with open(os.environ['FAKECORE_KUBECONFIG_COPY'], 'w') as dst:
                        dst.write(answer.kubeconfig_json.decode())
                log('INFO', f'Logged in ({reason}).', expires=answer.expiration.seconds)
        handler_id = os.environ.get('FAKECORE_INVOKE')
        if handler_id:
            log('DEBUG', 'Creation is in progress: {}', target='kopf.objects', object='default/kopf-example-1')
            response = stub.Invoke(pb.InvokeRequest(
                handler_id=handler_id, reason=pb.REASON_CREATE, body_json=json.dumps(OBJ).encode()), timeout=10)
            if response.outcome.WhichOneof('result') == 'success':
                log('INFO', f"Handler '{handler_id}' succeeded.", target='kopf.objects', object='default/kopf-example-1')
            else:
                log('ERROR', f"Handler '{handler_id}' failed: {response.outcome}", target='kopf.objects',
                    object='default/kopf-example-1')
    print("a plain line on stdout", flush=True)
    if os.environ.get('FAKECORE_DONE'):
        with open(os.environ['FAKECORE_DONE'], 'w'):
            pass
    if os.environ.get('FAKECORE_EXIT'):
        log('ERROR', 'Dying as asked.')
        sys.exit(int(os.environ['FAKECORE_EXIT']))
    stopped.wait(30)
    if os.environ.get('FAKECORE_HEALTH'):
        with grpc.insecure_channel(url.removeprefix('http://')) as channel:
            health['stopping'] = health_of(channel)
        with open(os.environ['FAKECORE_HEALTH'], 'w') as f:
            json.dump(health, f)
    log('INFO', 'Stopped.')


if __name__ == '__main__':
    main()
