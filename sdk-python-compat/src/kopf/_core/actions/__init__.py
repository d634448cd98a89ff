"""Kopf's internal module path ``kopf._core.actions``, for code that imports it (as Kopf's test fixtures do)."""
