"""
Kopf's peering on Operon: what ``kopf run``/``kopf.run()`` give the core, and ``kopf freeze``/``kopf resume``.

The core's options are checked on the command line the SDK starts the core with (captured where
the process would start: every step from the CLI's parsing, Kopf's mapping into the settings, the
startup handlers, to :func:`running.peering_options` runs as it does for real). Each is compared
with what Kopf 1.45.2 decides from the same options (``kopf/_core/reactor/running.py``,
``orchestration.py``, ``peering.py``). ``kopf freeze``/``kopf resume`` are checked for what they
are asked to do (the CLI), for the patch (the record's format), and on the real plane (marker
``e2e``) for what they write into the peering objects, against what real Kopf writes.
"""
import datetime
import getpass
import json
import pathlib
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import kopf
import realkopf
from kopf import cli
from kopf._cogs import kubeapi, settings as settings_
from kopf._core import peering, registry as registries
from kopf._core.reactor import running
from kopf._transport import core as corep

OPERATOR = '''
import kopf

@kopf.on.create('kopfexamples')
def create_fn(**_):
    pass
'''

ID = 'pod-1'  # $POD_ID: Kopf's identity when set
DEFAULT = ['--peering', 'default', '--priority', '0', '--peering-lifetime', '60', '--identity', ID]


class Captured(Exception):
    """ Where the core would start: its command line was captured. """


@pytest.fixture()
def started(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """ The command lines of the cores the SDK starts (none starts: the start fails right there). """
    argvs: list[list[str]] = []

    async def start(self: corep.CoreProcess) -> None:
        argvs.append(list(self.argv))
        raise OSError("captured by the test")

    monkeypatch.setattr(corep.CoreProcess, 'start', start)
    monkeypatch.setenv('OPERON_BIN', '/bin/true')
    monkeypatch.setenv('POD_ID', ID)
    monkeypatch.delenv('KOPF_RUN_PEERING', raising=False)
    monkeypatch.delenv('KOPF_RUN_NAMESPACE', raising=False)
    return argvs


def peering_part(argv: list[str]) -> list[str]:
    """ The core's peering options: from after ``--http ADDR`` to ``--prefix``. """
    return argv[argv.index('--http') + 2:argv.index('--prefix')]


def kopf_run(tmp_path: pathlib.Path, started: list[list[str]], *args: str, operator: str = OPERATOR) -> list[str]:
    path = tmp_path / f'operator_{uuid.uuid4().hex[:8]}.py'
    path.write_text(operator)
    with pytest.raises(SystemExit) as exc_info:
        cli.main(['run', *args, str(path)])
    assert exc_info.value.code == 1  # the start that the test cut short
    assert len(started) == 1, "the core was not started"
    return started[0]


# -- kopf run: Kopf's options → the core's ----------------------------------------------------------

@pytest.mark.parametrize('args, env, expected', [
    # Kopf: no options → auto-detection of the peering "default" (not mandatory), priority 0.
    ([], {}, DEFAULT),
    (['--standalone'], {}, ['--standalone']),
    # --peering NAME: settings.peering.name = NAME, mandatory = True.
    (['--peering', 'team'], {},
     ['--peering', 'team', '--peering-mandatory', '--priority', '0', '--peering-lifetime', '60', '--identity', ID]),
    (['-P', 'team', '-p', '100'], {},
     ['--peering', 'team', '--peering-mandatory', '--priority', '100', '--peering-lifetime', '60', '--identity', ID]),
    ([], {'KOPF_RUN_PEERING': 'team'},
     ['--peering', 'team', '--peering-mandatory', '--priority', '0', '--peering-lifetime', '60', '--identity', ID]),
    # --priority alone: the auto-detected "default", with that priority.
    (['--priority', '200'], {},
     ['--peering', 'default', '--priority', '200', '--peering-lifetime', '60', '--identity', ID]),
    (['--priority', '-5'], {},
     ['--peering', 'default', '--priority', '-5', '--peering-lifetime', '60', '--identity', ID]),
    # --dev: priority 666, whatever --priority says.
    (['--dev'], {}, ['--peering', 'default', '--priority', '666', '--peering-lifetime', '60', '--identity', ID]),
    (['--dev', '-p', '5'], {}, ['--peering', 'default', '--priority', '666', '--peering-lifetime', '60', '--identity', ID]),
    (['--dev', '--peering', 'x'], {},
     ['--peering', 'x', '--peering-mandatory', '--priority', '666', '--peering-lifetime', '60', '--identity', ID]),
    # --standalone wins over a priority (Kopf: no peering at all).
    (['--standalone', '--priority', '100'], {}, ['--standalone']),
    (['--standalone', '--dev'], {}, ['--standalone']),
])
@pytest.mark.parametrize('scope', [['-A'], ['-n', 'ns1']])
def test_kopf_run_gives_the_core_kopfs_peering(tmp_path, registry, started, monkeypatch, args, env, expected, scope):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    argv = kopf_run(tmp_path, started, *scope, *args)
    assert peering_part(argv) == expected
    assert argv[6:6 + len(scope)] == scope  # the peering's scope is the operator's


def test_the_identity_is_kopfs(tmp_path, registry, started, monkeypatch):
    monkeypatch.delenv('POD_ID')
    argv = kopf_run(tmp_path, started, '-A')
    identity = argv[argv.index('--identity') + 1]
    user, host = getpass.getuser(), peering.descriptive_hostname()
    assert re.fullmatch(rf'{re.escape(user)}@{re.escape(host)}/\d{{14}}/[a-z0-9]{{3}}', identity), identity
    stamp = datetime.datetime.strptime(identity.split('/')[1], '%Y%m%d%H%M%S').replace(tzinfo=datetime.timezone.utc)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - stamp).total_seconds()) < 60
    # Kopf's own function, run by Kopf, gives the same shape on this machine (its user@host part).
    try:
        python = realkopf.kopf_venv() / 'python'
    except realkopf.KopfUnavailable as e:
        pytest.skip(str(e))
    script = ("import os; os.environ.pop('POD_ID', None); from kopf._core.engines import peering; "
              "print(peering.detect_own_id(manual=True), peering.detect_own_id(manual=False))")
    manual, automatic = subprocess.run([str(python), '-c', script], capture_output=True, text=True,
                                       check=True, timeout=60).stdout.split()
    assert manual == peering.detect_own_id(manual=True) == f'{user}@{host}'
    assert automatic.split('/')[0] == identity.split('/')[0]


def test_pod_id_is_the_identity_as_in_kopf(monkeypatch):
    monkeypatch.setenv('POD_ID', 'my-pod-abc')
    assert peering.detect_own_id(manual=False) == 'my-pod-abc'
    assert peering.detect_own_id(manual=True) == 'my-pod-abc'


# -- kopf.run(): Kopf's arguments → the core's ------------------------------------------------------

@pytest.mark.parametrize('kwargs, expected', [
    ({}, DEFAULT),
    ({'standalone': True}, ['--standalone']),
    ({'standalone': False}, DEFAULT),
    ({'peering_name': 'team'},
     ['--peering', 'team', '--peering-mandatory', '--priority', '0', '--peering-lifetime', '60', '--identity', ID]),
    ({'priority': 7}, ['--peering', 'default', '--priority', '7', '--peering-lifetime', '60', '--identity', ID]),
    ({'identity': 'me@there'},
     ['--peering', 'default', '--priority', '0', '--peering-lifetime', '60', '--identity', 'me@there']),
    ({'standalone': True, 'priority': 7, 'identity': 'x'}, ['--standalone']),
])
def test_kopf_run_maps_its_arguments_as_kopf(registry, started, kwargs, expected):
    with pytest.raises(running.OperatorError, match='Cannot start the Operon core'):
        kopf.run(registry=registry, clusterwide=True, **kwargs)
    assert peering_part(started[0]) == expected


def test_the_arguments_overwrite_the_settings_as_in_kopf(registry, started):
    # Kopf maps its arguments into the settings given (clusterwide always: from the operator's scope).
    settings = kopf.OperatorSettings()
    settings.peering.name = 'from-settings'
    settings.peering.priority = 3
    settings.peering.clusterwide = True
    with pytest.raises(running.OperatorError, match='Cannot start the Operon core'):
        kopf.run(registry=registry, settings=settings, namespaces=['ns1'], peering_name='from-args')
    assert peering_part(started[0]) == ['--peering', 'from-args', '--peering-mandatory', '--priority', '3',
                                        '--peering-lifetime', '60', '--identity', ID]
    assert settings.peering.clusterwide is False and settings.peering.mandatory is True


# -- settings.peering, as the startup handlers leave it → the core's options --------------------------

def startup(code: str) -> str:
    body = '\n'.join(f'    {line}' for line in code.splitlines())
    return OPERATOR + f'\n@kopf.on.startup()\ndef configure(settings, **_):\n{body}\n'


@pytest.mark.parametrize('code, expected', [
    ("settings.peering.name = 'other'",
     ['--peering', 'other', '--priority', '0', '--peering-lifetime', '60', '--identity', ID]),
    ("settings.peering.mandatory = True",
     ['--peering', 'default', '--peering-mandatory', '--priority', '0', '--peering-lifetime', '60', '--identity', ID]),
    ("settings.peering.priority = 150",
     ['--peering', 'default', '--priority', '150', '--peering-lifetime', '60', '--identity', ID]),
    ("settings.peering.lifetime = 17",
     ['--peering', 'default', '--priority', '0', '--peering-lifetime', '17', '--identity', ID]),
    ("settings.peering.stealth = True",
     ['--peering', 'default', '--priority', '0', '--peering-lifetime', '60', '--peering-stealth', '--identity', ID]),
    ("settings.peering.standalone = True", ['--standalone']),
    # As in Kopf, a startup handler has the last word over the options.
    ("settings.peering.standalone = False\nsettings.peering.priority = 1",
     ['--peering', 'default', '--priority', '1', '--peering-lifetime', '60', '--identity', ID]),
    # In standalone mode, Kopf ignores the peering's scope: so does the core.
    ("settings.peering.standalone = True\nsettings.peering.clusterwide = False", ['--standalone']),
    ("settings.peering.name = 'a'\nsettings.peering.mandatory = True\nsettings.peering.priority = 9\n"
     "settings.peering.lifetime = 30\nsettings.peering.stealth = True",
     ['--peering', 'a', '--peering-mandatory', '--priority', '9', '--peering-lifetime', '30', '--peering-stealth',
      '--identity', ID]),
])
def test_the_startup_handlers_settings_reach_the_core(tmp_path, registry, started, code, expected):
    argv = kopf_run(tmp_path, started, '-A', operator=startup(code))
    assert peering_part(argv) == expected


def test_a_startup_handler_can_end_standalone_mode(tmp_path, registry, started):
    argv = kopf_run(tmp_path, started, '-A', '--standalone', operator=startup("settings.peering.standalone = False"))
    assert peering_part(argv) == DEFAULT


@pytest.mark.parametrize('args, code, words', [
    (['-n', 'ns1'], "settings.peering.clusterwide = True",
     "settings.peering.clusterwide=True (settings.peering.namespaced=False) is not supported on Operon for a "
     "namespaced (-n) operator: the core's peering follows the operator's scope"),
    (['-A'], "settings.peering.namespaced = True",
     "settings.peering.clusterwide=False (settings.peering.namespaced=True) is not supported on Operon for a "
     "cluster-wide (-A) operator"),
    (['-A', '--standalone', '--peering', 'x'], "pass",
     "settings.peering.standalone=True with settings.peering.mandatory=True (e.g. `kopf run --standalone "
     "--peering NAME`) is not supported on Operon: Kopf 1.45.2 stays paused for ever in it"),
    (['-A', '--standalone'], "settings.peering.mandatory = True", "settings.peering.standalone=True with"),
    (['-A'], "settings.peering.priority = 'high'",
     "settings.peering.priority='high' is not supported on Operon: the core needs an integer."),
    (['-A'], "settings.peering.priority = 1.5", "settings.peering.priority=1.5 is not supported"),
    (['-A'], "settings.peering.lifetime = 0",
     "settings.peering.lifetime=0 is not supported on Operon: the core needs an integer of at least 1."),
    (['-A'], "settings.peering.name = ''", "settings.peering.name='' is not supported on Operon"),
])
def test_what_the_core_cannot_do_stops_the_start_naming_the_setting(tmp_path, registry, started, capsys,
                                                                    args, code, words):
    path = tmp_path / 'operator.py'
    path.write_text(startup(code))
    with pytest.raises(SystemExit) as exc_info:
        cli.main(['run', *args, str(path)])
    assert exc_info.value.code == 1
    assert words in capsys.readouterr().err
    assert not started  # refused before the core


def test_namespace_patterns_run_standalone_unless_a_peering_is_asked_for(tmp_path, registry, started, caplog):
    # Kopf peers in every namespace the patterns match; the core's peering needs names (or -A):
    # Kopf's auto-detected peering becomes standalone, said in a warning.
    argv = kopf_run(tmp_path, started, '-n', 'app-*', '-n', 'ns1')
    assert peering_part(argv) == ['--standalone']
    assert ("Kopf's auto-detected peering ('default') is not done with the namespace patterns ['app-*'] on Operon"
            in caplog.text)
    caplog.clear()
    started.clear()
    argv = kopf_run(tmp_path, started, '-n', 'app-*', '--standalone')
    assert peering_part(argv) == ['--standalone'] and 'auto-detected' not in caplog.text


@pytest.mark.parametrize('args, words', [
    (['-n', 'app-*', '--peering', 'team'],
     "settings.peering.name='team', settings.peering.mandatory=True with the namespace patterns ['app-*'] is not "
     "supported on Operon: the core's peering needs the namespaces by name (-n NS) or -A"),
    (['-n', '!kube-*', '--dev'], "settings.peering.priority=666 with the namespace patterns ['!kube-*']"),
])
def test_a_peering_asked_for_with_namespace_patterns_is_refused(tmp_path, registry, started, capsys, args, words):
    path = tmp_path / 'operator.py'
    path.write_text(OPERATOR)
    with pytest.raises(SystemExit) as exc_info:
        cli.main(['run', *args, str(path)])
    assert exc_info.value.code == 1
    assert words in capsys.readouterr().err
    assert not started


def test_a_regular_expression_is_a_pattern_too(registry, started):
    with pytest.raises(running.OperatorError, match=r"settings\.peering\.priority=5 with the namespace patterns "
                                                    r"\['app-\\\\d\+'\]"):
        kopf.run(registry=registry, namespaces=[re.compile(r'app-\d+')], priority=5)
    assert not started


def test_peering_options_alone(settings):
    settings.peering.clusterwide = True
    assert running.peering_options(settings, clusterwide=True, identity='i') == [
        '--peering', 'default', '--priority', '0', '--peering-lifetime', '60', '--identity', 'i']
    with pytest.raises(running.OperatorError, match=r'settings\.peering\.clusterwide=True'):
        running.peering_options(settings, clusterwide=False, identity='i')
    settings.peering.standalone = True
    assert running.peering_options(settings, clusterwide=False, identity='i') == ['--standalone']


def test_kopf_serve_warns_that_the_peering_is_the_cores():
    settings = kopf.OperatorSettings()
    settings.peering.name = 'team'
    settings.peering.priority = 100
    assert settings_.audit(settings).warnings == [] and settings_.audit(settings).errors == []
    assert settings_.audit(settings, with_core=False).warnings == [
        "settings.peering.name='team' is the core's option --peering on Operon; give it to the core that calls "
        "this service.",
        "settings.peering.priority=100 is the core's option --priority on Operon; give it to the core that calls "
        "this service."]


# -- kopf freeze / kopf resume: the command line ------------------------------------------------------

@pytest.fixture()
def touched(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """ What ``kopf freeze``/``kopf resume`` ask :func:`running.touch_peering` for (nothing is patched). """
    calls: list[dict[str, Any]] = []

    async def touch_peering(**kwargs: Any) -> int:
        calls.append(kwargs)
        return 1

    monkeypatch.setattr(running, 'touch_peering', touch_peering)
    monkeypatch.setenv('POD_ID', ID)
    for name in ('KOPF_FREEZE_PEERING', 'KOPF_RESUME_PEERING'):
        monkeypatch.delenv(name, raising=False)
    return calls


@pytest.mark.parametrize('args, env, expected', [
    # Kopf's freeze: priority 100 by default, --dev 666, the identity --id or Kopf's manual one.
    (['freeze', '-P', 'x', '-t', '60', '-A'], {},
     dict(name='x', identity=ID, priority=100, lifetime=60, clusterwide=True, namespaces=[])),
    (['freeze', '--peering', 'x', '--lifetime', '60', '--all-namespaces', '--id', 'me', '--priority', '5'], {},
     dict(name='x', identity='me', priority=5, lifetime=60, clusterwide=True, namespaces=[])),
    (['freeze', '-P', 'x', '-t', '9', '-n', 'a', '-n', 'b-*', '--dev', '-p', '5', '-m', 'why'], {},
     dict(name='x', identity=ID, priority=666, lifetime=9, clusterwide=False, namespaces=['a', 'b-*'])),
    (['freeze', '-t', '9', '-n', 'a', '-i', 'me'], {'KOPF_FREEZE_PEERING': 'from-env'},
     dict(name='from-env', identity='me', priority=100, lifetime=9, clusterwide=False, namespaces=['a'])),
    # Kopf's resume: the record with lifetime 0 (removed).
    (['resume', '-P', 'x', '-A'], {},
     dict(name='x', identity=ID, priority=0, lifetime=0, clusterwide=True, namespaces=[])),
    (['resume', '-n', 'a', '--id', 'me', '-v'], {'KOPF_RESUME_PEERING': 'from-env'},
     dict(name='from-env', identity='me', priority=0, lifetime=0, clusterwide=False, namespaces=['a'])),
])
def test_freeze_and_resume_are_asked_as_kopfs(touched, monkeypatch, args, env, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cli.main(args)  # returns: done
    assert len(touched) == 1
    assert {key: touched[0][key] for key in expected} == expected


def test_freeze_without_a_scope_is_cluster_wide_with_kopfs_warning(touched):
    with pytest.warns(FutureWarning, match='Absence of either namespaces or cluster-wide flag'):
        cli.main(['freeze', '-P', 'x', '-t', '5'])
    assert touched[0]['clusterwide'] is True


def test_the_manual_identity_is_user_at_host(touched, monkeypatch):
    monkeypatch.delenv('POD_ID')
    cli.main(['resume', '-P', 'x', '-A'])
    assert touched[0]['identity'] == f'{getpass.getuser()}@{peering.descriptive_hostname()}'


def test_the_records_are_kopfs():
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.timezone.utc)
    assert peering.touch_patch(identity='me', priority=100, lifetime=60, now=now) == {
        'status': {'me': {'priority': 100, 'lifetime': 60, 'lastseen': '2026-01-02T03:04:05.678901+00:00'}}}
    assert peering.touch_patch(identity='me', priority=100, lifetime=0) == {'status': {'me': None}}
    assert peering.touch_patch(identity='me', priority=1, lifetime=-5) == {'status': {'me': None}}
    lastseen = peering.peer_record(priority=0, lifetime=1)['lastseen']  # type: ignore[index]
    assert datetime.datetime.fromisoformat(lastseen).utcoffset() == datetime.timedelta(0)


@pytest.mark.parametrize('name, pattern, matches', [
    ('myapp-test', 'myapp-*, !*-pr-*, *pr-123', True),
    ('myapp-pr-123', 'myapp-*, !*-pr-*, *pr-123', True),
    ('myapp-pr-456', 'myapp-*, !*-pr-*, *pr-123', False),
    ('otherapp-pr-123', 'myapp-*, !*-pr-*, *pr-123', False),
    ('otherapp-pr-123', '!*-pr-*, *pr-123', True),
    ('kube-system', '!kube-*', False),
    ('default', '!kube-*', True),
    ('exact', 'exact', True),
    ('exactly', 'exact', False),
    ('app-12', re.compile(r'app-\d+'), True),
])
def test_namespace_patterns_are_kopfs(name, pattern, matches):
    from kopf._cogs import refs
    assert refs.match_namespace(name, pattern) is matches
    assert refs.select_specific_namespaces(['a', 'b-*', '!c', 'd,e', re.compile('f')]) == {'a'}


class FakeAPI:
    """ An API server's answers by path (a dict: the JSON; an int: that error status); the patches sent. """

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.patches: list[tuple[str, Any]] = []

    def get(self, path: str) -> Any:
        answer = self.answers.get(path, 404)
        if isinstance(answer, int):
            raise kubeapi.APIError(f"GET {path}: {answer}", status=answer)
        return answer

    def merge_patch(self, path: str, patch: Any) -> Any:
        answer = self.answers.get(path, 404)
        if isinstance(answer, int):
            raise kubeapi.APIError(f"PATCH {path}: {answer}", status=answer)
        self.patches.append((path, patch))
        return {}


def group(plural: str, *, namespaced: bool, status: bool = False) -> dict[str, Any]:
    resources = [{'name': plural, 'namespaced': namespaced}]
    return {'resources': resources + ([{'name': f'{plural}/status', 'namespaced': namespaced}] if status else [])}


def touch(api: FakeAPI, **kwargs: Any) -> int:
    options = dict(name='p', identity='me', priority=5, lifetime=10, clusterwide=False, namespaces=['ns1'])
    return peering.touch_command(api, **{**options, **kwargs})  # type: ignore[arg-type]


def test_touch_uses_both_groups_and_a_status_subresource_if_any():
    api = FakeAPI({
        '/apis/kopf.dev/v1': group('clusterkopfpeerings', namespaced=False),
        '/apis/zalando.org/v1': group('clusterkopfpeerings', namespaced=False, status=True),
        '/apis/kopf.dev/v1/clusterkopfpeerings/p': {},
        '/apis/zalando.org/v1/clusterkopfpeerings/p/status': {},
    })
    assert touch(api, clusterwide=True) == 2
    assert [path for path, _ in api.patches] == ['/apis/kopf.dev/v1/clusterkopfpeerings/p',
                                                 '/apis/zalando.org/v1/clusterkopfpeerings/p/status']
    assert all(set(patch['status']['me']) == {'priority', 'lifetime', 'lastseen'} for _, patch in api.patches)


def test_touch_in_the_namespaces_that_the_patterns_select():
    namespaces = {'items': [
        {'metadata': {'name': 'app-1'}},
        {'metadata': {'name': 'app-2', 'deletionTimestamp': 'x'}, 'status': {'conditions': [{}]}},  # as good as gone
        {'metadata': {'name': 'app-3'}},
        {'metadata': {'name': 'other'}},
    ]}
    api = FakeAPI({'/apis/kopf.dev/v1': group('kopfpeerings', namespaced=True), '/api/v1/namespaces': namespaces,
                   '/apis/kopf.dev/v1/namespaces/app-1/kopfpeerings/p': {}})
    assert touch(api, namespaces=['app-*, !*-3'], lifetime=0) == 1  # app-3 excluded; app-1 found
    assert api.patches == [('/apis/kopf.dev/v1/namespaces/app-1/kopfpeerings/p', {'status': {'me': None}})]


def test_without_the_right_to_list_namespaces_the_plain_names_are_used(caplog):
    api = FakeAPI({'/apis/kopf.dev/v1': group('kopfpeerings', namespaced=True), '/api/v1/namespaces': 403,
                   '/apis/kopf.dev/v1/namespaces/a/kopfpeerings/p': {}})
    assert touch(api, namespaces=['a', 'b-*']) == 1
    assert "Not enough permissions to list namespaces. Falling back to a list of namespaces which are assumed " \
           "to exist: {'a'}" in caplog.text


def test_without_the_crds_freeze_fails_as_kopf():
    api = FakeAPI({'/apis/kopf.dev/v1': group('kopfexamples', namespaced=True)})
    with pytest.raises(peering.PeeringError, match=r"Cannot find the peering resource for "
                                                   r"kopfpeerings\.v1\.kopf\.dev, kopfpeerings\.v1\.zalando\.org"):
        touch(api)


def test_other_api_errors_stop_the_command():
    api = FakeAPI({'/apis/kopf.dev/v1': group('kopfpeerings', namespaced=True), '/api/v1/namespaces': {'items': [
        {'metadata': {'name': 'ns1'}}]}, '/apis/kopf.dev/v1/namespaces/ns1/kopfpeerings/p': 403})
    with pytest.raises(kubeapi.APIError) as exc_info:
        touch(api)
    assert exc_info.value.status == 403


# -- kopf freeze / kopf resume on the real plane --------------------------------------------------------

def status_of(kubectl: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    where = ['-n', namespace] if namespace else []
    result = subprocess.run([kubectl, 'get', kind, name, *where, '-o', 'json'],
                            check=True, capture_output=True, text=True, timeout=30)
    return dict(json.loads(result.stdout).get('status') or {})


def apply(kubectl: str, *objects: dict[str, Any]) -> None:
    manifest = json.dumps({'apiVersion': 'v1', 'kind': 'List', 'items': list(objects)})
    subprocess.run([kubectl, 'apply', '-f', '-'], input=manifest, text=True, check=True,
                   capture_output=True, timeout=30)


def ours(*args: str) -> subprocess.CompletedProcess[str]:
    """ This package's ``kopf`` command, as a user runs it. """
    return subprocess.run([sys.executable, '-m', 'kopf', *args], capture_output=True, text=True, timeout=120)


def kopfs(*args: str) -> subprocess.CompletedProcess[str]:
    """ Kopf 1.45.2's ``kopf`` command. """
    try:
        binary = realkopf.kopf_venv() / 'kopf'
    except realkopf.KopfUnavailable as e:
        pytest.skip(str(e))
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120)


LASTSEEN = re.compile(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00')


def fresh(record: dict[str, Any]) -> dict[str, Any]:
    """ The record with its ``lastseen`` checked (Kopf's format, within the last minute) and left out. """
    lastseen = record['lastseen']
    assert LASTSEEN.fullmatch(lastseen), record
    age = datetime.datetime.now(datetime.timezone.utc) - datetime.datetime.fromisoformat(lastseen)
    assert datetime.timedelta(seconds=-5) < age < datetime.timedelta(seconds=60), record
    return {key: value for key, value in record.items() if key != 'lastseen'}


@pytest.fixture()
def peering_ns(namespace: str, peering_crds: str) -> Iterator[tuple[str, str]]:
    """ A namespace of the test's with a KopfPeering ``sdk-test`` in it (gone with the namespace). """
    apply(peering_crds, {'apiVersion': 'kopf.dev/v1', 'kind': 'KopfPeering',
                         'metadata': {'name': 'sdk-test', 'namespace': namespace}})
    yield peering_crds, namespace


@pytest.mark.e2e
def test_freeze_and_resume_write_kopfs_records_in_a_namespace(peering_ns):
    kubectl, namespace = peering_ns
    result = ours('freeze', '-P', 'sdk-test', '-n', namespace, '-t', '100', '-p', '150', '--id', 'operon-freezer')
    assert result.returncode == 0, result.stderr
    result = kopfs('freeze', '-P', 'sdk-test', '-n', namespace, '-t', '100', '-p', '150', '--id', 'kopf-freezer')
    assert result.returncode == 0, result.stderr
    status = status_of(kubectl, 'kopfpeering', 'sdk-test', namespace)
    assert set(status) == {'operon-freezer', 'kopf-freezer'}
    assert fresh(status['operon-freezer']) == fresh(status['kopf-freezer']) == {'priority': 150, 'lifetime': 100}

    # --dev, and Kopf's defaults (priority 100); the other records are left alone.
    assert ours('freeze', '-P', 'sdk-test', '-n', namespace, '-t', '7', '--dev', '--id', 'dev').returncode == 0
    assert ours('freeze', '-P', 'sdk-test', '-n', namespace, '-t', '8', '--id', 'plain').returncode == 0
    status = status_of(kubectl, 'kopfpeering', 'sdk-test', namespace)
    assert fresh(status['dev']) == {'priority': 666, 'lifetime': 7}
    assert fresh(status['plain']) == {'priority': 100, 'lifetime': 8}

    # resume removes the record of its identity only: ours removes Kopf's, and the other way round.
    result = ours('resume', '-P', 'sdk-test', '-n', namespace, '--id', 'kopf-freezer')
    assert result.returncode == 0, result.stderr
    assert kopfs('resume', '-P', 'sdk-test', '-n', namespace, '--id', 'operon-freezer').returncode == 0
    assert set(status_of(kubectl, 'kopfpeering', 'sdk-test', namespace)) == {'dev', 'plain'}


@pytest.mark.e2e
def test_freeze_by_pattern_and_what_is_not_there(peering_ns):
    kubectl, namespace = peering_ns
    prefix = namespace.rsplit('-', 1)[0]
    result = ours('freeze', '-P', 'sdk-test', '-n', f'{prefix}-*, !kube-*', '-t', '30', '--id', 'by-pattern')
    assert result.returncode == 0, result.stderr
    assert fresh(status_of(kubectl, 'kopfpeering', 'sdk-test', namespace)['by-pattern']) == {
        'priority': 100, 'lifetime': 30}
    # No such object: nothing created; Kopf's exit code (0), and a warning (Kopf is silent).
    result = ours('freeze', '-P', 'no-such-peering', '-n', namespace, '-t', '30', '--id', 'x', '--verbose')
    assert result.returncode == 0, result.stderr
    assert f"Keep-alive in 'no-such-peering' in '{namespace}': not found." in result.stderr
    assert "No peering object 'no-such-peering' is found" in result.stderr
    missing = subprocess.run([kubectl, 'get', 'kopfpeering', 'no-such-peering', '-n', namespace],
                             capture_output=True, timeout=30)
    assert missing.returncode != 0


@pytest.mark.e2e
def test_freeze_and_resume_cluster_wide(peering_crds, plane, monkeypatch):
    kubectl, _, kubeconfig = plane
    monkeypatch.setenv('KUBECONFIG', kubeconfig)
    name = f'sdk-test-{uuid.uuid4().hex[:8]}'
    apply(kubectl, {'apiVersion': 'kopf.dev/v1', 'kind': 'ClusterKopfPeering', 'metadata': {'name': name}})
    try:
        result = ours('freeze', '-P', name, '-A', '-t', '50', '-p', '3', '--id', 'operon-c')
        assert result.returncode == 0, result.stderr
        assert kopfs('freeze', '-P', name, '-A', '-t', '50', '-p', '3', '--id', 'kopf-c').returncode == 0
        status = status_of(kubectl, 'clusterkopfpeering', name)
        assert fresh(status['operon-c']) == fresh(status['kopf-c']) == {'priority': 3, 'lifetime': 50}
        assert ours('resume', '-P', name, '-A', '--id', 'operon-c').returncode == 0
        assert set(status_of(kubectl, 'clusterkopfpeering', name)) == {'kopf-c'}
    finally:
        subprocess.run([kubectl, 'delete', 'clusterkopfpeering', name, '--ignore-not-found'],
                       capture_output=True, timeout=30)


@pytest.mark.e2e
def test_touch_peering_with_kopfs_rudimentary_login(peering_ns, monkeypatch):
    # No login handlers at all (no API client library): the kubeconfig as Kopf's fallback reads it.
    kubectl, namespace = peering_ns
    import asyncio
    touched = asyncio.run(running.touch_peering(
        name='sdk-test', identity='rudimentary', priority=1, lifetime=20, clusterwide=False,
        namespaces=[namespace], registry=registries.OperatorRegistry()))
    assert touched == 1
    assert fresh(status_of(kubectl, 'kopfpeering', 'sdk-test', namespace)['rudimentary']) == {
        'priority': 1, 'lifetime': 20}
