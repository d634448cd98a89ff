"""
Kopf's storages (``settings.persistence.progress_storage`` / ``diffbase_storage``) as descriptions.

On Operon, the core keeps the handlers' progress and the last handled essence; it writes them
where, and how, these objects say. They have Kopf's constructors and attributes (``prefix``,
``verbose``, ``touch_key``, ``v1``, ``key``, ``ignored_fields``, ``storages``, and the ``field``/
``touch_field`` properties, parsed into paths with ``{name}`` filled in, as Kopf does), but none
of Kopf's storage methods: :func:`core_option` turns one into the JSON spec of the core's
``--progress-storage`` / ``--diffbase-storage``.

Kopf lets operators write storages of their own by subclassing these classes and overriding
their methods; such code cannot run in the core, so a storage whose class overrides any of Kopf's
storage methods (or that derives from the abstract bases alone) is refused (:func:`refusal`).
A subclass that only changes the constructor's defaults is fine.
"""
from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from kopf._cogs.conventions import StorageKeyFormingConvention
from kopf._cogs.views import FieldPath, FieldSpec

KOPF_PREFIX = 'kopf.zalando.org'


def _path(field: Any, name: str) -> FieldPath:
    """Kopf's reading of a storage's field: ``{name}`` filled into a string, then split at dots."""
    if isinstance(field, str):
        return tuple(field.format(name=name).split('.'))
    if isinstance(field, (list, tuple)):
        return tuple(field)
    if field is None:
        return ()
    raise ValueError(f"Field must be either a str, or a list/tuple. Got {field!r}")


def _attrs(obj: object) -> str:
    shown = {key.lstrip('_'): value for key, value in vars(obj).items()}
    return ', '.join(f'{key}={value!r}' for key, value in shown.items())


class ProgressStorage:
    """Where the handlers' progress is kept: the base of all progress storages."""

    def __repr__(self) -> str:
        return f'{type(self).__name__}({_attrs(self)})'


class AnnotationsProgressStorage(StorageKeyFormingConvention, ProgressStorage):
    """One annotation per handler: ``<prefix>/<handler id>``, a compact JSON record."""

    def __init__(self, *, prefix: str = KOPF_PREFIX, verbose: bool = False,
                 touch_key: str = 'touch-dummy', v1: bool = True) -> None:
        super().__init__(prefix=prefix, v1=v1)
        self.verbose = verbose
        self.touch_key = touch_key


class StatusProgressStorage(ProgressStorage):
    """One dict per handler under ``status.<name>.progress``; the touch field ``status.<name>.dummy``."""

    def __init__(self, *, name: str = 'kopf', field: FieldSpec = 'status.{name}.progress',
                 touch_field: FieldSpec = 'status.{name}.dummy') -> None:
        super().__init__()
        self._name = name
        self._field = _path(field, name)
        self._touch_field = _path(touch_field, name)

    @property
    def field(self) -> FieldPath:
        return self._field

    @field.setter
    def field(self, field: FieldSpec) -> None:
        self._field = _path(field, self._name)

    @property
    def touch_field(self) -> FieldPath:
        return self._touch_field

    @touch_field.setter
    def touch_field(self, field: FieldSpec) -> None:
        self._touch_field = _path(field, self._name)


class NoWriteStatusProgressStorage(StatusProgressStorage):
    """The status part of :class:`SmartProgressStorage`: read and purged, never written (Kopf 1.44+)."""


class MultiProgressStorage(ProgressStorage):
    """Several storages: read from the first that has a record, written to and purged in all."""

    def __init__(self, storages: Collection[ProgressStorage]) -> None:
        super().__init__()
        self.storages = storages


class SmartProgressStorage(MultiProgressStorage):
    """Kopf's default: the annotations, then the status (which is only read and purged)."""

    def __init__(self, *, name: str = 'kopf', field: FieldSpec = 'status.{name}.progress',
                 touch_key: str = 'touch-dummy', touch_field: FieldSpec = 'status.{name}.dummy',
                 prefix: str = KOPF_PREFIX, v1: bool = True, verbose: bool = False) -> None:
        super().__init__([
            AnnotationsProgressStorage(prefix=prefix, verbose=verbose, touch_key=touch_key, v1=v1),
            NoWriteStatusProgressStorage(name=name, field=field, touch_field=touch_field),
        ])


class DiffBaseStorage:
    """Where the last handled essence is kept: the base of all diff-base storages."""

    def __init__(self, ignored_fields: Iterable[FieldSpec] | None = None) -> None:
        super().__init__()
        self.ignored_fields: list[FieldSpec] = list(ignored_fields or [])

    def __repr__(self) -> str:
        return f'{type(self).__name__}({_attrs(self)})'


class AnnotationsDiffBaseStorage(StorageKeyFormingConvention, DiffBaseStorage):
    """The essence as compact JSON (and a newline) in the annotation ``<prefix>/<key>``."""

    def __init__(self, *, prefix: str = KOPF_PREFIX, key: str = 'last-handled-configuration',
                 ignored_fields: Iterable[FieldSpec] | None = None, v1: bool = True) -> None:
        StorageKeyFormingConvention.__init__(self, prefix=prefix, v1=v1)
        DiffBaseStorage.__init__(self, ignored_fields=ignored_fields)
        self.key = key


class StatusDiffBaseStorage(DiffBaseStorage):
    """The essence as compact JSON in ``status.<name>.last-handled-configuration``."""

    def __init__(self, *, name: str = 'kopf', field: FieldSpec = 'status.{name}.last-handled-configuration',
                 ignored_fields: Iterable[FieldSpec] | None = None) -> None:
        super().__init__(ignored_fields=ignored_fields)
        self._name = name
        self._field = _path(field, name)

    @property
    def field(self) -> FieldPath:
        return self._field

    @field.setter
    def field(self, field: FieldSpec) -> None:
        self._field = _path(field, self._name)


class MultiDiffBaseStorage(DiffBaseStorage):
    """Several storages: read from the first that has an essence, written to all."""

    def __init__(self, storages: Collection[DiffBaseStorage]) -> None:
        super().__init__()
        self.storages = storages


# -- refusing custom storages ------------------------------------------------------------------

OURS = frozenset({
    ProgressStorage, AnnotationsProgressStorage, StatusProgressStorage, NoWriteStatusProgressStorage,
    MultiProgressStorage, SmartProgressStorage, DiffBaseStorage, AnnotationsDiffBaseStorage,
    StatusDiffBaseStorage, MultiDiffBaseStorage, StorageKeyFormingConvention, object,
})
ABSTRACT = frozenset({ProgressStorage, DiffBaseStorage})

# The methods of Kopf 1.45.2's storages and their conventions (mixins): what a custom storage
# overrides. Ours have none of them but the key-forming ones: the core does that work.
KOPF_METHODS = frozenset({
    'fetch', 'store', 'purge', 'touch', 'clear', 'flush', 'build',
    'make_keys', 'make_v1_key', 'make_v2_key', 'make_safe_key', 'make_suffix', 'mark_key',
    'remove_annotations', 'remove_empty_stanzas', '_detect_marked_prefixes', '_store_marker',
})


def _overridden(cls: type) -> list[str]:
    """The methods of Kopf's storages that the non-Operon classes of ``cls``'s MRO define."""
    found: list[str] = []
    for klass in cls.__mro__:
        if klass in OURS:
            continue
        for name, attr in vars(klass).items():
            if name.startswith('__') and name.endswith('__'):
                continue
            method = isinstance(attr, (staticmethod, classmethod)) or callable(attr)
            if method and name in KOPF_METHODS and name not in found:
                found.append(name)
    return found


def _class_name(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ in ('builtins', '__main__') else f'{cls.__module__}.{cls.__qualname__}'


def refusal(storage: object, *, base: type) -> str | None:
    """
    Why ``storage`` cannot be given to the core (``None`` if it can): not a ``base`` at all, or
    a custom storage (its class, or one inside a multi-storage, overrides Kopf's storage methods,
    or has no concrete storage of Kopf's among its bases).
    """
    if not isinstance(storage, base):
        return f"{storage!r} is not a kopf.{base.__name__}"
    cls = type(storage)
    overridden = _overridden(cls)
    if overridden:
        methods = ', '.join(f'{name}()' for name in overridden)
        return (f"{_class_name(cls)} is a custom storage: it overrides {methods}, code that cannot "
                f"run in the Operon core, which keeps the state itself; use Kopf's storage classes, "
                f"with their options")
    if not (set(cls.__mro__) & (OURS - ABSTRACT - {StorageKeyFormingConvention, object})):
        return (f"{_class_name(cls)} is a custom storage: it derives from kopf.{base.__name__} "
                f"alone, and its code cannot run in the Operon core, which keeps the state itself; "
                f"use Kopf's storage classes, with their options")
    for sub in getattr(storage, 'storages', None) or ():
        problem = refusal(sub, base=base)
        if problem is not None:
            return problem
    return None


class CustomStorageError(ValueError):
    """A storage that the core cannot be given; the message says which and why."""


# -- the core's options --------------------------------------------------------------------------

def _field(path: Sequence[str]) -> str | list[str]:
    """A field path as the core's spec takes it: dotted when that is unambiguous, else a list."""
    parts = [str(part) for part in path]
    return '.'.join(parts) if parts and not any('.' in part for part in parts) else parts


def _ignored(fields: Iterable[Any]) -> list[str | list[str]]:
    result: list[str | list[str]] = []
    for field in fields:
        if isinstance(field, str):
            result.append(field)
        elif isinstance(field, (list, tuple)) and all(isinstance(part, str) for part in field):
            result.append(list(field))
        else:
            raise CustomStorageError(f"ignored_fields must be strings or lists of strings; got {field!r}")
    return result


def progress_spec(storage: object) -> dict[str, Any]:
    """The JSON spec of the core's ``--progress-storage`` for a progress storage."""
    problem = refusal(storage, base=ProgressStorage)
    if problem is not None:
        raise CustomStorageError(problem)
    if isinstance(storage, AnnotationsProgressStorage):
        return {'annotations': {'prefix': storage.prefix, 'verbose': bool(storage.verbose),
                                'touch_key': storage.touch_key, 'v1': bool(storage.v1)}}
    if isinstance(storage, StatusProgressStorage):
        return {'status': {'field': _field(storage.field), 'touch_field': _field(storage.touch_field),
                           'write': not isinstance(storage, NoWriteStatusProgressStorage)}}
    if isinstance(storage, MultiProgressStorage):
        return {'multi': [progress_spec(sub) for sub in storage.storages]}
    raise CustomStorageError(f"{_class_name(type(storage))} is not one of Kopf's progress storages")


def diffbase_spec(storage: object) -> dict[str, Any]:
    """The JSON spec of the core's ``--diffbase-storage`` for a diff-base storage."""
    problem = refusal(storage, base=DiffBaseStorage)
    if problem is not None:
        raise CustomStorageError(problem)
    assert isinstance(storage, DiffBaseStorage)
    ignored = _ignored(storage.ignored_fields)
    if isinstance(storage, AnnotationsDiffBaseStorage):
        return {'annotations': {'prefix': storage.prefix, 'key': storage.key, 'v1': bool(storage.v1),
                                'ignored_fields': ignored}}
    if isinstance(storage, StatusDiffBaseStorage):
        return {'status': {'field': _field(storage.field), 'ignored_fields': ignored}}
    if isinstance(storage, MultiDiffBaseStorage):
        # Kopf drops the multi-storage's own ignored fields before each storage drops its own:
        # the same as each storage dropping both.
        return _also_ignoring({'multi': [diffbase_spec(sub) for sub in storage.storages]}, ignored)
    raise CustomStorageError(f"{_class_name(type(storage))} is not one of Kopf's diff-base storages")


def _also_ignoring(spec: dict[str, Any], ignored: list[str | list[str]]) -> dict[str, Any]:
    if ignored:
        for kind, options in spec.items():
            if kind == 'multi':
                for sub in options:
                    _also_ignoring(sub, ignored)
            else:
                options['ignored_fields'] = [*ignored, *options['ignored_fields']]
    return spec


def core_option(spec: dict[str, Any]) -> str:
    """A spec as the core's option takes it: compact JSON."""
    return json.dumps(spec, separators=(',', ':'), ensure_ascii=False)


def first_prefix(*storages: object) -> str | None:
    """The first annotations prefix in these storages (multi-storages searched in order)."""
    for storage in storages:
        if isinstance(storage, (AnnotationsProgressStorage, AnnotationsDiffBaseStorage)):
            return storage.prefix
        found = first_prefix(*(getattr(storage, 'storages', None) or ()))
        if found is not None:
            return found
    return None
