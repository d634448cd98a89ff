"""
Parent-child helpers: ``kopf.adopt`` and its parts (owner references, labels, naming, namespace).

Children are raw dicts (or objects that keep one in ``.obj``, as pykube-ng's do), one or many.
Without an explicit owner, the object being handled in the current handler's call is the owner.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from kopf._core import calls


def _each(objs: Any) -> Iterator[MutableMapping[str, Any]]:
    if isinstance(objs, MutableMapping):
        yield objs
    elif hasattr(objs, 'obj') and isinstance(objs.obj, MutableMapping):
        yield objs.obj
    elif isinstance(objs, Iterable) and not isinstance(objs, (str, bytes, Mapping)):
        for item in objs:
            yield from _each(item)
    else:
        raise TypeError(f"K8s objects must be dicts or lists of dicts, got {type(objs)!r}.")


def _meta(obj: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return obj.setdefault('metadata', {})  # type: ignore[no-any-return]


def _owner(owner: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if owner is not None:
        return owner
    cause = calls.current_cause_var.get(None)
    if cause is None or cause.body is None:
        raise LookupError("Owner must be set explicitly, since running outside of a handler.")
    return cause.body


def build_object_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    """``apiVersion``, ``kind``, ``name``, ``uid`` (and ``namespace``, if any) of an object."""
    meta = body.get('metadata') or {}
    ref = {'apiVersion': body.get('apiVersion'), 'kind': body.get('kind'),
           'name': meta.get('name'), 'uid': meta.get('uid')}
    if meta.get('namespace'):
        ref['namespace'] = meta['namespace']
    return ref


def build_owner_reference(body: Mapping[str, Any], *, controller: bool | None = True,
                          block_owner_deletion: bool | None = True) -> dict[str, Any]:
    """An entry for another object's ``metadata.ownerReferences``."""
    meta = body.get('metadata') or {}
    return {'controller': controller, 'blockOwnerDeletion': block_owner_deletion,
            'apiVersion': body.get('apiVersion'), 'kind': body.get('kind'),
            'name': meta.get('name'), 'uid': meta.get('uid')}


def append_owner_reference(objs: Any, owner: Mapping[str, Any] | None = None, *,
                           controller: bool | None = True, block_owner_deletion: bool | None = True) -> None:
    """Make the owner an owner of the objects (once; known by its uid)."""
    ref = build_owner_reference(_owner(owner), controller=controller, block_owner_deletion=block_owner_deletion)
    for obj in _each(objs):
        refs = _meta(obj).setdefault('ownerReferences', [])
        if all(existing.get('uid') != ref['uid'] for existing in refs):
            refs.append(dict(ref))


def remove_owner_reference(objs: Any, owner: Mapping[str, Any] | None = None) -> None:
    """Drop the owner from the objects' owner references."""
    uid = (_owner(owner).get('metadata') or {}).get('uid')
    for obj in _each(objs):
        meta = _meta(obj)
        meta['ownerReferences'] = [r for r in meta.get('ownerReferences', []) if r.get('uid') != uid]


def label(objs: Any, labels: Mapping[str, Any] | None = None, *, forced: bool = False,
          nested: str | Iterable[str] | None = None, force: bool | None = None) -> None:
    """Put the labels (default: the owner's) on the objects and on their ``nested`` templates."""
    forced = forced if force is None else force
    labels = labels if labels is not None else (_owner(None).get('metadata') or {}).get('labels') or {}
    paths = [nested] if isinstance(nested, str) else list(nested or ())
    for obj in _each(objs):
        targets = [_meta(obj)]
        for path in paths:
            node: MutableMapping[str, Any] = obj
            for step in path.split('.'):
                node = node.setdefault(step, {})
            targets.append(node.setdefault('metadata', {}))
        for meta in targets:
            existing = meta.setdefault('labels', {})
            for key, value in labels.items():
                if forced or key not in existing:
                    existing[key] = value


def harmonize_naming(objs: Any, name: str | None = None, *, forced: bool = False, strict: bool = False) -> None:
    """Name unnamed objects after the owner: ``generateName: <name>-`` (``strict``: ``name: <name>``)."""
    name = name if name is not None else (_owner(None).get('metadata') or {}).get('name')
    for obj in _each(objs):
        meta = _meta(obj)
        if not forced and (meta.get('name') or meta.get('generateName')):
            continue
        if strict:
            meta.pop('generateName', None)
            meta['name'] = name
        else:
            meta.pop('name', None)
            meta['generateName'] = f'{name}-'


def adjust_namespace(objs: Any, namespace: str | None = None, *, forced: bool = False) -> None:
    """Put the objects into the owner's namespace, unless they have one (or ``forced``)."""
    namespace = namespace if namespace is not None else (_owner(None).get('metadata') or {}).get('namespace')
    for obj in _each(objs):
        meta = _meta(obj)
        if forced or not meta.get('namespace'):
            if namespace is None:
                meta.pop('namespace', None)
            else:
                meta['namespace'] = namespace


def adopt(objs: Any, owner: Mapping[str, Any] | None = None, *, forced: bool = False,
          strict: bool = False, nested: str | Iterable[str] | None = None) -> None:
    """Make the objects the owner's children: owner reference, name, namespace, labels."""
    owner = _owner(owner)
    meta = owner.get('metadata') or {}
    append_owner_reference(objs, owner=owner)
    harmonize_naming(objs, name=meta.get('name'), forced=forced, strict=strict)
    adjust_namespace(objs, namespace=meta.get('namespace'), forced=forced)
    label(objs, labels=meta.get('labels') or {}, forced=forced, nested=nested)
