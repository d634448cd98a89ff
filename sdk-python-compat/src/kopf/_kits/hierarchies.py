"""
Parent-child helpers: ``kopf.adopt`` and its parts (owner references, labels, naming, namespace).

The children can be, one by one or in (nested) lists, tuples or any other iterables, mixed:

* dicts (any mutable mapping) --- changed in place;
* pykube-ng objects (anything that keeps its dict in ``.obj``) --- their dict is changed;
* the models of the official ``kubernetes`` or ``kubernetes_asyncio`` clients (``V1Pod``,
  ``V1ResourceQuota``, …, as ``create_*`` & co. return them) --- their ``metadata`` attributes are
  changed; a missing ``metadata`` is created as the client's ``V1ObjectMeta``, owner references
  are the client's ``V1OwnerReference``.

``None`` is nothing to change; anything else is a :class:`TypeError` naming its class.
Without an explicit owner, the object being handled in the current handler's call is the owner.
"""
from __future__ import annotations

import enum
import importlib
import warnings
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from kopf._core import calls


class _FromOwner(enum.Enum):
    """ The default of the helpers' values: take it from the owner (the handled object). """
    OWNER = 'owner'


_OWNER = _FromOwner.OWNER

# The clients' models are generated classes without a common base: they are known by their module.
_CLIENTS = ('kubernetes', 'kubernetes_asyncio')


def _client_of(obj: Any) -> str | None:
    """ ``'kubernetes'``/``'kubernetes_asyncio'`` for these clients' models, ``None`` for all else. """
    for cls in type(obj).__mro__:
        module = getattr(cls, '__module__', None) or ''
        for client in _CLIENTS:
            if module.startswith(client + '.client.models.'):
                return client
    return None


class _DictMeta:
    """ The ``metadata`` of a dict; its fields by their API names. """

    def __init__(self, obj: MutableMapping[Any, Any]) -> None:
        self._obj = obj

    @property
    def _meta(self) -> MutableMapping[Any, Any]:
        meta: MutableMapping[Any, Any] = self._obj.setdefault('metadata', {})
        return meta

    def has(self, field: str) -> bool:
        return field in self._obj.get('metadata', {})

    def get(self, field: str) -> Any:
        return self._obj.get('metadata', {}).get(field)

    def set(self, field: str, value: Any) -> None:
        self._meta[field] = value

    def unset(self, field: str) -> None:
        self._meta.pop(field, None)

    def collection(self, field: str, empty: Any) -> Any:
        return self._meta.setdefault(field, empty)

    def owner_reference(self, ref: Mapping[str, Any]) -> Any:
        return dict(ref)

    @staticmethod
    def uid_of(ref: Any) -> Any:
        return ref.get('uid')


class _ModelMeta:
    """ The ``metadata`` of a client's model (created if missing); the API names as attributes. """

    _ATTRIBUTES = {'generateName': 'generate_name', 'ownerReferences': 'owner_references',
                   'apiVersion': 'api_version', 'blockOwnerDeletion': 'block_owner_deletion'}

    def __init__(self, obj: Any, client: str) -> None:
        self._models = importlib.import_module(client + '.client')
        if obj.metadata is None:
            obj.metadata = self._models.V1ObjectMeta()
        self._meta = obj.metadata

    def has(self, field: str) -> bool:
        return self.get(field) is not None

    def get(self, field: str) -> Any:
        return getattr(self._meta, self._ATTRIBUTES.get(field, field))

    def set(self, field: str, value: Any) -> None:
        setattr(self._meta, self._ATTRIBUTES.get(field, field), value)

    def unset(self, field: str) -> None:
        self.set(field, None)

    def collection(self, field: str, empty: Any) -> Any:
        if self.get(field) is None:
            self.set(field, empty)
        return self.get(field)

    def owner_reference(self, ref: Mapping[str, Any]) -> Any:
        return self._models.V1OwnerReference(**{self._ATTRIBUTES.get(k, k): v for k, v in ref.items()})

    @staticmethod
    def uid_of(ref: Any) -> Any:
        return ref.uid


def _flatten(objs: Any) -> Iterator[Any]:
    """ The objects one by one, out of any nesting of iterables; pykube objects as their dicts. """
    if objs is None:
        return
    if isinstance(objs, MutableMapping) or _client_of(objs) is not None:
        yield objs
    elif isinstance(getattr(objs, 'obj', None), MutableMapping):  # pykube-ng's APIObject
        yield objs.obj
    elif isinstance(objs, Iterable) and not isinstance(objs, (str, bytes, Mapping)):
        for item in objs:
            yield from _flatten(item)
    else:
        yield objs  # refused by _metadata() with its class named


def _metadata(obj: Any) -> _DictMeta | _ModelMeta:
    if isinstance(obj, MutableMapping):
        return _DictMeta(obj)
    client = _client_of(obj)
    if client is not None:
        return _ModelMeta(obj, client)
    raise TypeError(f"K8s object class is not supported: {type(obj)}")


def _each(objs: Any) -> Iterator[_DictMeta | _ModelMeta]:
    for obj in _flatten(objs):
        yield _metadata(obj)


def _field_path(spec: Any) -> tuple[str, ...]:
    return tuple(spec.split('.')) if isinstance(spec, str) else tuple(spec)


def _descend(obj: Any, path: tuple[str, ...]) -> Any:
    """
    The sub-object at the path of API field names, or :class:`LookupError` if a field on the way
    is missing (such paths are skipped, not created). In a model, a field is the attribute that
    its ``attribute_map`` maps to that name (``jobTemplate`` → ``job_template``), and anything
    without the attribute (e.g. ``None``) is a missing field; in a dict, something on the way that
    is not a dict is a :class:`TypeError`.
    """
    in_model = _client_of(obj) is not None
    for step in path:
        if isinstance(obj, Mapping):
            if step not in obj:
                raise LookupError(step)
            obj = obj[step]
        elif in_model and not isinstance(obj, (str, bytes, list, tuple, set, frozenset)):
            by_api_name = {api: attr for attr, api in (getattr(obj, 'attribute_map', None) or {}).items()}
            try:
                obj = getattr(obj, by_api_name.get(step, step))
            except AttributeError:
                raise LookupError(step) from None
        else:
            raise TypeError(f"The structure has no field {step!r}: {obj!r}")
    return obj


def _with_nested(objs: Any, nested: Iterable[Any]) -> Iterator[Any]:
    paths = [_field_path(spec) for spec in nested]
    for obj in _flatten(objs):
        yield obj
        for path in paths:
            try:
                yield _descend(obj, path)
            except LookupError:
                pass


def _owner(owner: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if owner is not None:
        return owner
    cause = calls.current_cause_var.get(None)
    if cause is None or cause.body is None:
        raise LookupError("Owner must be set explicitly, since running outside of a handler.")
    return cause.body


def _owner_meta(field: str, default: Any) -> Any:
    return (_owner(None).get('metadata') or {}).get(field, default)


def build_object_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    """``apiVersion``, ``kind``, ``name``, ``uid`` and ``namespace`` of an object (the ones it has)."""
    meta = body.get('metadata') or {}
    ref = {'apiVersion': body.get('apiVersion'), 'kind': body.get('kind'),
           'name': meta.get('name'), 'uid': meta.get('uid'), 'namespace': meta.get('namespace')}
    return {key: value for key, value in ref.items() if value}


def build_owner_reference(body: Mapping[str, Any], *, controller: bool | None = True,
                          block_owner_deletion: bool | None = True) -> dict[str, Any]:
    """An entry for another object's ``metadata.ownerReferences`` (without the fields that are ``None``)."""
    meta = body.get('metadata') or {}
    ref = {'controller': controller, 'blockOwnerDeletion': block_owner_deletion,
           'apiVersion': body.get('apiVersion'), 'kind': body.get('kind'),
           'name': meta.get('name'), 'uid': meta.get('uid')}
    return {key: value for key, value in ref.items() if value is not None}


def append_owner_reference(objs: Any, owner: Mapping[str, Any] | None = None, *,
                           controller: bool | None = True, block_owner_deletion: bool | None = True) -> None:
    """Make the owner an owner of the objects (once; known by its uid)."""
    ref = build_owner_reference(_owner(owner), controller=controller, block_owner_deletion=block_owner_deletion)
    for meta in _each(objs):
        refs = meta.collection('ownerReferences', [])
        if all(meta.uid_of(existing) != ref.get('uid') for existing in refs):
            refs.append(meta.owner_reference(ref))


def remove_owner_reference(objs: Any, owner: Mapping[str, Any] | None = None) -> None:
    """Drop the owner from the objects' owner references."""
    uid = (_owner(owner).get('metadata') or {}).get('uid')
    for meta in _each(objs):
        refs = meta.collection('ownerReferences', [])
        refs[:] = [ref for ref in refs if meta.uid_of(ref) != uid]


def label(objs: Any, labels: Mapping[str, Any] | _FromOwner | None = _OWNER, *, forced: bool = False,
          nested: str | Iterable[Any] | None = None, force: bool | None = None) -> None:
    """Put the labels (default or ``None``: the owner's) on the objects and their ``nested`` templates."""
    if force is not None:
        warnings.warn("force= is deprecated in kopf.label(); use forced=...", DeprecationWarning, stacklevel=2)
        forced = force
    values = _owner_meta('labels', {}) if labels is None or isinstance(labels, _FromOwner) else labels
    paths = [nested] if isinstance(nested, str) else list(nested or ())
    for obj in _with_nested(objs, paths):
        existing = _metadata(obj).collection('labels', {})
        for key, value in values.items():
            if forced or key not in existing:
                existing[key] = value


def harmonize_naming(objs: Any, name: str | None | _FromOwner = _OWNER, *,
                     forced: bool = False, strict: bool = False) -> None:
    """Name unnamed objects after the owner: ``generateName: <name>-`` (``strict``: ``name: <name>``)."""
    if isinstance(name, _FromOwner):
        name = _owner_meta('name', None)
    if name is None:
        raise LookupError("Name must be set explicitly: couldn't find it automatically.")
    for meta in _each(objs):
        if forced or not (meta.has('name') or meta.has('generateName')):
            kept, dropped = ('name', 'generateName') if strict else ('generateName', 'name')
            meta.set(kept, name if strict else f'{name}-')
            if meta.has(dropped):
                meta.unset(dropped)


def adjust_namespace(objs: Any, namespace: str | None | _FromOwner = _OWNER, *, forced: bool = False) -> None:
    """Put the objects into the owner's namespace, unless they have one (or ``forced``)."""
    if isinstance(namespace, _FromOwner):
        namespace = _owner_meta('namespace', None)
    for meta in _each(objs):
        if forced or meta.get('namespace') is None:
            meta.set('namespace', namespace)


def adopt(objs: Any, owner: Mapping[str, Any] | None = None, *, forced: bool = False,
          strict: bool = False, nested: str | Iterable[Any] | None = None) -> None:
    """Make the objects the owner's children: owner reference, name, namespace, labels."""
    owner = _owner(owner)
    meta = owner.get('metadata') or {}
    append_owner_reference(objs, owner=owner)
    harmonize_naming(objs, name=meta.get('name'), forced=forced, strict=strict)
    adjust_namespace(objs, namespace=meta.get('namespace'), forced=forced)
    label(objs, labels=meta.get('labels') or {}, forced=forced, nested=nested)
