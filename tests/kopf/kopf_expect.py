#!/usr/bin/env python3
"""What real Kopf (PyPI ``kopf==1.45.2``) writes for given progress records and a given body.

The end-to-end tests (``tests/tests/engine.rs``) run this with the Python of
``~/.cache/operon/venv-kopf`` to get the expected annotations from Kopf's own storage classes,
never from a re-implementation. Input is one JSON object on stdin; output one JSON object on
stdout. Every part of the input is optional:

``body``
    The object as read from the API server (used for key forming and for the essence).
``prefix``
    The annotation prefix (default ``kopf.zalando.org``).
``records``
    ``{handler_id: record}`` as read from the object (decoded JSON of the annotations). Each is
    passed through Kopf's ``HandlerState.from_storage(...).for_storage()`` and stored with
    ``SmartProgressStorage.store`` -- exactly what Kopf would write for that state.
    Output: ``store`` (the merge patch Kopf produces).
``simulate``
    ``{handler_id: {"purpose": "create", "outcomes": [{"final": bool, "delay": secs|null,
    "error": "message"|null, "subrefs": [ids]}], ...}}``: a record built from scratch with
    Kopf's ``HandlerState.from_scratch(...).with_outcome(...)`` for each outcome in turn, then
    stored with ``SmartProgressStorage.store``.
    Output: ``simulated`` (``{handler_id: {"key": annotation key, "value": annotation value}}``)
    and ``simulated_patch``.
``diffbase``
    ``true``: build the essence of ``body`` as Kopf's processing does
    (``AnnotationsDiffBaseStorage.build`` then ``SmartProgressStorage.clear``) and store it with
    ``AnnotationsDiffBaseStorage.store``. Output: ``diffbase`` (the merge patch) and ``essence``.
``purge``
    ``[handler_id, ...]``: Kopf's ``SmartProgressStorage.purge`` of each id against ``body``.
    Output: ``purge`` (the merge patch).
``keys``
    ``[handler_id, ...]``: the annotation keys Kopf uses for each id (V2 first, then V1 if it
    differs). Output: ``keys`` (``{handler_id: [key, ...]}``).

Run standalone: ``echo '{"simulate": {"h": {"outcomes": [{"final": true}]}}}' | python3 kopf_expect.py``
"""
import asyncio
import datetime
import json
import sys
from typing import Any

import kopf
from kopf._cogs.structs import bodies, patches
from kopf._core.actions import execution, progression

EXPECTED_KOPF_VERSION = "1.45.2"


def _check_version() -> None:
    from importlib.metadata import version

    found = version("kopf")
    if found != EXPECTED_KOPF_VERSION:
        raise SystemExit(f"kopf=={EXPECTED_KOPF_VERSION} is required, found {found}")


def _basetime() -> datetime.datetime:
    loop = asyncio.get_running_loop()
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=loop.time())


async def main(request: dict[str, Any]) -> dict[str, Any]:
    prefix = request.get("prefix", "kopf.zalando.org")
    body = bodies.Body(request.get("body") or {})
    progress = kopf.SmartProgressStorage(prefix=prefix)
    diffbase = kopf.AnnotationsDiffBaseStorage(prefix=prefix)
    basetime = _basetime()
    answer: dict[str, Any] = {"kopf_version": EXPECTED_KOPF_VERSION}

    if "records" in request:
        patch = patches.Patch()
        for handler_id, record in request["records"].items():
            state = progression.HandlerState.from_storage(record, basetime=basetime)
            progress.store(key=handler_id, record=state.for_storage(), body=body, patch=patch)
        answer["store"] = dict(patch)

    if "simulate" in request:
        patch = patches.Patch()
        simulated = {}
        for handler_id, spec in request["simulate"].items():
            state = progression.HandlerState.from_scratch(
                basetime=basetime, purpose=spec.get("purpose", "create")
            )
            for outcome in spec.get("outcomes", []):
                error = outcome.get("error")
                final = bool(outcome.get("final"))
                exception: Exception | None = None
                if error is not None:
                    exception = (
                        kopf.PermanentError(error) if final else kopf.TemporaryError(error)
                    )
                state = state.with_outcome(
                    execution.Outcome(
                        final=final,
                        delay=outcome.get("delay"),
                        exception=exception,
                        subrefs=outcome.get("subrefs") or (),
                    )
                )
            one = patches.Patch()
            progress.store(key=handler_id, record=state.for_storage(), body=body, patch=one)
            progress.store(key=handler_id, record=state.for_storage(), body=body, patch=patch)
            annotations = dict(one).get("metadata", {}).get("annotations", {})
            key = next(iter(progress.storages[0].make_keys(handler_id, body=body)))
            simulated[handler_id] = {"key": key, "value": annotations[key]}
        answer["simulated"] = simulated
        answer["simulated_patch"] = dict(patch)

    if request.get("diffbase"):
        patch = patches.Patch()
        essence = progress.clear(essence=diffbase.build(body=body))
        diffbase.store(body=body, patch=patch, essence=essence)
        answer["diffbase"] = dict(patch)
        answer["essence"] = essence

    if "purge" in request:
        patch = patches.Patch()
        for handler_id in request["purge"]:
            progress.purge(key=handler_id, body=body, patch=patch)
        answer["purge"] = dict(patch)

    if "keys" in request:
        annotations_storage = progress.storages[0]
        answer["keys"] = {
            handler_id: list(annotations_storage.make_keys(handler_id, body=body))
            for handler_id in request["keys"]
        }

    return answer


if __name__ == "__main__":
    _check_version()
    request = json.load(sys.stdin)
    result = asyncio.run(main(request))
    json.dump(result, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")
