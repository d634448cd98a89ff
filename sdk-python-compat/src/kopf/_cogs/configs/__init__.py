"""Kopf's internal module path ``kopf._cogs.configs``, for code that imports it (as Kopf's test fixtures do)."""
