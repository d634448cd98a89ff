"""
The operon.v1 ``HandlerService`` as an asyncio gRPC server, with the standard health service and
server reflection beside it (:mod:`kopf._transport.health`).

The server turns every call into a call of a :class:`Backend` (the handling layer), with the
call's metadata and deadline at hand (:class:`CallInfo`). A backend's failure becomes a gRPC
error of that one call, logged here; it never stops the server. Handlers' own errors are not
failures of the backend: they are outcomes in the response.
"""
import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio

from kopf._proto.operon.v1 import handler_pb2 as pb
from kopf._proto.operon.v1 import handler_pb2_grpc as pb_grpc
from kopf._transport import health as healthp

_R = TypeVar('_R')

logger = logging.getLogger('kopf._core.engines.operon')

CONTRACT_REVISION = 1
MAX_MESSAGE_SIZE = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class CallInfo:
    """
    What a backend may know about the call besides the request.

    ``deadline`` is on the :func:`time.monotonic` clock (``None`` means no deadline).
    ``metadata`` holds the call's metadata (e.g. the W3C ``traceparent`` of the core's span).
    """
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    deadline: float | None = None

    @property
    def traceparent(self) -> str | None:
        return self.metadata.get('traceparent')

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


class Backend(Protocol):
    """ What the server serves: implemented by the handling layer. """

    async def describe(self, request: pb.DescribeRequest, call: CallInfo) -> pb.Manifest: ...

    async def invoke(self, request: pb.InvokeRequest, call: CallInfo) -> pb.InvokeResponse: ...

    async def match(self, request: pb.InvokeRequest, call: CallInfo) -> pb.MatchResponse: ...

    def daemon(self, requests: AsyncIterator[pb.DaemonRequest], call: CallInfo) -> AsyncIterator[pb.DaemonResponse]: ...

    async def select_resources(self, request: pb.SelectResourcesRequest,
                               call: CallInfo) -> pb.SelectResourcesResponse: ...

    def outbox(self, request: pb.OutboxRequest, call: CallInfo) -> AsyncIterator[pb.OutboxEvent]: ...

    async def login(self, request: pb.LoginRequest, call: CallInfo) -> pb.LoginResponse: ...


def _call_info(context: grpc.aio.ServicerContext[Any, Any]) -> CallInfo:
    metadata: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        metadata[key] = value if isinstance(value, str) else value.decode('latin-1')
    remaining = context.time_remaining()
    deadline = None if remaining is None else time.monotonic() + remaining
    return CallInfo(metadata=metadata, deadline=deadline)


class _Servicer(pb_grpc.HandlerServiceServicer):
    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self._backend = backend

    async def Describe(
            self, request: pb.DescribeRequest, context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.Manifest:
        try:
            return await self._backend.describe(request, _call_info(context))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            logger.exception(f"Describe failed: {e!r}")
            await context.abort(grpc.StatusCode.INTERNAL, f"Describe failed: {e!r}")
            raise  # unreachable: abort() raises

    async def Invoke(
            self, request: pb.InvokeRequest, context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.InvokeResponse:
        return await self._about_a_handler('Invoke', self._backend.invoke, request, context)

    async def Match(
            self, request: pb.InvokeRequest, context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.MatchResponse:
        return await self._about_a_handler('Match', self._backend.match, request, context)

    async def _about_a_handler(
            self, rpc: str, call: Callable[[pb.InvokeRequest, CallInfo], Awaitable[_R]],
            request: pb.InvokeRequest, context: grpc.aio.ServicerContext[Any, Any],
    ) -> _R:
        """ A call about one handler: an unknown id is NOT_FOUND, a failure INTERNAL (logged). """
        try:
            return await call(request, _call_info(context))
        except asyncio.CancelledError:
            raise
        except LookupError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
            raise  # unreachable: abort() raises
        except Exception as e:
            logger.exception(f"{rpc} of {request.handler_id!r} failed: {e!r}")
            await context.abort(grpc.StatusCode.INTERNAL, f"{rpc} failed: {e!r}")
            raise  # unreachable: abort() raises

    async def SelectResources(
            self, request: pb.SelectResourcesRequest, context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.SelectResourcesResponse:
        try:
            return await self._backend.select_resources(request, _call_info(context))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            logger.exception(f"SelectResources failed: {e!r}")
            await context.abort(grpc.StatusCode.INTERNAL, f"SelectResources failed: {e!r}")
            raise  # unreachable: abort() raises

    async def Login(
            self, request: pb.LoginRequest, context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.LoginResponse:
        try:
            return await self._backend.login(request, _call_info(context))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            logger.exception(f"Login failed: {e!r}")
            await context.abort(grpc.StatusCode.INTERNAL, f"Login failed: {e!r}")
            raise  # unreachable: abort() raises

    async def Outbox(
            self, request: pb.OutboxRequest, context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.OutboxEvent]:
        await context.send_initial_metadata(())
        async for event in self._backend.outbox(request, _call_info(context)):
            yield event

    async def Daemon(
            self, request_iterator: AsyncIterator[pb.DaemonRequest], context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.DaemonResponse]:
        # The headers go at once: the core waits for them before it counts the daemon as started.
        await context.send_initial_metadata(())
        try:
            async for response in self._backend.daemon(request_iterator, _call_info(context)):
                yield response
        except asyncio.CancelledError:
            raise
        except LookupError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        except Exception as e:
            logger.exception(f"Daemon failed: {e!r}")
            await context.abort(grpc.StatusCode.INTERNAL, f"Daemon failed: {e!r}")


class ServerTls:
    """
    TLS of the handler service, from PEM files (as mounted from a Secret): the service's own
    certificate and key, and optionally the CA that clients (the core) must present a certificate
    of — then mutual TLS is required.
    """

    def __init__(self, cert: str, key: str, client_ca: str | None = None) -> None:
        super().__init__()
        self.cert = cert
        self.key = key
        self.client_ca = client_ca

    def credentials(self) -> grpc.ServerCredentials:
        def read(path: str) -> bytes:
            with open(path, 'rb') as f:
                return f.read()
        root = read(self.client_ca) if self.client_ca else None
        return grpc.ssl_server_credentials(
            [(read(self.key), read(self.cert))],
            root_certificates=root,
            require_client_auth=root is not None,
        )


class HandlerServer:
    """
    The gRPC server of one backend on one address (``HOST:PORT``; port 0 picks a free one);
    plaintext, or TLS with ``tls``. Beside the handler service, it serves ``grpc.health.v1.Health``
    with the statuses of ``health`` (whose phases its owner sets: see
    :class:`kopf._transport.health.Phase`) and server reflection (``grpcurl -plaintext HOST:PORT
    list``). Without ``health``, it has one of its own, SERVING from its start on.
    """

    def __init__(self, backend: Backend, address: str = '127.0.0.1:0', tls: ServerTls | None = None,
                 health: healthp.Health | None = None) -> None:
        super().__init__()
        self._backend = backend
        self._address = address
        self._tls = tls
        self._health = health
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None

    @property
    def address(self) -> str:
        if self.port is None:
            raise RuntimeError("The server is not started.")
        host = self._address.rsplit(':', 1)[0]
        return f'{host}:{self.port}'

    async def start(self) -> int:
        server = grpc.aio.server(options=[
            ('grpc.max_receive_message_length', MAX_MESSAGE_SIZE),
            ('grpc.max_send_message_length', MAX_MESSAGE_SIZE),
        ])
        pb_grpc.add_HandlerServiceServicer_to_server(_Servicer(self._backend), server)
        health = self._health
        if health is None:
            health = self._health = healthp.Health()
            await health.enter(healthp.Phase.SERVING)
        health.add_to(server, healthp.SERVED)
        if self._tls is not None:
            port = int(server.add_secure_port(self._address, self._tls.credentials()))
        else:
            port = int(server.add_insecure_port(self._address))
        if not port:
            raise OSError(f"Cannot listen on {self._address}.")
        await server.start()
        self._server = server
        self.port = port
        return port

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()
