"""Kopf's ``kopf._core.intents.registries``: the registries, from :mod:`kopf._core.registry`."""
from kopf._core.registry import (
    OperatorRegistry, SmartOperatorRegistry, generate_id, get_default_registry, set_default_registry,
)

__all__ = ['OperatorRegistry', 'SmartOperatorRegistry', 'generate_id', 'get_default_registry',
           'set_default_registry']
