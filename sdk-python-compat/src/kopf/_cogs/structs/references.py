"""Kopf's ``kopf._cogs.structs.references``: resources and selectors, from :mod:`kopf._cogs.refs`."""
from kopf._cogs.refs import EVERYTHING, Marker, NamespacePattern, Resource, Selector

__all__ = ['EVERYTHING', 'Marker', 'NamespacePattern', 'Resource', 'Selector']
