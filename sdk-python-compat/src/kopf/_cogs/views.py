"""
Live, lenient views of Kubernetes objects, and the structures handlers write into.

A handler gets ``body``, ``spec``, ``meta``, ``status``, ``labels``, ``annotations``: read-only
mappings that look up their data in the raw object on every access (so they stay current if the
object is replaced underneath) and read as empty where the object has nothing. It writes into
``patch``: a plain dict of a JSON merge patch with the same sections as attributes, which appear
in the dict only once something is written into them.
"""
from __future__ import annotations

import copy
import enum
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any, NamedTuple, TypeAlias

RawBody: TypeAlias = MutableMapping[str, Any]
RawMeta: TypeAlias = Mapping[str, Any]
RawEvent: TypeAlias = Mapping[str, Any]
RawEventType: TypeAlias = str
BodyEssence: TypeAlias = Mapping[str, Any]
FieldPath: TypeAlias = tuple[str, ...]
FieldSpec: TypeAlias = 'str | Sequence[str] | list[str]'
PatchFn: TypeAlias = Callable[[RawBody], None]
HandlerId: TypeAlias = str
Labels: TypeAlias = Mapping[str, str]
Annotations: TypeAlias = Mapping[str, str]
ObjectReference: TypeAlias = dict[str, Any]
OwnerReference: TypeAlias = dict[str, Any]


def split_field(field: Any) -> FieldPath | None:
    """``'spec.x.y'`` or ``['spec', 'x']`` → ``('spec', 'x', 'y')``; ``None`` stays ``None``."""
    if field is None:
        return None
    if isinstance(field, str):
        return tuple(part for part in field.split('.') if part)
    if isinstance(field, (list, tuple)):
        return tuple(field)
    raise ValueError(f"Field must be a string or a sequence of strings, got {field!r}.")


def dig(data: Any, path: Iterable[str], default: Any = None) -> Any:
    """The value at ``path`` inside nested mappings, or ``default`` if any step is missing."""
    node = data
    for step in path:
        if not isinstance(node, Mapping) or step not in node:
            return default
        node = node[step]
    return node


def plant(data: MutableMapping[str, Any], path: Sequence[str], value: Any) -> None:
    """Put ``value`` at ``path``, creating the intermediate dicts as needed."""
    if not path:
        raise ValueError("Cannot plant a value at an empty path.")
    *parents, leaf = path
    node = data
    for step in parents:
        node = node.setdefault(step, {})
    node[leaf] = value


class _Live(Mapping[str, Any]):
    """A read-only view of ``path`` in ``source``; missing or non-mapping data read as ``{}``."""

    def __init__(self, source: Any, path: FieldPath = ()) -> None:
        self._source = source
        self._path = path

    def _resolve(self) -> Mapping[str, Any]:
        root = self._source._resolve() if isinstance(self._source, _Live) else self._source
        found = dig(root, self._path, {})
        return found if isinstance(found, Mapping) else {}

    def __getitem__(self, key: str) -> Any:
        return self._resolve()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolve())

    def __len__(self) -> int:
        return len(self._resolve())

    def __repr__(self) -> str:
        return repr(dict(self._resolve()))

    def __eq__(self, other: object) -> bool:
        return dict(self._resolve()) == other if isinstance(other, Mapping) else NotImplemented

    __hash__ = None  # type: ignore[assignment]


class Spec(_Live):
    """``body['spec']``, live and lenient."""


class Status(_Live):
    """``body['status']``, live and lenient."""


class Meta(_Live):
    """``body['metadata']`` with Kubernetes' common fields as attributes."""

    @property
    def labels(self) -> Mapping[str, str]:
        return _Live(self, ('labels',))

    @property
    def annotations(self) -> Mapping[str, str]:
        return _Live(self, ('annotations',))

    @property
    def uid(self) -> str | None:
        return self.get('uid')

    @property
    def name(self) -> str | None:
        return self.get('name')

    @property
    def namespace(self) -> str | None:
        return self.get('namespace')

    @property
    def creation_timestamp(self) -> str | None:
        return self.get('creationTimestamp')

    @property
    def deletion_timestamp(self) -> str | None:
        return self.get('deletionTimestamp')


class Body(_Live):
    """The whole object, with ``.spec``, ``.meta``/``.metadata`` and ``.status`` as live views."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        super().__init__(raw)

    @property
    def metadata(self) -> Meta:
        return Meta(self, ('metadata',))

    meta = metadata

    @property
    def spec(self) -> Spec:
        return Spec(self, ('spec',))

    @property
    def status(self) -> Status:
        return Status(self, ('status',))


class _Section(MutableMapping[str, Any]):
    """A writable section of a patch: exists in the patch only once something is written."""

    def __init__(self, owner: MutableMapping[str, Any], path: FieldPath) -> None:
        self._owner = owner
        self._path = path

    def _node(self, create: bool) -> MutableMapping[str, Any] | None:
        node: Any = self._owner
        for step in self._path:
            if not isinstance(node, MutableMapping):
                return None
            if step not in node or node[step] is None:
                if not create:
                    return None
                node[step] = {}
            node = node[step]
        return node if isinstance(node, MutableMapping) else None

    def __getitem__(self, key: str) -> Any:
        node = self._node(create=False)
        if node is None:
            raise KeyError(key)
        return node[key]

    def __setitem__(self, key: str, value: Any) -> None:
        node = self._node(create=True)
        assert node is not None, f"The patch has a non-mapping at {self._path!r}."
        node[key] = value

    def __delitem__(self, key: str) -> None:
        node = self._node(create=False)
        if node is None:
            raise KeyError(key)
        del node[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._node(create=False) or {})

    def __len__(self) -> int:
        return len(self._node(create=False) or {})

    def __repr__(self) -> str:
        return repr(dict(self._node(create=False) or {}))


class _MetaSection(_Section):
    @property
    def labels(self) -> _Section:
        return _Section(self._owner, self._path + ('labels',))

    @property
    def annotations(self) -> _Section:
        return _Section(self._owner, self._path + ('annotations',))


class Patch(dict[str, Any]):
    """
    A JSON merge patch for the handled object (``None`` deletes a key), plus ``.fns``:
    functions that transform the object for changes a merge patch cannot express.
    """

    def __init__(self, src: Mapping[str, Any] | None = None, *,
                 body: Mapping[str, Any] | None = None, fns: Iterable[PatchFn] = ()) -> None:
        super().__init__(src or {})
        self._reference = body
        self.fns: list[PatchFn] = list(getattr(src, 'fns', [])) + list(fns)

    def __repr__(self) -> str:
        extra = f", fns={self.fns!r}" if self.fns else ''
        return f"Patch({dict(self)!r}{extra})"

    def __bool__(self) -> bool:
        return bool(len(self)) or bool(self.fns)

    def clear(self) -> None:
        super().clear()
        self.fns.clear()

    @property
    def metadata(self) -> _MetaSection:
        return _MetaSection(self, ('metadata',))

    meta = metadata

    @property
    def spec(self) -> _Section:
        return _Section(self, ('spec',))

    @property
    def status(self) -> _Section:
        return _Section(self, ('status',))

    def as_merge_patch(self, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """
        The one merge patch to send: the dict itself, or --- with ``.fns`` --- the difference
        between the reference object and a copy of it with the dict and then the functions
        applied (lists are replaced as a whole).

        # Errors
        :class:`ValueError` if there are ``.fns`` but no reference object.
        """
        if not self.fns:
            return copy.deepcopy(dict(self))
        reference = body if body is not None else self._reference
        if reference is None:
            raise ValueError("patch.fns need the object itself to be applied to.")
        before = _unwrap(reference)
        after = copy.deepcopy(before)
        merge_into(after, dict(self))
        for fn in self.fns:
            fn(after)
        return merge_difference(before, after)


def _unwrap(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def merge_into(target: MutableMapping[str, Any], patch: Mapping[str, Any]) -> None:
    """Apply an RFC 7386 merge patch in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping):
            current = target.get(key)
            if not isinstance(current, MutableMapping):
                current = target[key] = {}
            merge_into(current, value)
        else:
            target[key] = copy.deepcopy(value)


def merge_difference(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns ``before`` into ``after``."""
    result: dict[str, Any] = {}
    for key in before.keys() - after.keys():
        result[key] = None
    for key, new in after.items():
        old = before.get(key, _NOTHING)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            nested = merge_difference(old, new)
            if nested:
                result[key] = nested
        elif old is _NOTHING or old != new:
            result[key] = copy.deepcopy(new)
    return result


_NOTHING = object()


class Memo(dict[Any, Any]):
    """A dict whose keys are also attributes: ``memo.x`` is ``memo['x']``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"Memo has no attribute {name!r}.") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(f"Memo has no attribute {name!r}.") from None


# -- diffs ----------------------------------------------------------------------------------------

class DiffOperation(str, enum.Enum):
    ADD = 'add'
    CHANGE = 'change'
    REMOVE = 'remove'

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return repr(self.value)


class DiffItem(NamedTuple):
    """One change: ``(operation, field path, old value, new value)``."""
    operation: DiffOperation
    field: FieldPath
    old: Any
    new: Any

    @property
    def op(self) -> DiffOperation:
        return self.operation

    def __repr__(self) -> str:
        return repr(tuple(self))


class Diff(Sequence[DiffItem]):
    """An ordered sequence of changes; compares equal to a list of plain 4-tuples."""

    def __init__(self, items: Iterable[Any] = ()) -> None:
        self._items = tuple(
            DiffItem(DiffOperation(op), tuple(path), old, new) for op, path, old, new in items
        )

    def __getitem__(self, index: Any) -> Any:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return repr(list(self._items))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(tuple(a) == tuple(b) for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]


EMPTY_DIFF = Diff()

