"""
Kopf's admission webhook servers and tunnels, as names only: Operon does not serve admission
webhooks yet. Operators that set ``settings.admission.server = kopf.WebhookAutoServer(...)``
still import and start; the webhook handlers are not called, and the start-up log says so.
"""
from typing import Any


class WebhookServer:
    """A placeholder for any of Kopf's webhook servers; keeps its arguments for inspection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: admission webhooks are not served on Operon>"


WebhookK3dServer = type('WebhookK3dServer', (WebhookServer,), {})
WebhookMinikubeServer = type('WebhookMinikubeServer', (WebhookServer,), {})
WebhookDockerDesktopServer = type('WebhookDockerDesktopServer', (WebhookServer,), {})
WebhookAutoServer = type('WebhookAutoServer', (WebhookServer,), {})
WebhookNgrokTunnel = type('WebhookNgrokTunnel', (WebhookServer,), {})
WebhookAutoTunnel = type('WebhookAutoTunnel', (WebhookServer,), {})
