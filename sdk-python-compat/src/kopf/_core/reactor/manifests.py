"""
The registry as an operon.v1 ``Manifest``: what the core watches and which handlers it calls.

Everything the core can evaluate itself goes into the manifest declaratively: the resource, the
handler's kind, label/annotation/field/value/old/new filters made of literals and
``kopf.PRESENT``/``kopf.ABSENT``, and the options. Whatever it cannot --- callables in any
filter (``when=``, ``labels={'x': fn}``, ``value=fn``) or values that are not JSON --- is left
out of the manifest and marked with ``has_callback_filters``: this process evaluates the handler's
full filters at call time and answers "not matched" (see :mod:`kopf._core.reactor.handling`).

# Caveats
- Selectors that name no single resource go to the core as such: ``kopf.EVERYTHING``
  (``everything``), ``category=`` (``category``), and callables (``callable_id``, an id of this
  manifest's own, :func:`callable_selectors`), which the core asks this process about through
  ``SelectResources`` with every resource it discovers (:mod:`kopf._core.reactor.handling`).
- Several registrations under one id are all sent when their kinds or resources differ: kinds
  (``@kopf.on.create`` and ``@kopf.on.resume`` stacked on one function, as Kopf deduplicates
  them) and resources (handlers registered in a loop over resources, which Kopf keeps per
  resource); a call goes to the registration of its reason and resource
  (:func:`resolves_to`). The same id, kind and resource registered twice: only the first.
- Admission webhooks (``@kopf.on.validate``/``@kopf.on.mutate``) are sent with their webhook
  options (operations, subresource, persistent, side_effects, ignore_failures); the core serves
  the webhooks and calls them (:meth:`kopf._core.reactor.handling.OperatorBackend.invoke_admission`).
- Index handlers (``@kopf.index``) are sent with their filters for the record: the core feeds
  them every event unfiltered, and this process applies the filters (:mod:`kopf._core.indexing`).
"""
import dataclasses
import datetime
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from google.protobuf import duration_pb2

from kopf._cogs import refs
from kopf._core import model
from kopf._core.registry import OperatorRegistry
from kopf._proto.operon.v1 import handler_pb2 as pb

logger = logging.getLogger('kopf._core.reactor.manifests')

CONTRACT_REVISION = 1

_ERRORS_MODES: Mapping[model.ErrorsMode | None, pb.ErrorsMode] = {
    None: pb.ERRORS_MODE_UNSPECIFIED,
    model.ErrorsMode.TEMPORARY: pb.ERRORS_MODE_TEMPORARY,
    model.ErrorsMode.PERMANENT: pb.ERRORS_MODE_PERMANENT,
    model.ErrorsMode.IGNORED: pb.ERRORS_MODE_IGNORED,
}


@dataclasses.dataclass(frozen=True)
class Skipped:
    """ A handler that the manifest cannot carry, and why. """
    handler_id: str
    reason: str


@dataclasses.dataclass
class ManifestBuild:
    manifest: pb.Manifest
    skipped: list[Skipped] = dataclasses.field(default_factory=list)


def duration(seconds: float | datetime.timedelta) -> duration_pb2.Duration:
    """ Seconds (or a timedelta) on the wire; negative values are clamped to zero. """
    total = seconds.total_seconds() if isinstance(seconds, datetime.timedelta) else float(seconds)
    total = max(0.0, total)
    whole = int(total)
    return duration_pb2.Duration(seconds=whole, nanos=int(round((total - whole) * 1e9)) % 1_000_000_000)


def resource_selector(selector: refs.Selector | None, callable_id: str = '') -> pb.ResourceSelector | None:
    """
    Kopf's selector in the core's terms: kubectl-style for a specific resource; ``everything``,
    ``category`` or ``callable_id`` (given by the caller, see :func:`callable_selectors`) for
    those that name no single resource. ``None`` if it names nothing the core can serve.
    """
    if selector is None:
        return None
    wide: dict[str, Any] = {}
    if selector.fn is not None:
        if not callable_id:
            return None
        wide = {'callable_id': callable_id}
    elif selector.category is not None:
        wide = {'category': selector.category}
    elif isinstance(selector.any_name, refs.Marker):
        wide = {'everything': True}
    if wide:
        return pb.ResourceSelector(group=selector.group or '', version=selector.version or '',
                                   core_group=selector.group == '', **wide)
    name = selector.plural or selector.singular or selector.kind or selector.shortcut or selector.any_name
    if not isinstance(name, str) or not name:
        return None
    group = selector.group or ''
    version = selector.version or ''
    if selector.group == '' and not version:
        version = 'v1'  # an explicitly empty group is the core group, which has only v1.
    return pb.ResourceSelector(group=group, version=version, name=name)


def resolves_to(selector: refs.Selector | None, resource: pb.ResolvedResource) -> bool | None:
    """
    Whether the core, resolving the handler's selector as sent (:func:`resource_selector`), gets
    this resource: the group and version, if named, are the resource's, and the name is its
    plural, kind (in any case) or singular (the lower-cased kind). ``None`` when that cannot be
    told: a name that is none of these may still be a short name, which the call does not carry.
    """
    if selector is not None and not selector.is_specific:
        # Served through a wide selector: the group and version, if named, must fit; beyond
        # that only EVERYTHING is sure (a category or a callable is the core's and our answer).
        if (selector.group is not None and selector.group != resource.group) or \
                (selector.version is not None and selector.version != resource.version):
            return False
        return True if isinstance(selector.any_name, refs.Marker) else None
    sent = resource_selector(selector)
    if sent is None:
        return False
    if (sent.group and sent.group != resource.group) or (sent.version and sent.version != resource.version):
        return False
    if sent.name == resource.plural or sent.name.lower() == resource.kind.lower():
        return True
    return None


def value_filter(value: Any) -> tuple[pb.ValueFilter | None, bool]:
    """ A declarative value filter, and whether the SDK must check this value at call time. """
    if value is None:
        return None, False
    if value is model.PRESENT:
        return pb.ValueFilter(present=True), False
    if value is model.ABSENT:
        return pb.ValueFilter(absent=True), False
    if callable(value):
        return None, True
    try:
        encoded = json.dumps(value, separators=(',', ':'), allow_nan=False)
    except (TypeError, ValueError):
        return None, True
    return pb.ValueFilter(equals_json=encoded.encode('utf-8')), False


def build_filters(handler: model.Handler) -> pb.Filters:
    result = pb.Filters()
    callback = handler.when is not None
    for target, pattern in ((result.labels, handler.labels), (result.annotations, handler.annotations)):
        for key, value in (pattern or {}).items():
            vf, cb = value_filter(value)
            callback = callback or cb
            if vf is not None:
                target[key].CopyFrom(vf)
    if handler.field:
        result.field = '.'.join(handler.field)
        vf, cb = value_filter(handler.value)
        callback = callback or cb
        if vf is not None:
            result.value.CopyFrom(vf)
        if handler.is_changing:
            for name in ('old', 'new'):
                vf, cb = value_filter(getattr(handler, name))
                callback = callback or cb
                if vf is not None:
                    getattr(result, name).CopyFrom(vf)
    result.has_callback_filters = callback
    return result


def build_options(handler: model.Handler) -> pb.Options:
    options = pb.Options()
    if handler.retries is not None:
        options.retries = max(0, int(handler.retries))
    if handler.timeout is not None:
        options.timeout.CopyFrom(duration(handler.timeout))
    if handler.backoff is not None:
        options.backoff.CopyFrom(duration(handler.backoff))
    options.errors = _ERRORS_MODES.get(handler.errors, pb.ERRORS_MODE_UNSPECIFIED)
    if handler.is_changing:
        options.optional = handler.kind == 'delete' and not handler.requires_finalizer
        options.deleted = bool(handler.deleted)
    if isinstance(handler.initial_delay, (int, float)):
        options.initial_delay.CopyFrom(duration(handler.initial_delay))
    if handler.interval is not None:
        options.interval.CopyFrom(duration(handler.interval))
    if handler.idle is not None:
        options.idle.CopyFrom(duration(handler.idle))
    if handler.kind == 'timer':
        options.sharp = bool(handler.sharp)
    if handler.cancellation_timeout is not None:
        options.cancellation_timeout.CopyFrom(duration(handler.cancellation_timeout))
    if handler.cancellation_backoff is not None:
        options.cancellation_backoff.CopyFrom(duration(handler.cancellation_backoff))
    if handler.kind in ('validate', 'mutate'):
        options.operations.extend(sorted(webhook_operations(handler) or ()))
        subresource = handler.extra.get('subresource')
        if subresource is not None:
            options.subresource = str(subresource)
        options.persistent = bool(handler.extra.get('persistent'))
        options.side_effects = bool(handler.extra.get('side_effects'))
        options.ignore_failures = bool(handler.extra.get('ignore_failures'))
    return options


def webhook_operations(handler: model.Handler) -> frozenset[str] | None:
    """ A webhook's operations (Kopf's ``operations=``, merged with the deprecated ``operation=``). """
    operations = handler.extra.get('operations')
    operation = handler.extra.get('operation')
    if operation is not None:
        operations = frozenset(operations or ()) | {operation}
    return None if operations is None else frozenset(str(o) for o in operations)


_KINDS: Mapping[str, pb.HandlerKind] = {
    'create': pb.HANDLER_KIND_CREATE, 'update': pb.HANDLER_KIND_UPDATE, 'delete': pb.HANDLER_KIND_DELETE,
    'resume': pb.HANDLER_KIND_RESUME, 'field': pb.HANDLER_KIND_FIELD, 'event': pb.HANDLER_KIND_EVENT,
    'timer': pb.HANDLER_KIND_TIMER, 'daemon': pb.HANDLER_KIND_DAEMON, 'index': pb.HANDLER_KIND_INDEX,
    'validate': pb.HANDLER_KIND_VALIDATE, 'mutate': pb.HANDLER_KIND_MUTATE,
}


def handler_kind(handler: model.Handler) -> pb.HandlerKind | None:
    return _KINDS.get(handler.kind)


def served_handlers(registry: OperatorRegistry) -> Iterable[model.Handler]:
    """ The handlers the core may call, in the order of registration. """
    return [handler for handler in registry if handler.kind in _KINDS]


def callable_selectors(registry: OperatorRegistry) -> dict[int, str]:
    """
    The ids of the callable resource selectors (``@kopf.on.event(lambda resource: ...)``) by the
    handler's ``id()``: its place among the served handlers and its handler id --- the same on
    every ``Describe`` of the same registry, so the manifest stays the same.
    """
    return {id(handler): f'{i}:{handler.id}' for i, handler in enumerate(served_handlers(registry))
            if handler.selector is not None and handler.selector.fn is not None}


def build_manifest(
        registry: OperatorRegistry,
        *,
        service_name: str = 'kopf',
) -> ManifestBuild:
    manifest = pb.Manifest(service_name=service_name, contract_revision=CONTRACT_REVISION)
    build = ManifestBuild(manifest=manifest)
    seen: dict[tuple[str, int, str], model.Handler] = {}
    callables = callable_selectors(registry)
    for handler in served_handlers(registry):
        kind = handler_kind(handler)
        resource = resource_selector(handler.selector, callables.get(id(handler), ''))
        if kind is None:
            build.skipped.append(Skipped(handler.id, "its kind is not known to the Operon contract"))
            continue
        if resource is None:
            build.skipped.append(Skipped(handler.id, f"its resource selector {handler.selector!r} names "
                                                     f"no resource"))
            continue
        key = (handler.id, kind, resource.SerializeToString(deterministic=True).hex())
        if key in seen:
            if seen[key].fn is not handler.fn:
                build.skipped.append(Skipped(handler.id, "another handler of this kind is registered with "
                                                         "the same id for the same resource; only the first "
                                                         "registration is served"))
            continue
        seen[key] = handler
        manifest.handlers.append(pb.Handler(
            id=handler.id,
            kind=kind,
            resource=resource,
            filters=build_filters(handler),
            options=build_options(handler),
        ))
    return build


def warn_skipped(build: ManifestBuild, log: Callable[[str], None] | None = None) -> None:
    log = log if log is not None else logger.warning
    for skipped in build.skipped:
        log(f"Handler {skipped.handler_id!r} is not served: {skipped.reason}.")
