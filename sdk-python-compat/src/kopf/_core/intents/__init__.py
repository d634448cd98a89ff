"""Kopf's internal module path ``kopf._core.intents``, for code that imports it (as Kopf's test fixtures do)."""
