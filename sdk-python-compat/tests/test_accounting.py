"""
The accounting of Kopf's public API: no name of Kopf 1.45.2 is silently accepted and ignored.

Kopf's API is enumerated from Kopf's own distribution, at test time (its venv: see
:mod:`realkopf`): the public names of ``kopf``; the parameters of the decorators of ``kopf.on``
(``kopf.daemon``, ``kopf.timer``, ``kopf.index``, ``kopf.subhandler``, ``kopf.register`` too), of
the storage classes, of ``kopf.run``/``kopf.operator``/``kopf.spawn_tasks``; every field (and
public property) of ``kopf.OperatorSettings``'s sections; the commands and options of ``kopf``'s
CLI. Every one of them must be in the README's "Compatibility reference" table:

- a name the table calls ``supported`` or ``differs`` must exist here (and a setting must have
  Kopf's default);
- a name it calls ``refused`` must be refused when used, with an error that names it: the settings
  are set away from Kopf's default in a startup handler and the operator must not start; the
  functions are called with the argument; the CLI is run with the option.

Without Kopf (no venv, no network) the tests are skipped --- but fail in CI (``CI=true``).
"""
from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import os
import pathlib
import re
import subprocess
import warnings
from typing import Any, NamedTuple

import pytest

import kopf
import realkopf
from kopf import cli
from kopf._cogs import settings as settings_
from kopf._core import registry as registries
from kopf._core.reactor import running
from kopf._transport import core as corep

FUNCTIONS = ('kopf.run', 'kopf.operator', 'kopf.spawn_tasks')
README = pathlib.Path(__file__).resolve().parent.parent / 'README.md'
SECTION = '## Compatibility reference'
STATUSES = ('supported', 'differs', 'refused')

# Run by Kopf's own Python: prints Kopf's API as JSON.
ENUMERATE = r'''
import collections.abc
import dataclasses
import importlib.metadata
import inspect
import json
import warnings

import click

import kopf

names = sorted(name for name in dir(kopf) if not name.startswith('_'))  # before `kopf.cli` is imported

import kopf.cli  # noqa: E402


def parameters(fn):
    return [name for name in inspect.signature(fn).parameters if not name.startswith('_')]


def plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value, True
    if isinstance(value, (list, tuple)):
        items = [plain(item) for item in value]
        return [item for item, _ in items], all(ok for _, ok in items)
    if isinstance(value, collections.abc.Mapping) and not value:
        return {}, True
    return None, False


settings = {}


def walk(section, path):
    for field in dataclasses.fields(section):
        if field.name.startswith('_'):
            continue
        value = getattr(section, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            walk(value, f'{path}.{field.name}')
        else:
            default, ok = plain(value)
            settings[f'{path}.{field.name}'] = {'default': default, 'plain': ok, 'property': False}
    for name, attr in inspect.getmembers(type(section), lambda a: isinstance(a, property)):
        if not name.startswith('_'):
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                value = getattr(section, name)
            default, ok = (None, False) if dataclasses.is_dataclass(value) else plain(value)
            settings[f'{path}.{name}'] = {'default': default, 'plain': ok, 'property': True}


walk(kopf.OperatorSettings(), 'settings')

decorators = {}
for name, fn in inspect.getmembers(kopf.on, inspect.isfunction):
    if not name.startswith('_') and fn.__module__ == kopf.on.__name__:
        shown = f'kopf.{name}' if getattr(kopf, name, None) is fn else f'kopf.on.{name}'
        decorators[shown] = parameters(fn)

storages = {}
for name in names:
    obj = getattr(kopf, name)
    if inspect.isclass(obj) and issubclass(obj, (kopf.ProgressStorage, kopf.DiffBaseStorage)):
        storages[f'kopf.{name}'] = parameters(obj)


def cli_params(command):
    found = []
    for param in command.params:
        if isinstance(param, click.Option):
            found.append({'name': max(param.opts, key=len), 'value': not (param.is_flag or param.count)})
            found += [{'name': opt, 'value': False} for opt in param.secondary_opts]
        else:
            found.append({'name': param.name.upper(), 'value': None})
    return found


commands = {'kopf': cli_params(kopf.cli.main)}
for name, command in kopf.cli.main.commands.items():
    commands[f'kopf {name}'] = cli_params(command)

print(json.dumps({
    'version': importlib.metadata.version('kopf'),
    'names': names,
    'decorators': decorators,
    'settings': settings,
    'storages': storages,
    'functions': {f'kopf.{name}': parameters(getattr(kopf, name)) for name in ('run', 'operator', 'spawn_tasks')},
    'cli': commands,
}))
'''


# -- Kopf's API ------------------------------------------------------------------------------------

class Name(NamedTuple):
    """ One name of Kopf's API, as the table spells it, and what it is. """
    name: str
    kind: str       # 'name', 'param', 'setting', 'cli'
    owner: str      # the function/class/command of a parameter or option; the section of a setting
    detail: Any     # Kopf's default of a setting; whether a CLI option takes a value


@pytest.fixture(scope='module')
def kopf_api() -> dict[str, Any]:
    try:
        python = realkopf.kopf_venv() / 'python'
    except realkopf.KopfUnavailable as e:
        if os.environ.get('CI') == 'true':
            pytest.fail(f"The accounting needs Kopf's distribution in CI: {e}")
        pytest.skip(str(e))
    result = subprocess.run([str(python), '-c', ENUMERATE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    api: dict[str, Any] = json.loads(result.stdout)
    assert api['version'] == realkopf.KOPF_VERSION
    return api


def kopf_names(api: dict[str, Any]) -> dict[str, Name]:
    found: dict[str, Name] = {}

    def add(name: str, kind: str, owner: str = '', detail: Any = None) -> None:
        found.setdefault(name, Name(name, kind, owner, detail))

    for name in api['names']:
        add(f'kopf.{name}', 'name')
    for group in ('decorators', 'storages', 'functions'):
        for owner, params in api[group].items():
            add(owner, 'name')
            for param in params:
                add(f'{owner}({param}=)', 'param', owner)
    for name, info in api['settings'].items():
        add(name, 'setting', name.rsplit('.', 1)[0], info)
    for command, options in api['cli'].items():
        if command != 'kopf':
            add(command, 'cli', command)
        for option in options:
            add(f"{command} {option['name']}", 'cli', command, option['value'])
    return found


# -- the table -------------------------------------------------------------------------------------

class Row(NamedTuple):
    pattern: str
    status: str
    note: str
    line: int


def expand(pattern: str) -> list[str]:
    """ ``a.{b,c}(d=)`` → ``a.b(d=)``, ``a.c(d=)``; several braces give every combination. """
    match = re.search(r'\{([^{}]*)\}', pattern)
    if match is None:
        return [pattern]
    return [name for choice in match.group(1).split(',')
            for name in expand(pattern[:match.start()] + choice.strip() + pattern[match.end():])]


def read_table(text: str) -> list[Row]:
    lines = text.splitlines()
    start = lines.index(SECTION)
    rows = []
    for number, line in enumerate(lines[start + 1:], start + 2):
        if line.startswith('## '):
            break
        cells = [cell.strip() for cell in line.strip().strip('|').split('|')] if line.startswith('|') else []
        if len(cells) != 3 or set(cells[1]) <= set('-: ') or cells[1] == 'status':
            continue
        match = re.fullmatch(r'`([^`]+)`', cells[0])
        assert match, f"README.md:{number}: the first cell must be one `code` span: {cells[0]!r}"
        rows.append(Row(match.group(1), cells[1], cells[2], number))
    return rows


@pytest.fixture(scope='module')
def table() -> dict[str, Row]:
    by_name: dict[str, Row] = {}
    for row in read_table(README.read_text(encoding='utf-8')):
        assert row.status in STATUSES, f"README.md:{row.line}: unknown status {row.status!r}"
        assert row.note or row.status == 'supported', f"README.md:{row.line}: say how it differs, or why refused"
        for name in expand(row.pattern):
            other = by_name.get(name)
            assert other is None, f"{name} is in README.md twice: lines {other and other.line} and {row.line}"
            by_name[name] = row
    return by_name


def test_the_table_is_there_and_readable(table: dict[str, Row]) -> None:
    assert len(table) > 300
    assert expand('kopf.{on.create,daemon}({id,param}=)') == [
        'kopf.on.create(id=)', 'kopf.on.create(param=)', 'kopf.daemon(id=)', 'kopf.daemon(param=)']


def test_every_name_of_kopf_is_in_the_table(kopf_api: dict[str, Any], table: dict[str, Row]) -> None:
    missing = sorted(set(kopf_names(kopf_api)) - set(table))
    assert not missing, f"Kopf's names missing from README.md's {SECTION!r}: {missing}"


def test_the_table_has_only_kopfs_names(kopf_api: dict[str, Any], table: dict[str, Row]) -> None:
    unknown = sorted(set(table) - set(kopf_names(kopf_api)))
    assert not unknown, f"README.md's {SECTION!r} has names that Kopf {realkopf.KOPF_VERSION} has not: {unknown}"


# -- what we have ----------------------------------------------------------------------------------

def _resolve(dotted: str) -> Any:
    obj: Any = kopf
    for part in dotted.split('.')[1:]:
        obj = getattr(obj, part)
    return obj


def _our_cli_options() -> dict[str, set[str]]:
    parser = cli.build_parser()
    options = {'kopf': {opt for action in parser._actions for opt in action.option_strings}}
    for action in parser._actions:
        for command, sub in (getattr(action, 'choices', None) or {}).items():
            if hasattr(sub, '_actions'):
                options[f'kopf {command}'] = {opt for a in sub._actions for opt in a.option_strings} | {
                    a.dest.upper() for a in sub._actions if not a.option_strings}
    return options


# Values for parameters; a value Kopf's default is not (Kopf's defaults are all `None` here).
SAMPLES: dict[str, Any] = {
    'arg1': 'kopfexamples', 'arg2': 'kopfexamples', 'arg3': 'kopfexamples', 'group': 'kopf.dev',
    'version': 'v1', 'kind': 'KopfExample', 'plural': 'kopfexamples', 'singular': 'kopfexample',
    'shortcut': 'kex', 'category': 'all', 'id': 'an_id', 'param': 123, 'errors': kopf.ErrorsMode.PERMANENT,
    'timeout': 10, 'retries': 3, 'backoff': 2, 'labels': {'app': 'x'}, 'annotations': {'note': kopf.PRESENT},
    'when': lambda **_: True, 'field': 'spec.field', 'value': 'v', 'old': 'a', 'new': 'b', 'deleted': True,
    'optional': True, 'initial_delay': 1.5, 'cancellation_backoff': 1, 'cancellation_timeout': 2,
    'cancellation_polling': 3, 'interval': 5, 'sharp': True, 'idle': 7, 'operation': 'CREATE',
    'operations': ['CREATE'], 'subresource': 'status', 'persistent': True, 'side_effects': True,
    'ignore_failures': True, 'priority': 5, 'peering_name': 'example', 'fn': lambda **_: None,
    'registry': registries.OperatorRegistry(),
}


ACTIVITIES = ('kopf.on.startup', 'kopf.on.cleanup', 'kopf.on.login', 'kopf.on.probe')
NAMING = ('arg1', 'arg2', 'arg3', 'kind', 'plural', 'singular', 'shortcut', 'category')  # the resource


def _decorate(owner: str, param: str) -> None:
    """ Use the decorator (or ``kopf.register``) with one parameter, as an operator would. """
    kwargs: dict[str, Any] = {param: SAMPLES.get(param, object())}
    if param in ('value', 'old', 'new') or owner == 'kopf.on.field':
        kwargs.setdefault('field', 'spec.field')
    if param in ('arg2', 'arg3'):  # the group (and the version) first
        kwargs.update(arg1='kopf.dev', **({'arg2': 'v1'} if param == 'arg3' else {}))
    fn = _resolve(owner)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)  # e.g. `operation=` of the webhooks
        if owner in ('kopf.subhandler', 'kopf.register'):
            try:  # only inside a handler's call: reaching that check means the parameter is taken
                fn(**kwargs) if owner == 'kopf.subhandler' else fn(**{'fn': SAMPLES['fn'], **kwargs})
            except LookupError:
                pass
            return
        args = () if owner in ACTIVITIES or param in NAMING else ('kopfexamples',)
        kwargs.setdefault('registry', registries.OperatorRegistry())
        fn(*args, **kwargs)(SAMPLES['fn'])


def _signature_of(owner: str) -> inspect.Signature:
    """ Of a function or class; ``kopf.spawn_tasks(**kwargs)`` gives them all to ``kopf.operator``. """
    signature = inspect.signature(_resolve(owner))
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()) and owner == 'kopf.spawn_tasks':
        return inspect.signature(kopf.operator)
    return signature


def _exists(name: Name) -> str | None:
    """ ``None`` if we have the name, or else what is wrong. """
    try:
        if name.kind == 'name':
            _resolve(name.name)
        elif name.kind == 'param' and (name.owner in FUNCTIONS or inspect.isclass(_resolve(name.owner))):
            if name.name[len(name.owner) + 1:-2] not in _signature_of(name.owner).parameters:
                return "no such parameter"
        elif name.kind == 'param':
            _decorate(name.owner, name.name[len(name.owner) + 1:-2])
        elif name.kind == 'setting':
            section: Any = kopf.OperatorSettings()
            for part in name.owner.split('.')[1:]:
                section = getattr(section, part)
            attr = name.name.rsplit('.', 1)[1]
            if name.detail['property']:
                if not isinstance(getattr(type(section), attr, None), property):
                    return "no such property"
            elif attr not in {f.name for f in dataclasses.fields(section)}:
                return "no such field"
            elif name.detail['plain']:
                ours = getattr(section, attr)
                ours = list(ours) if isinstance(ours, tuple) else ours
                if ours != name.detail['default']:
                    return f"the default is {ours!r}, Kopf's is {name.detail['default']!r}"
        elif name.kind == 'cli':
            ours = _our_cli_options()
            command, _, option = name.name.partition(' ') if name.owner == 'kopf' else (
                name.owner, ' ', name.name[len(name.owner) + 1:])
            if command not in ours or (option and option not in ours[command]):
                return "no such command or option"
    except (AttributeError, TypeError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def test_supported_and_differing_names_exist_here(kopf_api: dict[str, Any], table: dict[str, Row]) -> None:
    names = kopf_names(kopf_api)
    problems = {name: problem for name, row in table.items() if name in names and row.status != 'refused'
                for problem in [_exists(names[name])] if problem is not None}
    assert not problems, problems


# -- what we refuse --------------------------------------------------------------------------------

def _other_than(default: Any) -> Any:
    """ A value that is not Kopf's default, of a kind that fits. """
    if isinstance(default, bool):
        return not default
    if default is None:
        return 7
    if isinstance(default, (int, float)):
        return default + 1
    if isinstance(default, str):
        return f'{default}-changed'
    if isinstance(default, list):
        return [7]
    if isinstance(default, dict):
        return {'v1/pods': 'app=x'}
    raise AssertionError(f"No other value for {default!r}")


def _start_with_setting(name: Name, value: Any) -> BaseException | None:
    """ Start the operator with a startup handler that sets it, as operators do; what stops it. """
    registry = registries.OperatorRegistry()
    attr = name.name.rsplit('.', 1)[1]
    path = name.owner.split('.')[1:]

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        section: Any = settings
        for part in path:
            section = getattr(section, part)
        setattr(section, attr, value)

    try:
        asyncio.run(running.operator(registry=registry, clusterwide=True, stop_flag=asyncio.Event()))
    except BaseException as e:  # noqa: B036: anything but a stop is what we look for
        return e
    return None


class Accepted(Exception):
    """ The operator got as far as running: what it was given was accepted. """


async def _accepted(*_: Any, **__: Any) -> None:
    raise Accepted()


async def _spawn_and_await(**kwargs: Any) -> None:
    await kopf.run_tasks(await kopf.spawn_tasks(**kwargs))


def _refusal(name: Name, capsys: pytest.CaptureFixture[str]) -> str:
    """ Use the name; the error that refuses it (empty if it is accepted). """
    if name.kind == 'setting':
        error = _start_with_setting(name, _other_than(name.detail['default']))
        if isinstance(error, running.OperatorError) and isinstance(error.__cause__, corep.CoreNotFoundError):
            return ''  # past the start-up checks: accepted
        return str(error) if isinstance(error, running.OperatorError) else ''
    if name.kind == 'cli':
        command, option = name.owner.split()[1:], name.name[len(name.owner):].split()
        if name.detail:  # a valid value: the refusal, not the option's type, must stop it
            option.append(CLI_VALUES.get(option[0], 'x'))
        try:
            cli.main([*command, *option, 'operator.py'])
        except SystemExit as e:
            return capsys.readouterr().err if e.code else ''
        return ''
    if name.kind == 'param':
        param = name.name[len(name.owner) + 1:-2]
        value = SAMPLES.get(param, object())
        try:
            with pytest.MonkeyPatch.context() as patch:  # an accepted one must not run an operator
                patch.setattr(running._Operator, 'run', _accepted)
                contained = dict(registry=registries.OperatorRegistry(), clusterwide=True)
                if name.owner == 'kopf.spawn_tasks':
                    asyncio.run(_spawn_and_await(**{**contained, param: value}))
                elif name.owner == 'kopf.operator':
                    asyncio.run(kopf.operator(**{**contained, param: value}))
                elif name.owner == 'kopf.run':
                    kopf.run(**{**contained, param: value})
                elif inspect.isclass(_resolve(name.owner)):
                    _resolve(name.owner)(**{param: value})
                else:
                    _decorate(name.owner, param)
        except Accepted:
            return ''
        except (NotImplementedError, TypeError, running.OperatorError) as e:
            return str(e)
        return ''
    try:
        _resolve(name.name)
    except (AttributeError, NotImplementedError) as e:
        return str(e)
    return ''


CLI_VALUES = {'--priority': '5', '--lifetime': '60'}


def _named_in(name: Name, message: str, table: dict[str, Row]) -> bool:
    if name.kind == 'param':  # `kopf.run(priority=5)`: the function and the parameter
        return name.owner in message and name.name[len(name.owner) + 1:-1] in message
    if name.kind == 'cli' and name.name != name.owner and table[name.owner].status == 'refused':
        return name.owner in message  # an option of a refused command: that command
    if name.kind == 'cli':
        return name.name.split()[-1] in message  # the option (or the command)
    return name.name in message


def test_refused_names_are_refused_naming_them(
        kopf_api: dict[str, Any], table: dict[str, Row], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('OPERON_BIN', '/nonexistent/operon')  # an accepted one must not run a real core
    names = kopf_names(kopf_api)
    refused = [names[name] for name, row in table.items() if row.status == 'refused' and name in names]
    assert refused
    accepted, unnamed = [], {}
    for name in refused:
        message = _refusal(name, capsys)
        if not message:
            accepted.append(name.name)
        elif not _named_in(name, message, table):
            unnamed[name.name] = message
    assert not accepted, f"Refused in README.md, yet accepted: {accepted}"
    assert not unnamed, f"Refused without naming what: {unnamed}"


# -- the start-up audit itself ---------------------------------------------------------------------

def test_kopfs_defaults_pass_the_audit() -> None:
    audit = settings_.audit(kopf.OperatorSettings())
    assert audit.errors == [] and audit.warnings == []


def test_every_refused_field_is_named_with_its_value_and_why() -> None:
    settings = kopf.OperatorSettings()
    settings.watching.reconnect_backoff = 30
    settings.networking.trust_env = True
    settings.peering.namespaced = False  # the core's option (-A): not the audit's to refuse
    errors = settings_.audit(settings).errors
    assert errors == [
        "settings.watching.reconnect_backoff=30 is not supported on Operon: the core does its own watching:"
        " it re-watches after a failure with growing delays of its own.",
        "settings.networking.trust_env=True is not supported on Operon: the core makes the API requests"
        " with its own client (kube-rs), configured from the kubeconfig alone.",
    ]


def test_unused_fields_are_warned_and_equal_values_are_defaults() -> None:
    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 600
    settings.queueing.error_delays = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610]  # Kopf's
    audit = settings_.audit(settings)
    assert audit.errors == []
    assert audit.warnings == ["settings.watching.server_timeout=600 has no effect on Operon: the core's watch"
                              " requests end after 290 s (server-side) and are renewed, and a silent watch"
                              " is restarted after settings.watching.inactivity_timeout."]


def test_a_core_elsewhere_must_be_told_the_cores_options() -> None:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = 'example.com/fin'
    assert settings_.audit(settings).warnings == []
    assert settings_.audit(settings, with_core=False).warnings == [
        "settings.persistence.finalizer='example.com/fin' is the core's option --finalizer on Operon;"
        " give it to the core that calls this service."]


def test_the_refused_notes_of_the_table_are_the_errors_reasons(table: dict[str, Row]) -> None:
    """ The table says why, in the words of the error (the start of the reason, at least). """
    settings = kopf.OperatorSettings()
    for part in dataclasses.fields(settings):
        for field in dataclasses.fields(getattr(settings, part.name)):
            how = settings_.declared(field)
            name = f'settings.{part.name}.{field.name}'
            if how is not None and how.support is settings_.Support.REFUSED:
                assert table[name].status == 'refused', name
                assert how.text.split(';')[0].split(':')[0] in table[name].note, name


def test_a_function_as_initial_delay_is_refused() -> None:
    registry = registries.OperatorRegistry()
    with pytest.raises(NotImplementedError, match=r"kopf\.daemon\(initial_delay=<a function>\) is not supported"):
        kopf.daemon('kopfexamples', initial_delay=lambda **_: 1.0, registry=registry)
    kopf.timer('kopfexamples', initial_delay=1.5, registry=registry)(SAMPLES['fn'])
    assert [h.initial_delay for h in registry] == [1.5]


def test_the_resource_by_kopfs_parameter_names() -> None:
    registry = registries.OperatorRegistry()
    kopf.on.create(arg1='kopf.dev', arg2='kopfexamples', registry=registry)(SAMPLES['fn'])
    kopf.on.create('kopf.dev', arg2='v1', arg3='kopfexamples', registry=registry)(SAMPLES['fn'])
    assert [(h.selector.group, h.selector.version) for h in registry if h.selector] == [
        ('kopf.dev', None), ('kopf.dev', 'v1')]
    with pytest.raises(TypeError, match="multiple values for argument 'arg1'"):
        kopf.on.create('kopfexamples', arg1='kopfexamples')
