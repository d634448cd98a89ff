"""The transport layer: the operon.v1 gRPC server, the core's process, the core's log lines.

This layer knows the wire and the processes, and nothing of Kopf's handlers: the handling layer
(``kopf._core``) implements :class:`kopf._transport.server.Backend` and uses these to serve it.
"""

import os as _os

# gRPC's fork handlers are not needed: this process forks only to exec the core, and never uses
# gRPC in a child (the handlers log noise when the core starts while calls are in flight).
_os.environ.setdefault('GRPC_ENABLE_FORK_SUPPORT', 'false')
