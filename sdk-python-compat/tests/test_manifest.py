"""Decorators → handler ids, selectors, filters, options → the operon.v1 manifest."""
import functools
import logging
from typing import Any

import pytest

import kopf
from kopf._core import registry as registries
from kopf._core.reactor import manifests
from kopf._proto.operon.v1 import handler_pb2 as pb


def module_level_fn(**_: Any) -> None:
    pass


def build(registry: registries.OperatorRegistry) -> manifests.ManifestBuild:
    return manifests.build_manifest(registry)


def only(registry: registries.OperatorRegistry) -> pb.Handler:
    handlers = build(registry).manifest.handlers
    assert len(handlers) == 1, handlers
    return handlers[0]


# -- ids ------------------------------------------------------------------------------------------

def test_ids_are_qualnames(registry):
    kopf.on.create('kopfexamples')(module_level_fn)
    assert only(registry).id == 'module_level_fn'


def test_ids_of_nested_functions_are_qualnames(registry):
    @kopf.on.create('kopfexamples')
    def fn(**_: Any) -> None:
        pass
    assert only(registry).id == 'test_ids_of_nested_functions_are_qualnames.<locals>.fn'


def test_explicit_ids(registry):
    kopf.on.create('kopfexamples', id='my-id')(module_level_fn)
    assert only(registry).id == 'my-id'


def test_field_suffixes(registry):
    kopf.on.update('kopfexamples', field='spec.field')(module_level_fn)
    kopf.on.field('kopfexamples', field=['spec', 'other'], id='x')(module_level_fn)
    assert [h.id for h in build(registry).manifest.handlers] == ['module_level_fn/spec.field', 'x/spec.other']


def test_lambda_ids(registry):
    fn = lambda **_: None  # noqa: E731
    kopf.on.create('kopfexamples')(fn)
    assert only(registry).id == f'lambda:{__file__}:{fn.__code__.co_firstlineno}'


def test_partials_and_wrappers_are_unwrapped(registry):
    kopf.on.create('kopfexamples')(functools.partial(module_level_fn, x=1))

    @functools.wraps(module_level_fn)
    def wrapper(**kwargs: Any) -> None:
        pass
    kopf.on.update('kopfexamples')(wrapper)
    assert [h.id for h in registry.of_kinds('create', 'update')] == ['module_level_fn', 'module_level_fn']


# -- selectors ------------------------------------------------------------------------------------

@pytest.mark.parametrize('args, kwargs, expected', [
    (('kopfexamples',), {}, ('', '', 'kopfexamples')),
    (('kopf.dev', 'v1', 'kopfexamples'), {}, ('kopf.dev', 'v1', 'kopfexamples')),
    (('kopf.dev/v1', 'kopfexamples'), {}, ('kopf.dev', 'v1', 'kopfexamples')),
    (('kopf.dev', 'kopfexamples'), {}, ('kopf.dev', '', 'kopfexamples')),
    (('kopfexamples.kopf.dev',), {}, ('kopf.dev', '', 'kopfexamples')),
    (('kopfexamples.v1.kopf.dev',), {}, ('kopf.dev', 'v1', 'kopfexamples')),
    (('v1', 'pods'), {}, ('', 'v1', 'pods')),
    (('pods',), {}, ('', '', 'pods')),
    ((), {'kind': 'KopfExample'}, ('', '', 'KopfExample')),
    ((), {'plural': 'kopfexamples', 'group': 'kopf.dev'}, ('kopf.dev', '', 'kopfexamples')),
    ((), {'singular': 'kopfexample', 'version': 'v1', 'group': 'kopf.dev'}, ('kopf.dev', 'v1', 'kopfexample')),
    ((), {'shortcut': 'kex'}, ('', '', 'kex')),
    ((), {'group': '', 'plural': 'pods'}, ('', 'v1', 'pods')),
])
def test_selectors(registry, args, kwargs, expected):
    kopf.on.create(*args, **kwargs)(module_level_fn)
    resource = only(registry).resource
    assert (resource.group, resource.version, resource.name) == expected


@pytest.mark.parametrize('args, kwargs, expected', [
    ((kopf.EVERYTHING,), {}, {'everything': True}),
    (('kopf.dev', kopf.EVERYTHING), {}, {'everything': True, 'group': 'kopf.dev'}),
    (('v1', kopf.EVERYTHING), {}, {'everything': True, 'version': 'v1', 'core_group': True}),
    ((), {'category': 'all'}, {'category': 'all'}),
    ((), {'category': 'kopf', 'group': 'kopf.dev'}, {'category': 'kopf', 'group': 'kopf.dev'}),
])
def test_selectors_without_a_specific_resource_go_to_the_core(registry, args, kwargs, expected):
    kopf.on.create(*args, **kwargs)(module_level_fn)
    result = build(registry)
    assert not result.skipped
    assert result.manifest.handlers[0].resource == pb.ResourceSelector(**expected)


def test_callable_selectors_get_stable_ids_and_are_asked_about_resources(registry):
    import asyncio
    from kopf._core.reactor import handling

    kopf.on.create('configmaps')(module_level_fn)
    kopf.on.event(lambda resource: resource.plural.startswith('kopf'), id='fn')(module_level_fn)
    kopf.on.event(lambda resource: 'kopf' in resource.categories, id='cat')(module_level_fn)
    first, second = build(registry), build(registry)
    assert first.manifest == second.manifest, "the same manifest on every Describe"
    ids = [h.resource.callable_id for h in first.manifest.handlers]
    assert ids == ['', '1:fn', '2:cat']
    backend = handling.OperatorBackend(registry=registry, settings=kopf.OperatorSettings())
    request = pb.SelectResourcesRequest(resources=[
        pb.DiscoveredResource(group='', version='v1', plural='configmaps', kind='ConfigMap'),
        pb.DiscoveredResource(group='kopf.dev', version='v1', plural='kopfexamples', kind='KopfExample'),
        pb.DiscoveredResource(group='x.dev', version='v1', plural='things', kind='Thing', categories=['kopf']),
    ])
    answer = asyncio.run(backend.select_resources(request, None))  # type: ignore[arg-type]
    assert {s.callable_id: list(s.accepted) for s in answer.selections} == {'1:fn': [1], '2:cat': [2]}


def test_a_failing_callable_selector_accepts_nothing(registry, caplog):
    import asyncio
    from kopf._core.reactor import handling

    def broken(resource: Any) -> bool:
        raise ValueError('boom')
    kopf.on.event(broken, id='fn')(module_level_fn)
    backend = handling.OperatorBackend(registry=registry, settings=kopf.OperatorSettings())
    request = pb.SelectResourcesRequest(resources=[pb.DiscoveredResource(version='v1', plural='pods')])
    answer = asyncio.run(backend.select_resources(request, None))  # type: ignore[arg-type]
    assert list(answer.selections[0].accepted) == []
    assert 'boom' in caplog.text


def test_ambiguous_selectors_are_refused_as_in_kopf(registry):
    with pytest.raises(TypeError):
        kopf.on.create('kopfexamples', kind='KopfExample')(module_level_fn)


# -- kinds ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('decorator, kind', [
    (kopf.on.create('kex'), pb.HANDLER_KIND_CREATE),
    (kopf.on.update('kex'), pb.HANDLER_KIND_UPDATE),
    (kopf.on.delete('kex'), pb.HANDLER_KIND_DELETE),
    (kopf.on.resume('kex'), pb.HANDLER_KIND_RESUME),
    (kopf.on.field('kex', field='spec'), pb.HANDLER_KIND_FIELD),
    (kopf.on.event('kex'), pb.HANDLER_KIND_EVENT),
    (kopf.timer('kex', interval=1), pb.HANDLER_KIND_TIMER),
    (kopf.daemon('kex'), pb.HANDLER_KIND_DAEMON),
])
def test_kinds(registry, decorator, kind):
    decorator(module_level_fn)
    assert only(registry).kind == kind


def test_same_id_for_different_kinds_is_sent_for_every_kind(registry):
    kopf.on.resume('kex')(kopf.on.create('kex')(module_level_fn))
    result = build(registry)
    assert [(h.id, h.kind) for h in result.manifest.handlers] == [
        ('module_level_fn', pb.HANDLER_KIND_CREATE), ('module_level_fn', pb.HANDLER_KIND_RESUME)]
    assert not result.skipped


def test_same_id_for_the_same_kind_serves_the_first(registry):
    kopf.on.create('kex', id='x')(module_level_fn)
    kopf.on.create('kex', id='x')(lambda **_: None)
    result = build(registry)
    assert [h.id for h in result.manifest.handlers] == ['x']
    assert result.skipped[0].handler_id == 'x'


def test_webhooks_are_served_with_their_options_and_indexers_too(registry):
    kopf.index('pods', id='idx')(module_level_fn)
    kopf.on.validate('pods', id='val', operations={'UPDATE', 'CREATE'}, subresource='*',
                     ignore_failures=True, labels={'app': 'x'})(module_level_fn)
    kopf.on.mutate('pods', id='mut', persistent=True, side_effects=True)(module_level_fn)
    result = build(registry)
    assert [(h.id, h.kind) for h in result.manifest.handlers] == [
        ('idx', pb.HANDLER_KIND_INDEX), ('val', pb.HANDLER_KIND_VALIDATE), ('mut', pb.HANDLER_KIND_MUTATE)]
    assert not result.skipped
    val, mut = result.manifest.handlers[1:]
    assert list(val.options.operations) == ['CREATE', 'UPDATE']
    assert val.options.HasField('subresource') and val.options.subresource == '*'
    assert val.options.ignore_failures and not val.options.persistent and not val.options.side_effects
    assert val.filters.labels['app'].equals_json == b'"x"'
    assert not mut.options.operations and not mut.options.HasField('subresource')
    assert mut.options.persistent and mut.options.side_effects and not mut.options.ignore_failures


def test_webhooks_take_kopfs_options_only(registry):
    with pytest.raises(TypeError, match='retries'):
        kopf.on.validate('pods', retries=3)
    with pytest.raises(ValueError, match='non-empty'):
        kopf.on.mutate('pods', operations=[])
    with pytest.warns(DeprecationWarning):
        kopf.on.validate('pods', id='old', operation='DELETE', operations={'CREATE'})(module_level_fn)
    assert list(build(registry).manifest.handlers[0].options.operations) == ['CREATE', 'DELETE']


def test_activities_are_not_in_the_manifest(registry):
    kopf.on.startup()(module_level_fn)
    kopf.on.cleanup()(module_level_fn)
    kopf.on.login()(module_level_fn)
    kopf.on.probe()(module_level_fn)
    assert not build(registry).manifest.handlers
    assert len(registry.of_kinds('startup', 'cleanup', 'login', 'probe')) == 4


# -- filters --------------------------------------------------------------------------------------

def test_metadata_filters(registry):
    kopf.on.create('kex', labels={'a': 'x', 'b': kopf.PRESENT, 'c': kopf.ABSENT},
                   annotations={'d': 'y'})(module_level_fn)
    filters = only(registry).filters
    assert filters.labels['a'].equals_json == b'"x"'
    assert filters.labels['b'].present and filters.labels['c'].absent
    assert filters.annotations['d'].equals_json == b'"y"'
    assert not filters.has_callback_filters


def test_none_in_metadata_filters_is_refused_as_in_kopf(registry):
    with pytest.raises(ValueError, match="use kopf.PRESENT or kopf.ABSENT"):
        kopf.on.create('kex', labels={'a': None})(module_level_fn)  # type: ignore[dict-item]


def test_callable_metadata_filters_are_left_to_the_sdk(registry):
    kopf.on.create('kex', labels={'a': 'x', 'b': lambda v, **_: True})(module_level_fn)
    filters = only(registry).filters
    assert list(filters.labels) == ['a']
    assert filters.has_callback_filters


def test_field_value_filters(registry):
    kopf.on.create('kex', field='spec.x', value=5)(module_level_fn)
    kopf.on.update('kex', field='spec.y', old=kopf.ABSENT, new={'a': [1]})(module_level_fn)
    kopf.on.field('kex', field='spec.z', value=kopf.PRESENT)(module_level_fn)
    h1, h2, h3 = build(registry).manifest.handlers
    assert h1.filters.field == 'spec.x' and h1.filters.value.equals_json == b'5'
    assert h2.filters.field == 'spec.y' and h2.filters.old.absent
    assert h2.filters.new.equals_json == b'{"a":[1]}'
    assert h3.filters.value.present
    assert not any(h.filters.has_callback_filters for h in (h1, h2, h3))


@pytest.mark.parametrize('kwargs', [
    {'when': lambda **_: True},
    {'field': 'spec.x', 'value': lambda v, **_: True},
    {'field': 'spec.x', 'new': lambda v, **_: True},
    {'field': 'spec.x', 'value': {1, 2}},  # not JSON: compared in Python
])
def test_callback_filters_are_flagged(registry, kwargs):
    kopf.on.update('kex', **kwargs)(module_level_fn)
    assert only(registry).filters.has_callback_filters


def test_conflicting_filters_are_refused_as_in_kopf(registry):
    with pytest.raises(TypeError):
        kopf.on.update('kex', value=1)(module_level_fn)
    with pytest.raises(TypeError):
        kopf.on.update('kex', field='spec', value=1, old=2)(module_level_fn)


# -- options --------------------------------------------------------------------------------------

def test_options(registry):
    kopf.on.create('kex', retries=3, timeout=30.5, backoff=1, errors=kopf.ErrorsMode.PERMANENT)(module_level_fn)
    options = only(registry).options
    assert options.HasField('retries') and options.retries == 3
    assert (options.timeout.seconds, options.timeout.nanos) == (30, 500_000_000)
    assert options.backoff.seconds == 1
    assert options.errors == pb.ERRORS_MODE_PERMANENT


def test_unset_options_stay_unset(registry):
    kopf.on.create('kex')(module_level_fn)
    options = only(registry).options
    assert not options.HasField('retries') and not options.HasField('timeout') and not options.HasField('backoff')
    assert options.errors == pb.ERRORS_MODE_UNSPECIFIED


@pytest.mark.parametrize('mode, wire', [
    (kopf.ErrorsMode.TEMPORARY, pb.ERRORS_MODE_TEMPORARY),
    (kopf.ErrorsMode.IGNORED, pb.ERRORS_MODE_IGNORED),
])
def test_errors_modes(registry, mode, wire):
    kopf.on.create('kex', errors=mode)(module_level_fn)
    assert only(registry).options.errors == wire


def test_optional_and_deleted(registry):
    kopf.on.delete('kex', id='mandatory')(module_level_fn)
    kopf.on.delete('kex', id='optional', optional=True)(module_level_fn)
    kopf.on.resume('kex', id='deleted', deleted=True)(module_level_fn)
    mandatory, optional, deleted = build(registry).manifest.handlers
    assert not mandatory.options.optional and optional.options.optional
    assert deleted.options.deleted


def test_timer_and_daemon_options(registry):
    kopf.timer('kex', id='t', interval=2, idle=5, initial_delay=1.5, sharp=True)(module_level_fn)
    kopf.daemon('kex', id='d', initial_delay=3, cancellation_timeout=10, cancellation_backoff=1)(module_level_fn)
    timer, daemon = build(registry).manifest.handlers
    assert timer.options.interval.seconds == 2 and timer.options.idle.seconds == 5
    assert timer.options.initial_delay.nanos == 500_000_000 and timer.options.sharp
    assert daemon.options.initial_delay.seconds == 3 and daemon.options.cancellation_timeout.seconds == 10


def test_the_manifest_names_the_contract_revision(registry):
    assert build(registry).manifest.contract_revision == 1
