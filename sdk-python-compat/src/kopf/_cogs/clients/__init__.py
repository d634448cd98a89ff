"""Kopf's internal module path ``kopf._cogs.clients``, for code that imports it (as Kopf's test fixtures do)."""
