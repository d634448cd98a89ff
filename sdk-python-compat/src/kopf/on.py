"""
``@kopf.on.…``: the decorators that register handlers, with Kopf's names and options.

Every resource decorator takes the resource as Kopf does --- positionally (``'kopfexamples'``,
``'kopf.dev', 'kopfexamples'``, ``'kopf.dev/v1', 'kopfexamples'``, ``kopf.EVERYTHING``, a
callable) or by ``group=``, ``version=``, ``kind=``, ``plural=``, ``singular=``, ``shortcut=``,
``category=`` --- plus the options that Kopf's decorator of the same name accepts; an option that
Kopf's decorator does not know is a :class:`TypeError`, as it would be in Kopf.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from kopf._cogs import refs, views
from kopf._core import calls, model, registry as registries

Fn = TypeVar('Fn', bound=Callable[..., Any])
Decorator = Callable[[Fn], Fn]

_SELECTOR = frozenset({'group', 'version', 'kind', 'plural', 'singular', 'shortcut', 'category'})
_RETRYING = frozenset({'id', 'param', 'errors', 'timeout', 'retries', 'backoff'})
_FILTERS = frozenset({'labels', 'annotations', 'when', 'field', 'value'})
_WEBHOOK = frozenset({'operation', 'operations', 'subresource', 'persistent', 'side_effects', 'ignore_failures'})
_SPAWNING = frozenset({'initial_delay'})
_POSITIONAL = ('arg1', 'arg2', 'arg3')  # Kopf's names of the positional selectors

# Per decorator: the options besides the selector (and `registry=`), and the handler's own settings.
_OPTIONS: dict[str, frozenset[str]] = {
    'resume': _RETRYING | _FILTERS | {'deleted'},
    'create': _RETRYING | _FILTERS,
    'update': _RETRYING | _FILTERS | {'old', 'new'},
    'delete': _RETRYING | _FILTERS | {'optional'},
    'field': _RETRYING | _FILTERS | {'old', 'new'},
    'event': (_FILTERS | {'id', 'param'}),
    'index': (_FILTERS | {'id', 'param', 'errors', 'timeout', 'retries', 'backoff'}),
    'daemon': _RETRYING | _FILTERS | _SPAWNING | {'cancellation_backoff', 'cancellation_timeout', 'cancellation_polling'},
    'timer': _RETRYING | _FILTERS | _SPAWNING | {'idle', 'interval', 'sharp'},
    'validate': _FILTERS | _WEBHOOK | {'id', 'param'},
    'mutate': _FILTERS | _WEBHOOK | {'id', 'param'},
}
_NEEDS_CHANGE = frozenset({'update', 'field'})


def _check_filters(kind: str, options: dict[str, Any]) -> None:
    for what in ('labels', 'annotations'):
        if any(v is None for v in (options.get(what) or {}).values()):
            raise ValueError(f"`None` for {what[:-1]} filters is not supported; use kopf.PRESENT or kopf.ABSENT.")
    field, value = options.get('field'), options.get('value')
    old, new = options.get('old'), options.get('new')
    if field is None and any(v is not None for v in (value, old, new)):
        raise TypeError("Value/old/new filters are specified without a mandatory field.")
    if value is not None and (old is not None or new is not None):
        raise TypeError("Either value= or old=/new= can be defined, not both.")


def _positional(kind: str, args: tuple[Any, ...], options: dict[str, Any]) -> tuple[Any, ...]:
    """ The resource's positional arguments, also when given by Kopf's names (``arg1=``…). """
    given = list(args)
    for index, name in enumerate(_POSITIONAL):
        if name in options:
            if index < len(given):
                raise TypeError(f"kopf.on.{kind}() got multiple values for argument {name!r}")
            given += [None] * (index - len(given)) + [options.pop(name)]
    return tuple(given)


def _resource_decorator(kind: model.Kind, args: tuple[Any, ...], options: dict[str, Any]) -> Callable[[Fn], Fn]:
    allowed = _OPTIONS[kind] | _SELECTOR | {*_POSITIONAL, 'registry'}
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"kopf.on.{kind}() got unexpected keyword arguments: {sorted(unknown)}")
    _check_filters(kind, options)
    args = _positional(kind, args, options)
    if callable(options.get('initial_delay')):
        raise NotImplementedError(f"kopf.{kind}(initial_delay=<a function>) is not supported on Operon: "
                                  f"the core schedules the start; give the delay in seconds.")
    selector = refs.Selector(*args, **{k: options.pop(k) for k in _SELECTOR if k in options})
    registry = options.pop('registry', None)
    handler_id = options.pop('id', None)
    field = views.split_field(options.pop('field', None)) or None
    optional = options.pop('optional', False)
    extra = {k: options.pop(k) for k in list(options) if k in _WEBHOOK}
    if 'operation' in extra:
        warnings.warn("operation= is deprecated, use operations={...}.", DeprecationWarning)
    if extra.get('operations') is not None and not extra['operations']:
        raise ValueError(f"Operations should be either None or non-empty. Got empty {extra['operations']}.")
    if kind in ('daemon', 'timer'):
        options.setdefault('requires_finalizer', True)
    if kind == 'delete':
        options['requires_finalizer'] = not optional

    def decorator(fn: Fn) -> Fn:
        target = registry if registry is not None else registries.get_default_registry()
        suffix = '.'.join(field or ()) if kind != 'index' else None  # an index's id is its kwarg's name
        full_id = registries.generate_id(fn, handler_id, suffix=suffix)
        target.append(model.Handler(fn=fn, id=full_id, kind=kind, selector=selector, field=field,
                                    field_needs_change=kind in _NEEDS_CHANGE, extra=extra, **options))
        return fn
    return decorator


def _activity_decorator(kind: model.Kind, options: dict[str, Any]) -> Callable[[Fn], Fn]:
    unknown = set(options) - (_RETRYING | {'registry'})
    if unknown:
        raise TypeError(f"kopf.on.{kind}() got unexpected keyword arguments: {sorted(unknown)}")
    registry = options.pop('registry', None)
    handler_id = options.pop('id', None)

    def decorator(fn: Fn) -> Fn:
        target = registry if registry is not None else registries.get_default_registry()
        target.append(model.Handler(fn=fn, id=registries.generate_id(fn, handler_id), kind=kind, **options))
        return fn
    return decorator


def startup(**options: Any) -> Callable[[Fn], Fn]:
    """``@kopf.on.startup()``: runs before the operator serves anything; may tune ``settings``."""
    return _activity_decorator('startup', options)


def cleanup(**options: Any) -> Callable[[Fn], Fn]:
    """``@kopf.on.cleanup()``: runs when the operator stops."""
    return _activity_decorator('cleanup', options)


def login(**options: Any) -> Callable[[Fn], Fn]:
    """``@kopf.on.login()``: returns a :class:`kopf.ConnectionInfo` for the cluster."""
    return _activity_decorator('login', options)


def probe(**options: Any) -> Callable[[Fn], Fn]:
    """``@kopf.on.probe()``: its result is reported by the ``--liveness`` endpoint."""
    return _activity_decorator('probe', options)


def resume(*resource: Any, **options: Any) -> Callable[[Fn], Fn]:
    """``@kopf.on.resume()``: for objects that exist when the operator starts."""
    return _resource_decorator('resume', resource, options)


def create(*resource: Any, **options: Any) -> Callable[[Fn], Fn]:
    """``@kopf.on.create()``: for new objects."""
    return _resource_decorator('create', resource, options)


def update(*resource: Any, **options: Any) -> Callable[[Fn], Fn]:
    """``@kopf.on.update()``: for changes of the objects' essence."""
    return _resource_decorator('update', resource, options)


def delete(*resource: Any, **options: Any) -> Callable[[Fn], Fn]:
    """``@kopf.on.delete()``: before the objects go (``optional=True``: no finalizer)."""
    return _resource_decorator('delete', resource, options)


def field(*resource: Any, **options: Any) -> Callable[[Fn], Fn]:
    """``@kopf.on.field(field=…)``: for changes of one field."""
    if options.get('field') is None:
        raise TypeError("kopf.on.field() requires field=.")
    return _resource_decorator('field', resource, options)


def event(*resource: Any, **options: Any) -> Callable[[Fn], Fn]:
    """``@kopf.on.event()``: for every raw watch event."""
    return _resource_decorator('event', resource, options)


def index(*resource: Any, **options: Any) -> Callable[[Fn], Fn]:
    """``@kopf.index()``: an index, kept in this process (fed by the core), as a kwarg of all handlers."""
    return _resource_decorator('index', resource, options)


def daemon(*resource: Any, **options: Any) -> Callable[[Fn], Fn]:
    """``@kopf.daemon()``: one long-running call per matching object, run by the core (see
    ``kopf._core.reactor.daemons``)."""
    return _resource_decorator('daemon', resource, options)


def timer(*resource: Any, **options: Any) -> Callable[[Fn], Fn]:
    """``@kopf.timer()``: the core calls it every ``interval`` (``idle``, ``initial_delay``, ``sharp``)."""
    return _resource_decorator('timer', resource, options)


def validate(*resource: Any, **options: Any) -> Callable[[Fn], Fn]:
    """``@kopf.on.validate()``: a validating admission webhook, served by the core."""
    return _resource_decorator('validate', resource, options)


def mutate(*resource: Any, **options: Any) -> Callable[[Fn], Fn]:
    """``@kopf.on.mutate()``: a mutating admission webhook (its ``patch`` is the response's JSONPatch)."""
    return _resource_decorator('mutate', resource, options)


_SUB_OPTIONS = frozenset({'param', 'errors', 'timeout', 'retries', 'backoff', 'labels', 'annotations',
                          'when', 'field', 'value', 'old', 'new'})


def subhandler(*, id: str | None = None, **options: Any) -> Callable[[Fn], Fn]:
    """
    ``@kopf.subhandler()``: inside a change handler, a handler of that handler, with the id
    ``<parent id>/<id>``; run (and retried) with its parent's calls until it is finished.

    # Errors
    :class:`LookupError` outside of a handler's call.
    """
    unknown = set(options) - _SUB_OPTIONS
    if unknown:
        raise TypeError(f"kopf.subhandler() got unexpected keyword arguments: {sorted(unknown)}")
    _check_filters('sub', options)
    parent = calls.current_handler_var.get(None)
    scope = calls.scope_var.get()  # LookupError outside of a change handler's call
    if parent is not None and (options.get('old') is not None or options.get('new') is not None):
        if parent.kind not in ('update', 'field', 'sub'):
            raise TypeError("Filters old=/new= can only be used in update handlers.")
    options.setdefault('field_needs_change', scope.parent.field_needs_change)

    def decorator(fn: Fn) -> Fn:
        calls.sub_handler(fn, id=id, **dict(options))
        return fn
    return decorator


def register(fn: Fn, *, id: str | None = None, **options: Any) -> Fn:
    """``kopf.register(fn, id=…)``: :func:`subhandler` as a function call."""
    return subhandler(id=id, **options)(fn)
