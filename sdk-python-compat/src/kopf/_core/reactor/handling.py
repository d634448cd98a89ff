"""
The handler service: Describe and Invoke of the operon.v1 contract, in Kopf's terms.

The core decides *when* a handler runs (causes, declarative filters, progress, retries) and
records what happened. Here, one ``Invoke`` is one call of one handler for one object, made as
Kopf makes it: the kwargs per handler type, the sub-handlers (their records come with the call,
their outcomes go back with the answer), the callback filters (``when=`` & co.), the patch, the
result, the k8s-events --- and the exception, translated into the outcome the core understands:

==========================================  ==================================================
the handler                                  the outcome
==========================================  ==================================================
returns a value                              ``success`` (the value as JSON, into status.<id>)
raises ``kopf.TemporaryError(delay=…)``      ``temporary_error`` with the delay (default 60 s)
raises ``kopf.PermanentError`` (& subclasses) ``permanent_error``
raises anything else                         ``arbitrary_error`` (``str(e)``, the class name)
has unfinished sub-handlers                  ``subhandlers_pending`` (Kopf's HandlerChildrenRetry)
is filtered out by a callback filter         ``not_matched``
==========================================  ==================================================

Index functions (``@kopf.index``) are called apart: their index lives in this process, and
their calls feed it (:meth:`OperatorBackend.invoke_index`, :mod:`kopf._core.indexing`).

Besides: ``SelectResources`` answers which discovered resources each callable resource selector
accepts; ``Outbox`` streams the events made outside handler calls to the core; ``Login`` gives
the core the login handlers' credentials (run again when the core asks after a 401 or before the
credentials expire).

# Guarantees
A handler's error never fails the call or the server: it is an outcome. The answer comes
before the call's deadline: a handler still running by then is answered as an arbitrary error
(an async handler is cancelled; a sync handler's thread cannot be, and finishes in the background).
"""
import asyncio
import copy
import dataclasses
import datetime
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from kopf._cogs import credentials, refs, settings as settings_, views
from kopf._core import calls, indexing, logs, model, posting
from kopf._core.reactor import daemons, inventory, manifests, wire
from kopf._core.registry import OperatorRegistry
from kopf._proto.operon.v1 import handler_pb2 as pb
from kopf._transport import server, tracing

logger = logging.getLogger('kopf._core.reactor.handling')

# The answer must reach the core before its deadline: stop waiting for the handler this early.
DEADLINE_MARGIN = 0.5

_REASONS: Mapping[int, model.Reason] = {
    pb.REASON_CREATE: model.Reason.CREATE,
    pb.REASON_UPDATE: model.Reason.UPDATE,
    pb.REASON_DELETE: model.Reason.DELETE,
    pb.REASON_RESUME: model.Reason.RESUME,
}

# Which handler kinds serve which reason, for ids registered under several kinds.
_KINDS_OF_REASON: Mapping[model.Reason, tuple[str, ...]] = {
    model.Reason.CREATE: ('create',), model.Reason.UPDATE: ('update', 'field'),
    model.Reason.DELETE: ('delete',), model.Reason.RESUME: ('resume',),
}


def records_of(request: pb.InvokeRequest) -> dict[str, calls.Progress]:
    """ The sub-handlers' progress as the core read it from the object. """
    now = calls.utcnow()
    return {
        record.id: calls.Progress(
            started=wire.timestamp(record.started) if record.HasField('started') else now,
            delayed=wire.timestamp(record.delayed) if record.HasField('delayed') else None,
            retries=record.retries,
            success=record.success,
            failure=record.failure,
            message=record.message or None,
        )
        for record in request.subhandlers
    }


def _pluralize(word: str) -> str:
    if word.endswith(('s', 'x', 'z', 'ch', 'sh')):
        return word + 'es'
    if word.endswith('y') and word[-2:-1] not in ('a', 'e', 'i', 'o', 'u'):
        return word[:-1] + 'ies'
    return word + 's'


def resource_of(request: pb.InvokeRequest, body: Mapping[str, Any], selector: refs.Selector | None) -> refs.Resource:
    """ The ``resource`` kwarg: as the core resolved it, or (from older cores) a guess. """
    if request.HasField('resource') and request.resource.plural:
        r = request.resource
        kind = r.kind or body.get('kind') or None
        return refs.Resource(group=r.group, version=r.version, plural=r.plural, kind=kind,
                             singular=kind.lower() if kind else None, namespaced=r.namespaced)
    return guess_resource(body, selector)


def guess_resource(body: Mapping[str, Any], selector: refs.Selector | None) -> refs.Resource:
    """
    The ``resource`` kwarg when the core does not send it: group, version & kind from the object.

    # Caveats
    The plural name is not in the object: it is taken from the handler's selector when the
    selector names the plural, or else derived from the kind (``KopfExample`` → ``kopfexamples``),
    which is right for nearly all resources, but not for all.
    """
    api_version = str(body.get('apiVersion') or '')
    group, _, version = api_version.rpartition('/')
    kind = body.get('kind')
    kind = kind if isinstance(kind, str) else None
    plural: str | None = selector.plural if selector is not None else None
    if plural is None and selector is not None and isinstance(selector.any_name, str) and kind:
        name, lower = selector.any_name, kind.lower()
        if name.startswith(lower) or (lower.endswith('y') and name.startswith(lower[:-1]) and len(name) > len(lower)):
            plural = name
    if plural is None:
        plural = _pluralize(kind.lower()) if kind else ''
    namespaced = bool(body.get('metadata', {}).get('namespace'))
    return refs.Resource(
        group=group, version=version, plural=plural,
        kind=kind, singular=kind.lower() if kind else None, namespaced=namespaced,
    )


def _indexed_resource(request: pb.InvokeRequest, handler: model.Handler) -> str:
    """
    Which resource an index call is about, to tell the objects of several resources indexed
    under one id apart: as the core resolved it, or (from older cores) as the handler names it.
    """
    if request.HasField('resource') and request.resource.plural:
        return f'{request.resource.group}/{request.resource.plural}'
    selector = manifests.resource_selector(handler.selector)
    return f'{selector.group}/{selector.name}' if selector is not None else ''


def subhandler_options(handler: model.Handler) -> pb.Options | None:
    """ The options the core needs to judge a sub-handler's outcomes; ``None`` if all are defaults. """
    if handler.errors is None and handler.backoff is None and handler.retries is None and handler.timeout is None:
        return None
    return manifests.build_options(handler)


@dataclasses.dataclass
class OperatorBackend(server.Backend):
    """
    The operator's handlers as a handler service (implements the transport's backend).
    """
    registry: OperatorRegistry
    settings: settings_.OperatorSettings
    memo: Any = dataclasses.field(default_factory=views.Memo)
    service_name: str = 'kopf'
    lifecycle: model.LifeCycleFn | None = None
    indexers: indexing.OperatorIndexers = dataclasses.field(default_factory=indexing.OperatorIndexers)
    memos: inventory.ObjectMemos = dataclasses.field(default_factory=inventory.ObjectMemos)
    login_fn: Callable[[str], Awaitable[credentials.ConnectionInfo | None]] | None = None

    # -- Describe ---------------------------------------------------------------------------------

    async def describe(self, request: pb.DescribeRequest, call: server.CallInfo) -> pb.Manifest:
        build = manifests.build_manifest(self.registry, service_name=self.service_name)
        logger.debug(f"Described {len(build.manifest.handlers)} handlers to the Operon core "
                     f"{request.core_version or '(unknown version)'}.")
        return build.manifest

    # -- Invoke -----------------------------------------------------------------------------------

    def find_handler(self, handler_id: str, reason: model.Reason | None,
                     resource: pb.ResolvedResource | None = None) -> model.Handler:
        """
        The registered handler by id; among several registrations of one id (Kopf keeps them per
        resource), the one of the call's resource and reason. A registration whose selector cannot
        resolve to the resource (:func:`manifests.resolves_to`) is the last resort; then one of the
        reason's kind; then one that surely resolves to it; then the first registered.

        # Errors
        :class:`LookupError` if there is none (a contract error: the core asked for a handler that
        the manifest did not have).
        """
        found = [handler for handler in manifests.served_handlers(self.registry) if handler.id == handler_id]
        if not found:
            raise LookupError(f"No handler with id {handler_id!r} is registered.")
        wanted = _KINDS_OF_REASON.get(reason, ()) if reason is not None else ()
        named = resource if resource is not None and resource.plural else None  # older cores: none

        def misfit(handler: model.Handler) -> tuple[bool, bool, bool]:
            fits = manifests.resolves_to(handler.selector, named) if named is not None else None
            return fits is False, handler.kind not in wanted, fits is not True

        return min(found, key=misfit)

    def memo_for(self, body: Mapping[str, Any]) -> Any:
        """ Kopf's per-object memo: a shallow copy of the operator's memo, kept per object. """
        return self.memos.recall(body, self.memo)

    def forget(self, body: Mapping[str, Any]) -> None:
        """ The object is gone: its memo is let go (:class:`inventory.ObjectMemos`). """
        self.memos.forget(body)

    def _noted(self, request: pb.InvokeRequest, raw_body: Mapping[str, Any],
               response: pb.InvokeResponse) -> pb.InvokeResponse:
        """
        The answer, once the call's end is noted: a call that shows the object gone lets its memo
        go --- an event handler's call for a DELETED watch event; a delete handler's call for an
        object being deleted that ends in success, a permanent error or "not matched" (the handler
        is done) while the object has no finalizers but ours (so the core's release of it, once
        its delete handlers are done, is its end).
        """
        meta = raw_body.get('metadata') or {}
        if request.event_type == 'DELETED':
            self.forget(raw_body)
        elif (request.reason == pb.REASON_DELETE and meta.get('deletionTimestamp')
              and response.outcome.WhichOneof('result') in ('success', 'permanent_error', 'not_matched')
              and all(f == self.settings.persistence.finalizer for f in meta.get('finalizers') or [])):
            self.forget(raw_body)
        return response

    def build_cause(self, handler: model.Handler, request: pb.InvokeRequest, raw_body: dict[str, Any]) -> calls.Cause:
        body = views.Body(raw_body)
        cause = calls.Cause(
            logger=logs.ObjectLogger(body=body, settings=self.settings),
            memo=self.memo_for(raw_body),
            indices=self.indexers.view(self.registry),
            body=body,
            patch=views.Patch(body=body),
            resource=resource_of(request, raw_body, handler.selector),
        )
        if handler.kind == 'index':
            cause.logger = logs.TerseObjectLogger(body=body, settings=self.settings)
            cause.indexing = True
            return cause
        if handler.kind == 'event':
            cause.logger = logs.LocalObjectLogger(body=body, settings=self.settings)
            cause.event_type = request.event_type or None
            return cause
        if handler.kind in ('timer', 'daemon'):
            # One call is one run of a timer. Its `stopped` flag is set when the core cancels the
            # call: the object is deleted, the timer matches no more, or the operator stops.
            spawned = model.AsyncDaemonStopped if calls.is_coroutine_fn(handler.fn) else model.DaemonStopped
            cause.stopped = spawned()
            return cause
        reason = _REASONS.get(request.reason)
        if reason is None:
            raise LookupError(f"Handler {handler.id!r} is called without a reason.")
        cause.reason = reason
        cause.initial = reason == model.Reason.RESUME
        cause.diff = views.Diff(wire.loads(request.diff_json) or [])
        cause.old = wire.loads(request.old_json)
        cause.new = wire.loads(request.new_json)
        return cause

    def matches(self, handler: model.Handler, cause: calls.Cause, request: pb.InvokeRequest) -> bool:
        """
        Kopf's full filters of the handler (the core has checked the declarative ones already).

        For handlers with ``field=``, the core sends the field's old & new values rather than the
        whole essences; they are put back at the field's path for the field filters to find them.
        """
        if not manifests.build_filters(handler).has_callback_filters:
            return True  # all is declarative, and the core has checked it.
        if cause.is_change and handler.field:
            old: dict[str, Any] | None = None
            new: dict[str, Any] | None = None
            if request.old_json:
                old = {}
                views.plant(old, handler.field, cause.old)
            if request.new_json:
                new = {}
                views.plant(new, handler.field, cause.new)
            cause = dataclasses.replace(cause, old=old, new=new)
        return calls.matches(handler, cause)

    async def invoke(self, request: pb.InvokeRequest, call: server.CallInfo) -> pb.InvokeResponse:
        reason = _REASONS.get(request.reason)
        handler = self.find_handler(request.handler_id, reason, request.resource)
        if handler.kind == 'index':
            return await self.invoke_index(handler, request, call)
        if handler.kind in ('validate', 'mutate'):
            return await self.invoke_admission(handler, request, call)
        raw_body = wire.loads(request.body_json) or {}
        if not isinstance(raw_body, dict):
            raise ValueError(f"The body of the call of {handler.id!r} is not a JSON object.")
        cause = self.build_cause(handler, request, raw_body)

        sink = posting.EventSink()
        records = calls.CallRecords(progress=records_of(request))
        started = wire.timestamp(request.started) if request.HasField('started') else calls.utcnow()
        outcome: pb.Outcome
        bindings: list[tuple[Any, Any]] = [
            (posting.event_sink_var, sink), (posting.settings_var, self.settings),
            (calls.records_var, records), (calls.lifecycle_var, self.lifecycle), (wire.call_var, call)]
        tokens = [(var, var.set(value)) for var, value in bindings]
        try:
            try:
                matched = self.matches(handler, cause, request)
            except Exception as e:
                cause.logger.error(f"Filters of {handler} failed: {e!r}")
                return self._noted(request, raw_body, pb.InvokeResponse(outcome=wire.arbitrary_outcome(e)))
            if not matched:
                not_matched = pb.Outcome(not_matched=pb.NotMatched())
                return self._noted(request, raw_body, pb.InvokeResponse(outcome=not_matched))
            outcome = await self._call(handler, cause, request.retry, started, call)
        finally:
            for var, token in reversed(tokens):
                var.reset(token)

        response = pb.InvokeResponse(outcome=outcome)
        try:
            response.patch_json = wire.patch_json(cause)
        except Exception as e:
            cause.logger.error(f"{handler}'s patch cannot be applied: {e!r}")
            response.outcome.CopyFrom(wire.arbitrary_outcome(e))
        for report in records.reports:
            response.subhandlers.append(self._subhandler_message(report, cause))
        response.events.extend(wire.event_messages(sink.close(), raw_body))
        return self._noted(request, raw_body, response)

    async def match(self, request: pb.InvokeRequest, call: server.CallInfo) -> pb.MatchResponse:
        """
        ``Match``: whether the handler's filters, declarative and callable, accept the object ---
        evaluated as in its calls (:meth:`build_cause`, :meth:`matches`), the handler not run. The
        core asks where Kopf evaluates the callbacks outside a call: before it holds its finalizer
        for a delete handler, a timer or a daemon, and before it starts a timer or a daemon.

        The core sends no old/new essences with it: for a change (a delete handler) with
        ``field=``, the field's new value is taken from the object, so that the field filters look
        at the object's field, as Kopf's do at that point. A filter that fails answers "matched"
        (the finalizer is kept rather than lost), logged as in a call. Not a call: no memo is let go.

        # Errors
        :class:`LookupError` for an unknown handler, as :meth:`invoke`.
        """
        reason = _REASONS.get(request.reason)
        handler = self.find_handler(request.handler_id, reason, request.resource)
        raw_body = wire.loads(request.body_json) or {}
        if not isinstance(raw_body, dict):
            raise ValueError(f"The body of the match of {handler.id!r} is not a JSON object.")
        if reason is not None and handler.field and not request.old_json and not request.new_json:
            missing = object()
            value = views.dig(raw_body, handler.field, missing)
            if value is not missing:
                request = pb.InvokeRequest.FromString(request.SerializeToString())
                request.new_json = wire.dumps(value)
        cause = self.build_cause(handler, request, raw_body)
        # Events that the filters send are dropped, as when a call's filters say no.
        bindings: list[tuple[Any, Any]] = [
            (posting.event_sink_var, posting.EventSink()), (posting.settings_var, self.settings),
            (calls.lifecycle_var, self.lifecycle), (wire.call_var, call)]
        tokens = [(var, var.set(value)) for var, value in bindings]
        try:
            matched = self.matches(handler, cause, request)
        except Exception as e:
            cause.logger.error(f"Filters of {handler} failed: {e!r}")
            matched = True
        finally:
            for var, token in reversed(tokens):
                var.reset(token)
        return pb.MatchResponse(matched=matched)

    async def select_resources(self, request: pb.SelectResourcesRequest,
                               call: server.CallInfo) -> pb.SelectResourcesResponse:
        """
        ``SelectResources``: which of the resources the core discovered each callable selector
        (``@kopf.on.event(lambda resource: ...)``) accepts, called with Kopf's ``Resource``. A
        callable that raises is logged and does not accept that resource (Kopf's scanning would
        fail instead; here the other resources are still served).
        """
        resources = [refs.Resource(
            group=r.group, version=r.version, plural=r.plural, kind=r.kind, singular=r.singular,
            shortcuts=frozenset(r.short_names), categories=frozenset(r.categories),
            subresources=frozenset(r.subresources), namespaced=r.namespaced, preferred=r.preferred,
            verbs=frozenset(r.verbs)) for r in request.resources]
        response = pb.SelectResourcesResponse()
        by_id = {id(h): h for h in manifests.served_handlers(self.registry)}
        for key, callable_id in manifests.callable_selectors(self.registry).items():
            handler = by_id[key]
            fn = handler.selector.fn if handler.selector is not None else None
            accepted: list[int] = []
            for i, resource in enumerate(resources):
                try:
                    if fn is not None and fn(resource):
                        accepted.append(i)
                except Exception as e:
                    logger.error(f"The resource selector of {handler.id!r} failed for {resource}: {e!r}")
            response.selections.add(callable_id=callable_id, accepted=accepted)
        return response

    async def login(self, request: pb.LoginRequest, call: server.CallInfo) -> pb.LoginResponse:
        """
        ``Login``: the login handlers' credentials as a kubeconfig, with their expiration (see
        the operator's ``_login``); empty when there are none (or no operator runs the handlers).
        """
        info = None if self.login_fn is None else await self.login_fn(request.reason or 'start')
        if info is None:
            return pb.LoginResponse()
        response = pb.LoginResponse(kubeconfig_json=wire.dumps(credentials.as_kubeconfig(info)))
        if info.expiration is not None:
            expiration = info.expiration
            if expiration.tzinfo is None:
                expiration = expiration.replace(tzinfo=datetime.timezone.utc)
            response.expiration.FromDatetime(expiration.astimezone(datetime.timezone.utc).replace(tzinfo=None))
        return response

    async def outbox(self, request: pb.OutboxRequest, call: server.CallInfo) -> AsyncIterator[pb.OutboxEvent]:
        """
        ``Outbox``: the Events made outside handler calls (:data:`posting.OUTBOX`), as they come,
        for the core to post.
        """
        logger.debug(f"The Operon core {request.core_version or ''} takes the events outside handlers.")
        async for event in posting.OUTBOX.events():
            yield pb.OutboxEvent(event=pb.Event(
                type=event.type, reason=event.reason, message=posting.shorten_message(event.message),
                involved_object_json=wire.dumps(dict(event.ref))))

    async def invoke_index(self, handler: model.Handler, request: pb.InvokeRequest,
                           call: server.CallInfo) -> pb.InvokeResponse:
        """
        One watch event of an indexed resource for one ``@kopf.index`` function (``event_type``
        "ADDED", "MODIFIED" or "DELETED", with the object), or the end of a complete listing
        ("LISTED", with ``{"namespace": NS or null, "objects": [[namespace, name], …]}``). The
        index is updated here (:mod:`kopf._core.indexing`); the answer is a success, or the error
        of the index function (or of its filters), which the core only logs.
        """
        payload = wire.loads(request.body_json) or {}
        if not isinstance(payload, dict):
            raise ValueError(f"The body of the call of {handler.id!r} is not a JSON object.")
        origin = _indexed_resource(request, handler)
        done = pb.InvokeResponse(outcome=wire.success_outcome(None))
        if request.event_type == 'LISTED':
            objects = payload.get('objects') or []
            existing = {(namespace or None, str(name)) for namespace, name in objects}
            self.indexers.relist(handler.id, origin, payload.get('namespace') or None, existing)
            return done
        meta = payload.get('metadata') or {}
        obj: indexing.ObjectKey = (origin, meta.get('namespace') or None, str(meta.get('name') or ''))
        if request.event_type == 'DELETED':
            self.indexers.forget(handler.id, obj)
            return done

        cause = self.build_cause(handler, request, payload)
        sink = posting.EventSink()
        remaining = call.time_remaining()
        timeout = None if remaining is None else max(0.01, remaining - DEADLINE_MARGIN)
        error: BaseException | None
        bindings: list[tuple[Any, Any]] = [
            (posting.event_sink_var, sink), (posting.settings_var, self.settings), (wire.call_var, call)]
        tokens = [(var, var.set(value)) for var, value in bindings]
        try:
            with tracing.handler_span(handler.id, call.metadata, attempt=1) as span:
                try:
                    error = await self.indexers.index_object(handler, cause, obj, settings=self.settings,
                                                             timeout=timeout)
                except Exception as e:
                    cause.logger.error(f"Filters of {handler} failed: {e!r}")
                    error = e
                if error is not None:
                    tracing.record_exception(span, error, error=not isinstance(error, model.TemporaryError))
                outcome = wire.success_outcome(None) if error is None else wire.outcome_of_exception(error)
                if span is not None:
                    span.set_attribute('outcome', outcome.WhichOneof('result') or '')
        finally:
            for var, token in reversed(tokens):
                var.reset(token)
        response = pb.InvokeResponse(outcome=outcome)
        response.events.extend(wire.event_messages(sink.close(), payload))
        return response

    async def invoke_admission(self, handler: model.Handler, request: pb.InvokeRequest,
                               call: server.CallInfo) -> pb.InvokeResponse:
        """
        One admission review for one ``@kopf.on.validate``/``@kopf.on.mutate`` function: the core
        serves the webhook and sends the review (``request.admission``). The function gets Kopf's
        webhook kwargs; what it raises denies the request, as in Kopf (``kopf.AdmissionError``
        with its code, which the core prefers to other errors); the ``warnings`` it appends and
        the changes to ``patch`` go back (the core turns a mutation's merge patch into the
        response's JSONPatch). Nothing is retried and no progress is stored.
        """
        raw_body = wire.loads(request.body_json) or {}
        review = wire.loads(request.admission.request_json) or {}
        if not isinstance(raw_body, dict) or not isinstance(review, dict):
            raise ValueError(f"The admission review for {handler.id!r} is not a JSON object.")
        old_json, new_json = wire.loads(request.old_json), wire.loads(request.new_json)
        operation = review.get('operation')
        body = views.Body(raw_body)
        warnings: list[str] = []
        # Kopf keeps no memo for an object that is only being created (it may never exist).
        memo = copy.copy(self.memo) if operation == 'CREATE' else self.memo_for(raw_body)
        cause = calls.Cause(
            logger=logs.LocalObjectLogger(body=body, settings=self.settings),
            memo=memo,
            indices=self.indexers.view(self.registry),
            body=body,
            patch=views.Patch(body=body),
            resource=resource_of(request, raw_body, handler.selector),
            admission=dict(
                dryrun=bool(review.get('dryRun')),
                headers=_canonical_headers(request.admission.headers),
                sslpeer=wire.loads(request.admission.sslpeer_json) or {},
                userinfo=review.get('userInfo') or {},
                warnings=warnings,
                operation=operation,
                subresource=review.get('subResource') or None,
                old=views.Body(old_json) if isinstance(old_json, dict) else None,
                new=views.Body(new_json) if isinstance(new_json, dict) else None,
                diff=views.Diff(wire.loads(request.diff_json) or []),
            ),
        )
        response = pb.InvokeResponse()
        sink = posting.EventSink()
        bindings: list[tuple[Any, Any]] = [
            (posting.event_sink_var, sink), (posting.settings_var, self.settings),
            (calls.lifecycle_var, self.lifecycle), (wire.call_var, call)]
        tokens = [(var, var.set(value)) for var, value in bindings]
        try:
            try:
                matched = self.matches(handler, cause, request)
            except Exception as e:
                cause.logger.error(f"Filters of {handler} failed: {e!r}")
                response.outcome.CopyFrom(wire.arbitrary_outcome(e))
                return response
            if not matched:
                response.outcome.CopyFrom(pb.Outcome(not_matched=pb.NotMatched()))
                return response
            response.outcome.CopyFrom(await self._call_admission(handler, cause, call, response))
        finally:
            for var, token in reversed(tokens):
                var.reset(token)
        # `kopf.info()` & co. in a webhook: posted by the core, as for the other handlers.
        response.events.extend(wire.event_messages(sink.close(), raw_body))
        response.warnings.extend(str(warning) for warning in warnings)
        if handler.kind == 'mutate' and response.outcome.WhichOneof('result') == 'success':
            try:
                response.patch_json = wire.patch_json(cause)
            except Exception as e:
                cause.logger.error(f"{handler}'s patch cannot be applied: {e!r}")
                response.outcome.CopyFrom(wire.arbitrary_outcome(e))
        return response

    async def _call_admission(self, handler: model.Handler, cause: calls.Cause, call: server.CallInfo,
                              response: pb.InvokeResponse) -> pb.Outcome:
        """ The function's outcome; an ``AdmissionError``'s code goes into ``response``. """
        now = calls.utcnow()
        remaining = call.time_remaining()
        timeout = None if remaining is None else max(0.01, remaining - DEADLINE_MARGIN)
        label = f"Webhook {handler.id!r}"  # Kopf's name for webhook handlers in its log lines
        with tracing.handler_span(handler.id, call.metadata, attempt=1) as span:
            try:
                await asyncio.wait_for(calls.invoke(handler, cause, retry=0, started=now, settings=self.settings,
                                                    with_subhandlers=False), timeout=timeout)
            except asyncio.TimeoutError as e:
                message = f"{label} did not finish within the webhook's time ({timeout or 0:.1f} seconds)."
                tracing.record_exception(span, e)
                cause.logger.error(message)
                return pb.Outcome(arbitrary_error=pb.ArbitraryError(message=message, error_type='TimeoutError'))
            except asyncio.CancelledError:
                raise
            except BaseException as e:  # any error denies the request, as in Kopf.
                tracing.record_exception(span, e)
                text = str(e) or repr(e)
                if isinstance(e, model.AdmissionError):
                    response.admission_code = int(e.code or 0)
                if isinstance(e, model.PermanentError):
                    cause.logger.error(f"{label} failed permanently: {text}")
                    return pb.Outcome(permanent_error=pb.PermanentError(message=text))
                if isinstance(e, model.TemporaryError):
                    cause.logger.error(f"{label} failed temporarily: {text}")
                    return pb.Outcome(temporary_error=pb.TemporaryError(message=text))
                calls.log_traceback(cause.logger, handler, e)
                return pb.Outcome(arbitrary_error=pb.ArbitraryError(message=text, error_type=type(e).__name__))
            cause.logger.info(f"{label} succeeded.")
            if span is not None:
                span.set_attribute('outcome', 'success')
            return wire.success_outcome(None)

    def daemon(self, requests: AsyncIterator[pb.DaemonRequest],
               call: server.CallInfo) -> AsyncIterator[pb.DaemonResponse]:
        """One run of a daemon for one object, for as long as the core's call lasts."""
        return daemons.serve(self, requests, call)

    def _subhandler_message(self, report: calls.SubhandlerReport, cause: calls.Cause) -> pb.SubhandlerOutcome:
        message = pb.SubhandlerOutcome(id=report.handler.id)
        options = subhandler_options(report.handler)
        if options is not None:
            message.options.CopyFrom(options)
        if report.outcome is not None:
            try:
                message.outcome.CopyFrom(wire.outcome_of_subhandler(report.outcome))
            except (TypeError, ValueError) as e:  # e.g. a result that is not JSON-serializable.
                message.outcome.CopyFrom(wire.arbitrary_outcome(e))
            exc = report.outcome.exception
            if exc is not None and not isinstance(exc, (model.TemporaryError, model.PermanentError)):
                calls.log_traceback(cause.logger, report.handler, exc)
        return message

    async def _call(self, handler: model.Handler, cause: calls.Cause, retry: int,
                    started: datetime.datetime, call: server.CallInfo) -> pb.Outcome:
        with tracing.handler_span(handler.id, call.metadata, attempt=retry + 1) as span:
            outcome = await self._call_traced(handler, cause, retry, started, call, span)
            if span is not None:
                span.set_attribute('outcome', outcome.WhichOneof('result') or '')
            return outcome

    async def _call_traced(self, handler: model.Handler, cause: calls.Cause, retry: int,
                           started: datetime.datetime, call: server.CallInfo, span: Any) -> pb.Outcome:
        coro = calls.invoke(handler, cause, retry=retry, started=started, settings=self.settings,
                            with_subhandlers=cause.is_change)
        remaining = call.time_remaining()
        timeout = None if remaining is None else max(0.01, remaining - DEADLINE_MARGIN)
        try:
            result = await asyncio.wait_for(coro, timeout=timeout)
        except asyncio.TimeoutError as e:
            message = f"{handler} did not finish within the call's deadline ({timeout:.1f} seconds)."
            tracing.record_exception(span, e)
            cause.logger.error(message)
            return pb.Outcome(arbitrary_error=pb.ArbitraryError(message=message, error_type='TimeoutError'))
        except asyncio.CancelledError:
            raise
        except (model.TemporaryError, model.PermanentError) as e:
            tracing.record_exception(span, e, error=isinstance(e, model.PermanentError))
            return wire.outcome_of_exception(e)
        except BaseException as e:  # never let a handler's error (or exit) crash the service.
            tracing.record_exception(span, e)
            calls.log_traceback(cause.logger, handler, e)
            return wire.arbitrary_outcome(e)
        try:
            return wire.success_outcome(result)
        except (TypeError, ValueError) as e:
            message = f"{handler}'s result cannot be stored: {e}"
            cause.logger.error(message)
            return pb.Outcome(arbitrary_error=pb.ArbitraryError(message=message, error_type=type(e).__name__))


def _canonical_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """
    The webhook call's headers as Kopf's handlers see them (``dict(request.headers)`` of the API
    server's request): the names as the API server writes them, Go's canonical form
    (``User-Agent``); the core sends them in lower case.
    """
    return {'-'.join(part.capitalize() for part in name.split('-')): value for name, value in headers.items()}
