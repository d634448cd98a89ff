"""A tiny Kopf operator for the dashboard's end-to-end test (tests/tests/dashboard.rs).

Run by real Kopf from PyPI (``python -m kopf run --standalone -n NS kopf_operator.py``); the
test then reads its progress through ``operon dashboard``. The widgets' spec scripts it:
``failTimes``/``delay`` fail ``create_fn`` temporarily, ``failPermanently`` fails it for good,
``children`` registers sub-handlers of ``parent_fn`` that fail ``childFailTimes`` times (default
once) with ``childDelay`` seconds between attempts.
"""

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.watching.server_timeout = 60


@kopf.on.create("e2e.operon.dev", "v1", "widgets")
def create_fn(spec, retry, **_):
    if spec.get("failPermanently"):
        raise kopf.PermanentError("This widget always fails.")
    if retry < spec.get("failTimes", 0):
        raise kopf.TemporaryError("Warming up, try again.", delay=spec.get("delay", 3))
    return {"created": True}


@kopf.on.create("e2e.operon.dev", "v1", "widgets")
def parent_fn(spec, **_):
    for name in spec.get("children", []):

        @kopf.subhandler(id=name)
        def child(retry, **_):
            if retry < spec.get("childFailTimes", 1):
                raise kopf.TemporaryError("The child waits.", delay=spec.get("childDelay", 2))
