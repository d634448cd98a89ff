"""
Which resources handlers are for: Kopf's ``Resource`` (a specific one, as the core resolved it)
and the selector that a decorator's positional and keyword arguments describe.
"""
from __future__ import annotations

import dataclasses
import enum
import fnmatch
import re
from collections.abc import Callable, Collection, Iterable
from typing import Any, TypeAlias

NamespacePattern: TypeAlias = str | re.Pattern[str]


def select_specific_namespaces(patterns: Iterable[NamespacePattern]) -> Collection[str]:
    """
    Kopf's: the patterns that are plain names (no globs, negations, lists or regular expressions),
    for when the namespaces cannot be listed.
    """
    return {pattern for pattern in patterns
            if isinstance(pattern, str) and not any(char in pattern for char in '!*?,')}


def match_namespace(name: str, pattern: NamespacePattern) -> bool:
    """
    Kopf's matching of a namespace to a pattern: a regular expression matches the whole name; a
    string is comma-separated globs (spaces ignored), ``!glob`` excludes, a leading exclusion implies
    a catch-all first, and a later inclusion re-includes only what the first glob matched.
    (The core applies the same rules to the namespaces it serves; this process needs them only for
    ``kopf freeze``/``kopf resume -n PATTERN``.)
    """
    if isinstance(pattern, re.Pattern):
        return pattern.fullmatch(name) is not None
    parts = [part.strip() for part in pattern.split(',')]
    if parts[0].startswith('!'):  # an exclusion first: all the rest is in
        parts.insert(0, '*')
    selected = in_at_first = fnmatch.fnmatch(name, parts[0])
    for part in parts[1:]:
        excluding = part.startswith('!')
        if fnmatch.fnmatch(name, part.lstrip('!') if excluding else part):
            selected = False if excluding else (selected or in_at_first)
    return selected


class Marker(enum.Enum):
    """Selects every resource (except core events), for ``kopf.on.event(kopf.EVERYTHING)``."""
    EVERYTHING = '*'

    def __repr__(self) -> str:
        return f'kopf.{self.name}'


EVERYTHING = Marker.EVERYTHING


@dataclasses.dataclass(frozen=True)
class Resource:
    """A specific API resource: group, version, plural and what the API server says of it."""
    group: str
    version: str
    plural: str
    kind: str | None = None
    singular: str | None = None
    shortcuts: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    subresources: frozenset[str] = frozenset()
    namespaced: bool | None = None
    preferred: bool = True
    verbs: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return self.name

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        return f'{self.plural}.{self.group}' if self.group else self.plural

    @property
    def api_version(self) -> str:
        return f'{self.group}/{self.version}' if self.group else self.version


# "kopfexamples.v1.kopf.dev": a dotted name whose second part looks like an API version.
_NAME_VERSION_GROUP = re.compile(r'^([^.]+)\.(v\d+(?:(?:alpha|beta)\d+)?)(?:\.(.+))?$')

_NAME_FIELDS = ('kind', 'plural', 'singular', 'shortcut', 'category', 'any_name', 'fn')


@dataclasses.dataclass(frozen=True, init=False)
class Selector:
    """
    A resource as a decorator describes it: ``('kopfexamples')``, ``('kopf.dev', 'kopfexamples')``,
    ``('kopf.dev/v1', 'kopfexamples')``, ``('kopfexamples.kopf.dev')``, ``(kind='KopfExample')``,
    ``(kopf.EVERYTHING)``, ``(lambda resource: …)`` and the like --- exactly one name in any form.
    """
    group: str | None = None
    version: str | None = None
    kind: str | None = None
    plural: str | None = None
    singular: str | None = None
    shortcut: str | None = None
    category: str | None = None
    any_name: str | Marker | None = None
    fn: Callable[[Resource], bool] | None = None

    def __init__(self, *args: Any, **names: Any) -> None:
        parsed = _parse_positional(args)
        overlap = set(parsed) & {k for k, v in names.items() if v is not None}
        if overlap:
            raise TypeError(f"Ambiguous resource specification: {sorted(overlap)} given twice.")
        unknown = set(names) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"Unknown resource selector arguments: {sorted(unknown)}")
        for field in dataclasses.fields(self):
            value = parsed.get(field.name, names.get(field.name))
            object.__setattr__(self, field.name, value)
        given = [getattr(self, name) for name in _NAME_FIELDS if getattr(self, name) is not None]
        if len(given) > 1:
            raise TypeError(f"Ambiguous resource specification with {given}")
        if not given:
            raise TypeError("Unspecific resource with no names.")
        if any(getattr(self, name) == '' for name in _NAME_FIELDS):
            raise TypeError("Names must not be empty strings; either None or specific strings.")

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        inner = ', '.join(f'{k}={v!r}' for k, v in shown.items() if v is not None)
        return f'Selector({inner})'

    @property
    def is_specific(self) -> bool:
        named = (self.kind, self.plural, self.singular, self.shortcut)
        return any(n is not None for n in named) or isinstance(self.any_name, str)


def _parse_positional(args: tuple[Any, ...]) -> dict[str, Any]:
    """The decorators' positional resource arguments as selector fields."""
    if len(args) > 3:
        raise TypeError("Too many positional arguments. Max 3 positional args are accepted.")
    if args and callable(args[0]):
        if len(args) > 1:
            raise TypeError("The callable filter cannot have any other selectors.")
        return {'fn': args[0]}
    if not args:
        return {}
    if len(args) == 3:
        return {'group': args[0], 'version': args[1], 'any_name': args[2]}
    if len(args) == 2:
        first, name = args
        if isinstance(first, str) and '/' in first:
            group, _, version = first.rpartition('/')
            return {'group': group, 'version': version, 'any_name': name}
        if first == 'v1':
            return {'group': '', 'version': 'v1', 'any_name': name}
        return {'group': first, 'any_name': name}
    only = args[0]
    if isinstance(only, str) and '.' in only:
        versioned = _NAME_VERSION_GROUP.match(only)
        if versioned:
            name, version, group = versioned.groups()
            return {'any_name': name, 'version': version, **({'group': group} if group else {})}
        name, _, group = only.partition('.')
        return {'any_name': name, 'group': group}
    return {'any_name': only}
