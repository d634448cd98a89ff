"""Kopf's internal module path ``kopf._core.engines``, for code that imports it (as Kopf's test fixtures do)."""
