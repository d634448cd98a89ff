"""
The standard gRPC health service (``grpc.health.v1.Health``) and server reflection.

Every gRPC server of this process serves both beside its own services: the handler server (so
that a client — the core, ``grpcurl``, a load balancer — can ask the handler service itself), and
the optional health-only listener (:class:`HealthServer`), which serves them alone in plaintext
for the kubelet's native ``grpc:`` probes (these speak neither TLS nor to a pod's loopback, where
the handler port may be).

The statuses follow the operator's life (:class:`Phase`), the same for the overall health (the
service ``""``) and for every operon.v1 service that this process serves (:data:`SERVED`):
NOT_SERVING while it starts (the login and startup handlers), SERVING once the handlers are
registered and served, NOT_SERVING again from the stop request on, while it drains (the core stops
first, then the handler server) — for good: nothing sets it back.
"""
import enum

import grpc.aio
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kopf._proto.operon.v1 import handler_pb2 as pb

# The operon.v1 services of this process: the handler service. (SyncService and TaskService are
# not served by the Python SDK: Kopf has no such handlers.)
SERVED: tuple[str, ...] = (pb.DESCRIPTOR.services_by_name['HandlerService'].full_name,)

# The health service's own name, as reflection lists it: grpc.health.v1.Health.
HEALTH_SERVICE = grpc_health.SERVICE_NAME


class Phase(enum.Enum):
    """ Where the operator is in its life, as the health service tells it. """
    STARTING = 'starting'   # the login and startup handlers run; nothing is served yet
    SERVING = 'serving'     # the handlers are registered and served
    DRAINING = 'draining'   # stopping: the core, then the handler server; final

    @property
    def status(self) -> int:
        """ The phase's ``grpc.health.v1.HealthCheckResponse.ServingStatus``. """
        if self is Phase.SERVING:
            return health_pb2.HealthCheckResponse.SERVING
        return health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    """
    The serving status of this process's services, for one or more gRPC servers on one loop.
    Create it with :meth:`starting` (inside the event loop that serves it).

    # Guarantees
    The overall status (``""``) and every service of :data:`SERVED` always answer the same, so a
    probe of either name sees the same phase; DRAINING is final.
    """

    def __init__(self, services: tuple[str, ...] = SERVED) -> None:
        super().__init__()
        self.servicer = grpc_health.aio.HealthServicer()  # "" is SERVING until starting() sets it
        self.services = ('', *services)
        self.phase = Phase.STARTING

    @classmethod
    async def starting(cls, services: tuple[str, ...] = SERVED) -> 'Health':
        """ A health of the phase STARTING: NOT_SERVING for the overall health and ``services``. """
        health = cls(services)
        await health.enter(Phase.STARTING)
        return health

    async def enter(self, phase: Phase) -> None:
        """ Tell ``phase`` to the clients (and those watching); after DRAINING, nothing changes. """
        if self.phase is Phase.DRAINING:
            return
        self.phase = phase
        if phase is Phase.DRAINING:
            await self.servicer.enter_graceful_shutdown()
            return
        for service in self.services:
            await self.servicer.set(service, phase.status)

    def add_to(self, server: grpc.aio.Server, services: tuple[str, ...] = ()) -> None:
        """
        Serve the health service on ``server``, and reflection listing ``services`` (the
        server's own), the health service and reflection itself.
        """
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        reflection.enable_server_reflection((*services, HEALTH_SERVICE, reflection.SERVICE_NAME), server)


class HealthServer:
    """
    A gRPC server of the health service alone (and reflection), in plaintext, on ``address``
    (``HOST:PORT``; port 0 picks a free one): what the kubelet's ``grpc:`` probes call.

    # Caveats
    It tells the status to anyone who can reach the address, and nothing else: no handler is
    served on it, whatever the handler server's TLS.
    """

    def __init__(self, health: Health, address: str) -> None:
        super().__init__()
        self._health = health
        self._address = address
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None

    @property
    def address(self) -> str:
        if self.port is None:
            raise RuntimeError("The health server is not started.")
        host = self._address.rsplit(':', 1)[0]
        return f'{host}:{self.port}'

    async def start(self) -> int:
        server = grpc.aio.server()
        self._health.add_to(server)
        port = int(server.add_insecure_port(self._address))
        if not port:
            raise OSError(f"Cannot listen on {self._address}.")
        await server.start()
        self._server = server
        self.port = port
        return port

    async def stop(self, grace: float | None = None) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
