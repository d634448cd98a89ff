"""
Kopf's storages → the core's ``--progress-storage`` / ``--diffbase-storage`` (``running.core_argv``).

Every storage class and option of Kopf's becomes the JSON spec that the core takes; the options are
always passed, Kopf's defaults too. The classes have Kopf's attributes (compared with Kopf's own, from
its venv, when it is there). Custom storages (subclasses that override Kopf's storage methods) stop
the start-up, naming the class.
"""
import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

import kopf
import realkopf
from kopf._cogs import settings as settings_
from kopf._cogs import storages
from kopf._core import registry as registries
from kopf._core.reactor import running
from kopf._transport import core as corep


def argv_of(settings: kopf.OperatorSettings) -> list[str]:
    settings.peering.clusterwide = True  # as kopf.run(clusterwide=True) sets it
    return running.core_argv(binary='operon', address='127.0.0.1:1', settings=settings,
                             clusterwide=True, namespaces=[], identity='me', http='127.0.0.1:2')


def options(settings: kopf.OperatorSettings) -> dict[str, Any]:
    """ The core's storage options and its prefix, the specs parsed. """
    argv = argv_of(settings)
    found = {name: argv[argv.index(name) + 1] for name in ('--prefix', '--progress-storage', '--diffbase-storage')}
    return {name: value if name == '--prefix' else json.loads(value) for name, value in found.items()}


def with_storages(progress: Any = None, diffbase: Any = None) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    if progress is not None:
        settings.persistence.progress_storage = progress
    if diffbase is not None:
        settings.persistence.diffbase_storage = diffbase
    return settings


# -- the mapping -----------------------------------------------------------------------------------

def test_kopfs_defaults_are_passed_explicitly() -> None:
    assert options(kopf.OperatorSettings()) == {
        '--prefix': 'kopf.zalando.org',
        '--progress-storage': {'multi': [
            {'annotations': {'prefix': 'kopf.zalando.org', 'verbose': False, 'touch_key': 'touch-dummy', 'v1': True}},
            {'status': {'field': 'status.kopf.progress', 'touch_field': 'status.kopf.dummy', 'write': False}},
        ]},
        '--diffbase-storage': {'annotations': {'prefix': 'kopf.zalando.org', 'key': 'last-handled-configuration',
                                               'v1': True, 'ignored_fields': []}},
    }
    argv = argv_of(kopf.OperatorSettings())  # compact JSON, in the order of the spec
    assert argv[argv.index('--diffbase-storage') + 1] == (
        '{"annotations":{"prefix":"kopf.zalando.org","key":"last-handled-configuration","v1":true,'
        '"ignored_fields":[]}}')


def test_smart_progress_storage_with_every_option() -> None:
    smart = kopf.SmartProgressStorage(name='myop', field='status.{name}.prog', touch_key='touch-me',
                                      touch_field=['status', 'x.y'], prefix='example.com', v1=False, verbose=True)
    assert options(with_storages(smart))['--progress-storage'] == {'multi': [
        {'annotations': {'prefix': 'example.com', 'verbose': True, 'touch_key': 'touch-me', 'v1': False}},
        {'status': {'field': 'status.myop.prog', 'touch_field': ['status', 'x.y'], 'write': False}},
    ]}


def test_annotations_progress_storage() -> None:
    storage = kopf.AnnotationsProgressStorage(prefix='my.example.com', verbose=True, touch_key='tt', v1=False)
    found = options(with_storages(storage))
    assert found['--progress-storage'] == {
        'annotations': {'prefix': 'my.example.com', 'verbose': True, 'touch_key': 'tt', 'v1': False}}
    assert found['--prefix'] == 'my.example.com'


def test_status_progress_storage_is_written_and_its_fields_are_resolved_as_kopf_does() -> None:
    storage = kopf.StatusProgressStorage(name='myop')
    assert (storage.field, storage.touch_field) == (('status', 'myop', 'progress'), ('status', 'myop', 'dummy'))
    found = options(with_storages(storage))
    assert found['--progress-storage'] == {
        'status': {'field': 'status.myop.progress', 'touch_field': 'status.myop.dummy', 'write': True}}
    assert found['--prefix'] == 'kopf.zalando.org'  # no annotations storage: no longer refused

    storage.field = 'status.{name}.other'  # Kopf's setters fill in the name too
    storage.touch_field = ('status', 'touched')
    assert (storage.field, storage.touch_field) == (('status', 'myop', 'other'), ('status', 'touched'))
    assert options(with_storages(storage))['--progress-storage'] == {
        'status': {'field': 'status.myop.other', 'touch_field': 'status.touched', 'write': True}}


def test_multi_progress_storage_keeps_the_order() -> None:
    multi = kopf.MultiProgressStorage([kopf.StatusProgressStorage(name='a'),
                                       kopf.AnnotationsProgressStorage(prefix='b.example.com')])
    found = options(with_storages(multi))
    assert found['--progress-storage'] == {'multi': [
        {'status': {'field': 'status.a.progress', 'touch_field': 'status.a.dummy', 'write': True}},
        {'annotations': {'prefix': 'b.example.com', 'verbose': False, 'touch_key': 'touch-dummy', 'v1': True}},
    ]}
    assert found['--prefix'] == 'b.example.com'


def test_annotations_diffbase_storage_with_every_option() -> None:
    storage = kopf.AnnotationsDiffBaseStorage(prefix='d.example.com', key='last', v1=False,
                                              ignored_fields=['spec.x', ('metadata', 'labels', 'a.b')])
    found = options(with_storages(diffbase=storage))
    assert found['--diffbase-storage'] == {'annotations': {
        'prefix': 'd.example.com', 'key': 'last', 'v1': False,
        'ignored_fields': ['spec.x', ['metadata', 'labels', 'a.b']]}}
    assert found['--prefix'] == 'kopf.zalando.org'  # the progress storage's comes first


def test_status_diffbase_storage() -> None:
    storage = kopf.StatusDiffBaseStorage(name='myop', ignored_fields=['spec.y'])
    assert storage.field == ('status', 'myop', 'last-handled-configuration')
    assert options(with_storages(diffbase=storage))['--diffbase-storage'] == {
        'status': {'field': 'status.myop.last-handled-configuration', 'ignored_fields': ['spec.y']}}
    storage.field = ['status', '{name}']  # a list is taken as it is, as in Kopf
    assert options(with_storages(diffbase=storage))['--diffbase-storage'] == {
        'status': {'field': 'status.{name}', 'ignored_fields': ['spec.y']}}


def test_multi_diffbase_storage_gives_its_own_ignored_fields_to_each() -> None:
    multi = kopf.MultiDiffBaseStorage([
        kopf.AnnotationsDiffBaseStorage(ignored_fields=['spec.a']),
        kopf.MultiDiffBaseStorage([kopf.StatusDiffBaseStorage()]),
    ])
    assert options(with_storages(diffbase=multi))['--diffbase-storage'] == {'multi': [
        {'annotations': {'prefix': 'kopf.zalando.org', 'key': 'last-handled-configuration', 'v1': True,
                         'ignored_fields': ['spec.a']}},
        {'multi': [{'status': {'field': 'status.kopf.last-handled-configuration', 'ignored_fields': []}}]},
    ]}
    multi.ignored_fields = ['spec.b']  # Kopf drops them before each storage drops its own
    assert options(with_storages(diffbase=multi))['--diffbase-storage'] == {'multi': [
        {'annotations': {'prefix': 'kopf.zalando.org', 'key': 'last-handled-configuration', 'v1': True,
                         'ignored_fields': ['spec.b', 'spec.a']}},
        {'multi': [{'status': {'field': 'status.kopf.last-handled-configuration', 'ignored_fields': ['spec.b']}}]},
    ]}


def test_kopfs_checks_of_the_options_are_kept() -> None:
    with pytest.raises(ValueError, match='must be prefixed'):
        kopf.AnnotationsProgressStorage(prefix='')
    with pytest.raises(ValueError, match='must be prefixed'):
        kopf.AnnotationsDiffBaseStorage(prefix='')
    with pytest.warns(UserWarning, match='prefix is too long'):
        kopf.SmartProgressStorage(prefix='x' * 200)
    with pytest.raises(ValueError, match='Field must be either a str, or a list/tuple'):
        kopf.StatusProgressStorage(field=123)  # type: ignore[arg-type]


def test_a_malformed_ignored_field_stops_the_start() -> None:
    storage = kopf.AnnotationsDiffBaseStorage(ignored_fields=[123])  # type: ignore[list-item]
    settings = with_storages(diffbase=storage)
    assert settings_.audit(settings).errors == [
        "settings.persistence.diffbase_storage is not supported on Operon: "
        "ignored_fields must be strings or lists of strings; got 123."]
    with pytest.raises(running.OperatorError, match='ignored_fields must be strings'):
        argv_of(settings)


def test_the_storages_are_the_cores_options_for_kopf_serve() -> None:
    assert settings_.audit(kopf.OperatorSettings(), with_core=False).warnings == []
    settings = with_storages(kopf.SmartProgressStorage())  # equal to Kopf's default: no warning
    assert settings_.audit(settings, with_core=False).warnings == []
    settings = with_storages(diffbase=kopf.StatusDiffBaseStorage(name='myop'))
    assert settings_.audit(settings).warnings == []
    assert settings_.audit(settings, with_core=False).warnings == [
        "settings.persistence.diffbase_storage=StatusDiffBaseStorage(ignored_fields=[], name='myop', "
        "field=('status', 'myop', 'last-handled-configuration')) is the core's option --diffbase-storage "
        """'{"status":{"field":"status.myop.last-handled-configuration","ignored_fields":[]}}' on Operon; """
        "give it to the core that calls this service."]


# -- custom storages -------------------------------------------------------------------------------

class CustomFetching(kopf.AnnotationsProgressStorage):
    def fetch(self, *, key: str, body: Any) -> Any:
        return None

    def store(self, **_: Any) -> None:
        pass


class CustomFromTheBase(kopf.DiffBaseStorage):
    pass


class OwnDefaults(kopf.AnnotationsProgressStorage):
    """ Only the defaults changed (and a helper of its own): it is still Kopf's storage. """
    def __init__(self) -> None:
        super().__init__(prefix='own.example.com', v1=False)

    def describe(self) -> str:
        return self.prefix


def test_custom_storages_are_refused_naming_the_class() -> None:
    settings = with_storages(CustomFetching(), CustomFromTheBase())
    assert settings_.audit(settings, with_core=False) == settings_.Audit(errors=[
        "settings.persistence.progress_storage is not supported on Operon: "
        "test_storages.CustomFetching is a custom storage: it overrides fetch(), store(), code that cannot "
        "run in the Operon core, which keeps the state itself; use Kopf's storage classes, with their options.",
        "settings.persistence.diffbase_storage is not supported on Operon: "
        "test_storages.CustomFromTheBase is a custom storage: it derives from kopf.DiffBaseStorage alone, "
        "and its code cannot run in the Operon core, which keeps the state itself; "
        "use Kopf's storage classes, with their options.",
    ], warnings=[])
    with pytest.raises(running.OperatorError, match=r'test_storages\.CustomFetching is a custom storage'):
        argv_of(settings)


def test_a_custom_storage_inside_a_multi_storage_is_refused() -> None:
    settings = with_storages(kopf.MultiProgressStorage([kopf.StatusProgressStorage(), CustomFetching()]))
    assert [error.split(':')[1].strip() for error in settings_.audit(settings).errors] == [
        "test_storages.CustomFetching is a custom storage"]


def test_not_a_storage_is_refused() -> None:
    settings = with_storages(diffbase=kopf.AnnotationsProgressStorage())
    assert settings_.audit(settings).errors == [
        "settings.persistence.diffbase_storage is not supported on Operon: AnnotationsProgressStorage("
        "prefix='kopf.zalando.org', v1=True, verbose=False, touch_key='touch-dummy') is not a kopf.DiffBaseStorage."]


def test_a_subclass_with_its_own_defaults_is_kopfs_storage() -> None:
    settings = with_storages(OwnDefaults())
    assert settings_.audit(settings).errors == []
    assert options(settings)['--progress-storage'] == {
        'annotations': {'prefix': 'own.example.com', 'verbose': False, 'touch_key': 'touch-dummy', 'v1': False}}


def _start(storage: Any, monkeypatch: pytest.MonkeyPatch) -> BaseException | None:
    """ Start an operator whose startup handler sets the progress storage; what stops it. """
    monkeypatch.setenv('OPERON_BIN', '/nonexistent/operon')  # past the checks, the core is not found
    registry = registries.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = storage

    try:
        asyncio.run(running.operator(registry=registry, clusterwide=True, stop_flag=asyncio.Event()))
    except BaseException as e:  # noqa: B036: what stops it is what we look for
        return e
    return None


def test_the_operator_does_not_start_with_a_custom_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    error = _start(CustomFetching(), monkeypatch)
    assert isinstance(error, running.OperatorError)
    assert ("settings.persistence.progress_storage is not supported on Operon: "
            "test_storages.CustomFetching") in str(error)

    error = _start(OwnDefaults(), monkeypatch)  # accepted: it gets as far as looking for the core
    assert isinstance(error, running.OperatorError) and isinstance(error.__cause__, corep.CoreNotFoundError)


# -- Kopf's attributes -----------------------------------------------------------------------------

# Run by Kopf's Python and ours: every storage class's public attributes and properties, with values.
ATTRIBUTES = r'''
import inspect, json
import kopf


def public(obj):
    found = {}
    for name in dir(obj):
        is_property = isinstance(getattr(type(obj), name, None), property)
        if name.startswith('_') or (callable(getattr(obj, name)) and not is_property):
            continue
        value = getattr(obj, name)
        if isinstance(value, (list, tuple)) and value and not isinstance(value[0], (str, list, tuple)):
            value = [type(item).__name__ for item in value]
        found[name] = value
    return found


status = kopf.StatusProgressStorage(name='zz')
status.field = 'status.{name}.x'
status.touch_field = ['a', 'b']
diffbase = kopf.StatusDiffBaseStorage(name='zz')
diffbase.field = ('status', '{name}')
cases = {
    'annotations': kopf.AnnotationsProgressStorage(prefix='ex.com', verbose=True, touch_key='t', v1=False),
    'status': kopf.StatusProgressStorage(name='my', field=['status', 'a.b'], touch_field='status.{name}.t'),
    'status-set': status,
    'smart': kopf.SmartProgressStorage(name='my', prefix='ex.com'),
    'multi': kopf.MultiProgressStorage([kopf.AnnotationsProgressStorage()]),
    'annotations-diffbase': kopf.AnnotationsDiffBaseStorage(prefix='ex.com', key='k', v1=False,
                                                            ignored_fields=['spec.x', ('a', 'b')]),
    'status-diffbase': kopf.StatusDiffBaseStorage(name='my', ignored_fields=('spec.y',)),
    'status-diffbase-set': diffbase,
    'multi-diffbase': kopf.MultiDiffBaseStorage([kopf.StatusDiffBaseStorage()]),
    'smart-parts': kopf.SmartProgressStorage().storages[1],
}
found = {key: public(value) for key, value in cases.items()}
found['parameters'] = {name: list(inspect.signature(getattr(kopf, name)).parameters)
                       for name in dir(kopf) if name.endswith('Storage')}
found['bases'] = {name: sorted(base.__name__ for base in getattr(kopf, name).__mro__
                               if base.__name__.endswith('Storage'))
                  for name in dir(kopf) if name.endswith('Storage')}
print(json.dumps(found, sort_keys=True, default=repr))
'''


def _attributes(python: str) -> Any:
    result = subprocess.run([python, '-c', ATTRIBUTES], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_storages_have_kopfs_attributes() -> None:
    try:
        python = str(realkopf.kopf_venv() / 'python')
    except realkopf.KopfUnavailable as e:
        pytest.skip(str(e))
    kopfs, ours = _attributes(python), _attributes(sys.executable)
    assert ours == kopfs
    assert kopfs['bases']['SmartProgressStorage'] == [
        'MultiProgressStorage', 'ProgressStorage', 'SmartProgressStorage']


def test_kopfs_storage_methods_are_what_custom_storages_override() -> None:
    """ The names the refusal looks for are the methods of Kopf's storages (from its venv). """
    try:
        python = str(realkopf.kopf_venv() / 'python')
    except realkopf.KopfUnavailable as e:
        pytest.skip(str(e))
    script = ("import json, kopf; print(json.dumps(sorted({m for n in dir(kopf) if n.endswith('Storage') "
              "for m in dir(getattr(kopf, n)) "
              "if not m.startswith('__') and callable(getattr(getattr(kopf, n), m))})))")
    result = subprocess.run([python, '-c', script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == storages.KOPF_METHODS
