"""`kopf run` / `kopf serve` / KopfRunner, with a stand-in core that speaks the contract."""
import json
import os
import pathlib
import signal
import stat
import subprocess
import sys
import textwrap
import time
import urllib.request

import grpc
import pytest

import kopf
from kopf import cli
from kopf._core.reactor import running
from kopf._proto.operon.v1 import handler_pb2 as pb
from kopf._proto.operon.v1 import handler_pb2_grpc as pb_grpc
from kopf._transport import core as corep
from kopf.testing import KopfRunner

HERE = pathlib.Path(__file__).parent
KOPF_SCRIPT = pathlib.Path(sys.executable).parent / 'kopf'

OPERATOR = '''
import kopf

@kopf.on.startup()
def startup_fn(logger, **_):
    logger.info("STARTUP RAN")

@kopf.on.create('kopfexamples', id='create_fn')
def create_fn(logger, **_):
    logger.info("And here we are!")
    return {'message': 'hello world'}

@kopf.on.cleanup()
def cleanup_fn(logger, **_):
    logger.info("CLEANUP RAN")
'''


@pytest.fixture()
def fakecore(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    script = tmp_path / 'operon'
    script.write_text(f'#!/bin/sh\nexec {sys.executable} {HERE / "fakecore.py"} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv('OPERON_BIN', str(script))
    monkeypatch.setenv('FAKECORE_ARGV', str(tmp_path / 'argv.json'))
    monkeypatch.setenv('FAKECORE_INVOKE', 'create_fn')
    return tmp_path


@pytest.fixture()
def operator_py(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / 'operator.py'
    path.write_text(OPERATOR)
    return path


def wait_for(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in message for message in list(caplog.messages)):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} is not logged within {timeout} s")


def test_kopf_run_serves_starts_the_core_forwards_its_lines_and_stops_it(
        fakecore, operator_py, registry, settings, caplog):
    settings.execution.default_backoff = 1
    with KopfRunner(['run', '-A', '--standalone', '--verbose', str(operator_py)],
                    registry=registry, settings=settings, timeout=30) as runner:
        wait_for(caplog, "Handler 'create_fn' succeeded.")

    assert runner.exit_code == 0
    assert runner.exception is None
    output = runner.output
    assert output.index('STARTUP RAN') < output.index('And here we are!') < output.index('CLEANUP RAN')
    assert '[default/kopf-example-1] And here we are!' in output
    assert "[default/kopf-example-1] Handler 'create_fn' succeeded." in output
    assert '[default/kopf-example-1] Creation is in progress: {}' in output
    assert 'Handler service described. (service=http://127.0.0.1:' in output
    assert 'a plain line on stdout' in output
    assert output.index('Stopped.') < output.index('CLEANUP RAN')  # the core stops first
    argv = json.loads((fakecore / 'argv.json').read_text())
    assert argv[:4] == ['--log-format', 'json', 'run', '--handler']
    assert argv[4].startswith('http://127.0.0.1:')
    assert argv[5:7] == ['-A', '--http'] and argv[7].startswith('127.0.0.1:')
    assert argv[8:] == ['--standalone', '--prefix', 'kopf.zalando.org',
                        '--progress-storage', SMART, '--diffbase-storage', ANNOTATIONS,
                        '--finalizer', 'kopf.zalando.org/KopfFinalizerMarker',
                        '--default-backoff', '1.0', '--consistency-timeout', '5.0']


# Kopf's default storages, as the core is always told them (tests/test_storages.py: all of them).
SMART = ('{"multi":[{"annotations":{"prefix":"kopf.zalando.org","verbose":false,"touch_key":"touch-dummy",'
         '"v1":true}},{"status":{"field":"status.kopf.progress","touch_field":"status.kopf.dummy","write":false}}]}')
ANNOTATIONS = ('{"annotations":{"prefix":"kopf.zalando.org","key":"last-handled-configuration","v1":true,'
               '"ignored_fields":[]}}')


def test_the_core_dying_stops_the_operator_with_an_error(
        fakecore, operator_py, registry, monkeypatch, caplog):
    monkeypatch.setenv('FAKECORE_EXIT', '3')
    with KopfRunner(['run', '-n', 'ns1', '-n', 'ns2', str(operator_py)],
                    registry=registry, reraise=False, timeout=30) as runner:
        wait_for(caplog, 'CLEANUP RAN')
    assert runner.exit_code == 1
    assert isinstance(runner.exception, running.OperatorError)
    assert 'The Operon core has exited unexpectedly with exit code 3.' in runner.output
    assert 'Dying as asked.' in runner.output
    argv = json.loads((fakecore / 'argv.json').read_text())
    assert argv[5:9] == ['-n', 'ns1', '-n', 'ns2']


def test_a_missing_core_is_a_clear_error(operator_py, registry, monkeypatch):
    monkeypatch.delenv('OPERON_BIN', raising=False)
    monkeypatch.setenv('PATH', '/nonexistent')
    with KopfRunner(['run', '-A', str(operator_py)], registry=registry, reraise=False, timeout=30) as runner:
        pass
    assert runner.exit_code == 1
    assert "The Operon core ('operon') is not found: put it on $PATH or set $OPERON_BIN" in runner.output


def test_a_wrong_operon_bin_is_a_clear_error(tmp_path):
    with pytest.raises(corep.CoreNotFoundError, match="OPERON_BIN is set to"):
        corep.find_binary({'OPERON_BIN': str(tmp_path / 'nothing')})


def _executable(path: pathlib.Path, text: str = '#!/bin/sh\n') -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_the_core_is_found_in_order_operon_bin_then_the_wheels_then_path(tmp_path):
    explicit = _executable(tmp_path / 'explicit' / 'operon')
    bundled = _executable(tmp_path / 'wheel' / 'operon')
    on_path = _executable(tmp_path / 'bin' / 'operon')
    env = {'OPERON_BIN': str(explicit), 'PATH': str(on_path.parent)}
    assert corep.find_binary(env, bundled=bundled) == str(explicit)
    assert corep.find_binary({'PATH': env['PATH']}, bundled=bundled) == str(bundled)
    assert corep.find_binary({'PATH': env['PATH']}, bundled=tmp_path / 'none') == str(on_path)
    bundled.chmod(0o644)
    with pytest.raises(corep.CoreNotFoundError, match="came with operon-kopf .* is not executable"):
        corep.find_binary({'PATH': env['PATH']}, bundled=bundled)


def test_version_prints_the_sdks_and_the_cores_versions(tmp_path, monkeypatch):
    core = _executable(tmp_path / 'operon', '#!/bin/sh\necho "operon 9.8.7 (handler contract revision 1)"\n')
    monkeypatch.setenv('OPERON_BIN', str(core))
    result = run_cli('--version')
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f'kopf (operon-kopf) {cli.__version__}',
        f'core: operon 9.8.7 (handler contract revision 1) ({core})',
    ]
    monkeypatch.setenv('OPERON_BIN', str(tmp_path / 'missing'))
    result = run_cli('--version')
    assert result.returncode == 0 and 'core: not found ($OPERON_BIN is set to' in result.stdout


def test_the_login_handlers_credentials_go_to_the_core(fakecore, tmp_path, registry, monkeypatch, caplog):
    monkeypatch.setenv('FAKECORE_KUBECONFIG_COPY', str(tmp_path / 'kubeconfig'))
    path = tmp_path / 'login.py'
    path.write_text(OPERATOR + textwrap.dedent('''
        @kopf.on.login()
        def login_fn(**_):
            return kopf.ConnectionInfo(server='https://example:6443', token='secret', default_namespace='ns')
    '''))
    with KopfRunner(['run', '-A', str(path)], registry=registry, timeout=30) as runner:
        wait_for(caplog, "Handler 'create_fn' succeeded.")
    assert runner.exit_code == 0
    config = json.loads((tmp_path / 'kubeconfig').read_text())
    assert config['clusters'][0]['cluster'] == {'server': 'https://example:6443'}
    assert config['users'][0]['user'] == {'token': 'secret'}
    assert 'Initial authentication has finished.' in runner.output
    assert 'Re-authentication' not in runner.output, "the core's first Login takes the start-up's credentials"


def test_the_core_logs_in_again_through_the_login_handlers(fakecore, tmp_path, registry, monkeypatch, caplog):
    monkeypatch.setenv('FAKECORE_KUBECONFIG_COPY', str(tmp_path / 'kubeconfig'))
    monkeypatch.setenv('FAKECORE_ARGV', str(tmp_path / 'argv'))
    monkeypatch.setenv('FAKECORE_RELOGIN', 'unauthorized')
    path = tmp_path / 'login.py'
    path.write_text(OPERATOR + textwrap.dedent('''
        import datetime
        CALLS = []

        @kopf.on.login()
        def login_fn(**_):
            CALLS.append(1)
            return kopf.ConnectionInfo(server='https://example:6443', token=f'token-{len(CALLS)}',
                                       expiration=datetime.datetime(2100, 1, 1))
    '''))
    with KopfRunner(['run', '-A', str(path)], registry=registry, timeout=30) as runner:
        wait_for(caplog, "Handler 'create_fn' succeeded.")
        wait_for(caplog, "Logged in (unauthorized).")
    assert runner.exit_code == 0
    assert '--login' in json.loads((tmp_path / 'argv').read_text())
    config = json.loads((tmp_path / 'kubeconfig').read_text())
    assert config['users'][0]['user'] == {'token': 'token-2'}
    assert 'Re-authentication has finished.' in runner.output
    assert "expires=4102444800" in runner.output or '4102444800' in runner.output


def test_without_login_handlers_the_core_reads_the_kubeconfig(fakecore, tmp_path, registry, monkeypatch, caplog):
    monkeypatch.setenv('FAKECORE_ARGV', str(tmp_path / 'argv'))
    path = tmp_path / 'plain.py'
    path.write_text(OPERATOR)
    with KopfRunner(['run', '-A', str(path)], registry=registry, timeout=30) as runner:
        wait_for(caplog, "Handler 'create_fn' succeeded.")
    assert runner.exit_code == 0
    assert '--login' not in json.loads((tmp_path / 'argv').read_text())


def test_kopf_serve_serves_without_a_core_and_the_liveness_probes(operator_py, registry):
    operator_py.write_text(OPERATOR + textwrap.dedent('''
        @kopf.on.probe(id='answer')
        def answer(**_):
            return 42
    '''))
    port, http_port = corep.free_port(), corep.free_port()
    with KopfRunner(['serve', '--listen', f'127.0.0.1:{port}', '--liveness', f'http://127.0.0.1:{http_port}/healthz',
                     str(operator_py)], registry=registry, timeout=30) as runner:
        with grpc.insecure_channel(f'127.0.0.1:{port}') as channel:
            grpc.channel_ready_future(channel).result(timeout=15)
            stub = pb_grpc.HandlerServiceStub(channel)
            manifest = stub.Describe(pb.DescribeRequest(), timeout=5)
            response = stub.Invoke(pb.InvokeRequest(handler_id='create_fn', reason=pb.REASON_CREATE,
                                                    body_json=b'{"metadata": {"name": "x"}}'), timeout=5)
        with urllib.request.urlopen(f'http://127.0.0.1:{http_port}/healthz', timeout=5) as http:
            health = json.loads(http.read())
    assert [h.id for h in manifest.handlers] == ['create_fn']
    assert response.outcome.success.result_json == b'{"message":"hello world"}', response
    assert health == {'answer': 42}
    assert runner.exit_code == 0
    assert 'CLEANUP RAN' in runner.output


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: pathlib.Path | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KOPF_SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})), cwd=cwd)


def test_a_syntax_error_is_a_clear_error_not_a_hang(tmp_path):
    path = tmp_path / 'broken.py'
    path.write_text('import kopf\n\ndef oops(:\n    pass\n')
    result = run_cli('run', '-A', str(path))
    assert result.returncode == 1
    assert f'kopf: cannot load the handlers: a syntax error in {path}, line 3' in result.stderr


def test_a_missing_module_is_a_clear_error(tmp_path):
    path = tmp_path / 'needs.py'
    path.write_text('import kopf\nimport no_such_module_for_kopf\n')
    result = run_cli('run', '-A', str(path))
    assert result.returncode == 1
    assert "kopf: cannot load the handlers: ModuleNotFoundError: No module named 'no_such_module_for_kopf'" in result.stderr
    result = run_cli('run', '-A', '-m', 'no_such_module_for_kopf')
    assert result.returncode == 1
    assert "No module named 'no_such_module_for_kopf'" in result.stderr


@pytest.mark.parametrize('args, message', [
    (['run', '-A', '-n', 'x', 'f.py'], 'either --namespace or --all-namespaces'),
    ([], 'a command is required'),
    (['run', '-A'], 'no files or modules'),
    (['freeze'], 'kopf freeze: error: the following arguments are required: -P/--peering, -t/--lifetime'),
    (['resume', '-A'], 'kopf resume: error: the following arguments are required: -P/--peering'),
    (['freeze', '-P', 'x', '-t', '9', '-A', '-n', 'y'], 'either --namespace or --all-namespaces'),
    (['freeze', '-P', 'x', '-t', 'long'], "argument -t/--lifetime: invalid int value: 'long'"),
    (['run', '--log-format', 'xml', 'f.py'], 'invalid choice'),
])
def test_usage_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exc_info:
        cli.main(args)
    assert exc_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_console_script_is_installed():
    result = run_cli('--version')
    assert result.returncode == 0 and 'operon-kopf' in result.stdout


def test_the_files_folder_is_importable_and_sigterm_stops_everything(tmp_path, fakecore):
    (tmp_path / 'helper_for_kopf.py').write_text('GREETING = "HELLO FROM A HELPER"\n')
    path = tmp_path / 'operator.py'
    path.write_text(OPERATOR.replace('logger.info("STARTUP RAN")',
                                     'import helper_for_kopf; logger.info(helper_for_kopf.GREETING)'))
    done = fakecore / 'done'
    process = subprocess.Popen([str(KOPF_SCRIPT), 'run', '-A', '--verbose', '--log-format', 'plain', str(path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd='/',
                               env=dict(os.environ, FAKECORE_DONE=str(done)))
    deadline = time.monotonic() + 20
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert 'HELLO FROM A HELPER' in stderr
    assert 'Signal SIGTERM is received. Operator is stopping.' in stderr
    assert stderr.index('Stopped.') < stderr.index('CLEANUP RAN')
    assert '[default/kopf-example-1] And here we are!' in stderr


HANGING = """
import time
import kopf

@kopf.on.startup()
def configure(settings, **_):
    settings.process.ultimate_exiting_timeout = 1.5

@kopf.on.create('kopfexamples', id='create_fn')
def create_fn(**_):
    open(STARTED, 'w').close()
    time.sleep(3600)
"""


def test_a_hung_sync_handler_is_cut_by_the_ultimate_exiting_timeout(tmp_path, fakecore):
    # A thread cannot be cancelled: as in Kopf, the process SIGKILLs itself after the timeout.
    started = tmp_path / 'started'
    path = tmp_path / 'operator.py'
    path.write_text(f'STARTED = {str(started)!r}\n' + HANGING)
    process = subprocess.Popen([str(KOPF_SCRIPT), 'run', '-A', '--log-format', 'plain', str(path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd='/')
    deadline = time.monotonic() + 20
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), "the handler was not called"
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL, stderr
    assert 'Signal SIGTERM is received. Operator is stopping.' in stderr


def test_the_ultimate_termination_is_disarmed_when_run_returns(monkeypatch):
    # Kopf's timer dies with its loop: a program that goes on after kopf.run() is not killed.
    running._ultimate_termination(3600)
    timer = running._ULTIMATE_TIMERS[-1]
    monkeypatch.setattr(running.asyncio, 'run', lambda coro: coro.close())
    running.run()
    timer.join(timeout=5)
    assert not timer.is_alive() and not running._ULTIMATE_TIMERS


def test_core_argv_follows_the_settings(settings):
    settings.persistence.finalizer = 'example.com/fin'
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix='example.com')
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix='example.com')
    settings.execution.default_backoff = 2.5
    settings.queueing.worker_limit = 7
    argv = running.core_argv(binary='operon', address='127.0.0.1:1', settings=settings,
                             clusterwide=False, namespaces=['a'], identity='me', http='127.0.0.1:2')
    assert argv == ['operon', '--log-format', 'json', 'run', '--handler', 'http://127.0.0.1:1', '-n', 'a',
                    '--http', '127.0.0.1:2',
                    '--peering', 'default', '--priority', '0', '--peering-lifetime', '60', '--identity', 'me',
                    '--prefix', 'example.com',
                    '--progress-storage', '{"annotations":{"prefix":"example.com","verbose":false,'
                                          '"touch_key":"touch-dummy","v1":true}}',
                    '--diffbase-storage', '{"annotations":{"prefix":"example.com",'
                                          '"key":"last-handled-configuration","v1":true,"ignored_fields":[]}}',
                    '--finalizer', 'example.com/fin',
                    '--default-backoff', '2.5', '--consistency-timeout', '5.0', '--workers', '7']


def test_namespace_patterns_go_to_the_core(settings):
    argv = running.core_argv(binary='operon', address='127.0.0.1:1', settings=settings,
                             clusterwide=False, namespaces=['app-*', '!kube-*,x'], identity='me',
                             http='127.0.0.1:2')
    assert argv[6:10] == ['-n', 'app-*', '-n', '!kube-*,x']


def test_namespace_regular_expressions_go_to_the_core_with_their_flags(settings):
    import re
    argv = running.core_argv(binary='operon', address='127.0.0.1:1', settings=settings,
                             clusterwide=False, namespaces=['a', re.compile(r'app-\d+'), re.compile('x', re.I)],
                             identity='me', http='127.0.0.1:2')
    assert argv[6:12] == ['-n', 'a', '--namespace-regex', r'app-\d+', '--namespace-regex', '(?i)x']


def test_settings_that_operon_refuses_stop_kopf_run_after_the_startup_handlers(tmp_path, registry):
    path = tmp_path / 'operator.py'
    path.write_text(OPERATOR.replace('logger.info("STARTUP RAN")', textwrap.dedent('''\
        logger.info("STARTUP RAN")
            settings.watching.reconnect_backoff = 1
            settings.networking.trust_env = True
            settings.watching.server_timeout = 600''')).replace('def startup_fn(logger,', 'def startup_fn(settings, logger,'))
    with KopfRunner(['run', '-A', str(path)], registry=registry, reraise=False, timeout=30) as runner:
        pass
    assert runner.exit_code == 1
    assert isinstance(runner.exception, running.OperatorError)
    assert runner.output.index('STARTUP RAN') < runner.output.index("Kopf's settings ask for what Operon does not do")
    assert ("settings.networking.trust_env=True is not supported on Operon: the core makes the API "
            "requests with its own client") in runner.output
    assert "settings.watching.reconnect_backoff=1 is not supported on Operon: the core does its own watching" in runner.output
    assert "settings.watching.server_timeout=600 has no effect on Operon" in runner.output  # only warned


def test_the_inactivity_timeout_is_the_cores_watch_silence_timeout(settings):
    settings.peering.clusterwide = True  # as kopf.run(clusterwide=True) sets it

    def argv() -> list[str]:
        return running.core_argv(binary='operon', address='127.0.0.1:1', settings=settings,
                                 clusterwide=True, namespaces=[], identity='me', http='127.0.0.1:2')
    assert '--watch-silence-timeout' not in argv()  # Kopf's default: the core's own
    settings.watching.inactivity_timeout = 120
    assert argv()[-2:] == ['--watch-silence-timeout', '120.0']
