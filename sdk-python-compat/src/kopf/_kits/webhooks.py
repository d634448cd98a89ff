"""
Kopf's admission webhook servers and tunnels, as options of the Operon core.

On Operon, the core serves the admission webhooks itself (HTTPS, AdmissionReview) and calls the
``@kopf.on.validate``/``@kopf.on.mutate`` handlers of this process over gRPC. So a server here
does not listen: it says how the core listens --- ``settings.admission.server`` becomes the
core's ``--admission-*`` options (:meth:`WebhookServer.core_options`), and
``settings.admission.managed`` its ``--admission-managed``.

=================================  =====================================================================
Kopf's argument                    the core's option
=================================  =====================================================================
``addr``, ``port``                 ``--admission-listen ADDR:PORT`` (no ``addr``: 127.0.0.1, or all
                                   interfaces for the K3d/Minikube/Docker Desktop servers; no
                                   ``port``: a free port)
``host`` (and the servers'         ``--admission-host`` (the webhooks' URL and certificate name)
default hosts)
``path``                           ``--admission-path``
``certfile``, ``pkeyfile``         ``--admission-cert``, ``--admission-key``
``cafile``, ``cadata``             ``--admission-ca`` (``cadata`` through a temporary file)
``cadump``                         ``--admission-ca-dump``
``extra_sans``                     ``--admission-san`` (repeated)
``file_check_interval``            unused: the certificates are read once, at the core's start
``context``, ``insecure``,         refused: the core serves HTTPS with its own TLS, and does not ask
``password``, ``verify_*``         the API server for client certificates
=================================  =====================================================================

Without ``certfile``, the core makes a CA and a server certificate at start-up (Kopf makes a
self-signed one; both need no extra dependency here). ``WebhookAutoServer`` does not guess the
cluster's kind: it serves as ``WebhookServer`` does, which is what Kopf does on a cluster that is
neither K3d/K3s, Minikube nor Docker Desktop. Tunnels (``WebhookNgrokTunnel``, and
``WebhookAutoTunnel``, which falls back to one) are refused at start-up: the core does not open
tunnels to the internet.
"""
import os
import pathlib
import tempfile
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

from kopf._cogs.settings import WebhookNotSupportedError

if TYPE_CHECKING:
    StrPath: TypeAlias = str | os.PathLike[str]
else:
    StrPath: TypeAlias = str | os.PathLike


class WebhookServer:
    """
    ``kopf.WebhookServer``: the core's HTTPS listener for admission webhooks (see the module).
    """
    DEFAULT_HOST: str | None = None
    DEFAULT_ADDR: str = '127.0.0.1'

    # Kopf's arguments (all keyword-only) and their defaults.
    ARGUMENTS: dict[str, Any] = dict(
        addr=None, port=None, path=None, host=None,  # where to listen; the URL's host
        cadata=None, cafile=None, cadump=None,  # the CA bundle for the webhook configurations
        context=None, insecure=False, certfile=None, pkeyfile=None, password=None,  # the server's TLS
        extra_sans=(),  # more names for a generated certificate
        verify_mode=None, verify_cafile=None, verify_capath=None, verify_cadata=None,  # client certs
        file_check_interval=60.0,  # how often Kopf re-reads the certificate files
    )

    addr: str | None
    port: int | None
    path: str | None
    host: str | None
    cadata: bytes | None
    cafile: StrPath | None
    cadump: StrPath | None
    context: Any
    insecure: bool
    certfile: StrPath | None
    pkeyfile: StrPath | None
    password: str | None
    extra_sans: Iterable[str]
    verify_mode: Any
    verify_cafile: StrPath | None
    verify_capath: StrPath | None
    verify_cadata: str | bytes | None
    file_check_interval: float

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        unknown = sorted(set(kwargs) - set(self.ARGUMENTS))
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments: {unknown}")
        for name, default in self.ARGUMENTS.items():
            setattr(self, name, kwargs.get(name, default))

    def __repr__(self) -> str:
        try:
            options = ' '.join(self.core_options())
        except WebhookNotSupportedError as e:
            options = str(e)
        return f"<{type(self).__name__}: {options}>"

    def _refuse(self, what: str, why: str) -> None:
        raise WebhookNotSupportedError(f"{type(self).__name__}({what}) is not supported on Operon: {why}.")

    def core_options(self) -> list[str]:
        """
        The core's ``--admission-*`` options for this server.

        # Errors
        :class:`WebhookNotSupportedError` for what the core cannot do (see the module).
        """
        if self.context is not None:
            self._refuse('context=…', "the core serves HTTPS with its own TLS, not a Python SSL context; "
                                      "give certfile=/pkeyfile= instead")
        if self.insecure:
            self._refuse('insecure=True', "the core serves admission webhooks over HTTPS only "
                                          "(Kubernetes calls webhooks over HTTPS)")
        if self.password is not None:
            self._refuse('password=…', "the core reads unencrypted PEM keys only")
        if any(v is not None for v in (self.verify_mode, self.verify_cafile, self.verify_capath, self.verify_cadata)):
            self._refuse('verify_…=…', "the core does not ask the API server for client certificates")
        if (self.certfile is None) != (self.pkeyfile is None):
            self._refuse('certfile=/pkeyfile=', "give both, or neither for a generated certificate")
        addr = self.addr or self.DEFAULT_ADDR
        port = int(self.port or 0)
        listen = f'[{addr}]:{port}' if ':' in addr else f'{addr}:{port}'
        options = ['--admission-listen', listen]
        host = self.host or self.DEFAULT_HOST
        if host:
            options += ['--admission-host', host]
        if self.path:
            options += ['--admission-path', '/' + self.path.strip('/')]
        if self.certfile is not None and self.pkeyfile is not None:
            options += ['--admission-cert', os.fspath(self.certfile), '--admission-key', os.fspath(self.pkeyfile)]
        if self.cafile is not None:
            options += ['--admission-ca', os.fspath(self.cafile)]
        elif self.cadata is not None:
            fd, name = tempfile.mkstemp(prefix='kopf-operon-', suffix='-ca.pem')
            with os.fdopen(fd, 'wb') as f:
                f.write(self.cadata)
            options += ['--admission-ca', name]
        if self.cadump is not None:
            options += ['--admission-ca-dump', os.fspath(pathlib.Path(self.cadump))]
        for san in self.extra_sans:
            options += ['--admission-san', str(san)]
        return options


class WebhookK3dServer(WebhookServer):
    """ ``kopf.WebhookK3dServer``: reached from inside K3d/K3s as ``host.k3d.internal``. """
    DEFAULT_HOST = 'host.k3d.internal'
    DEFAULT_ADDR = '0.0.0.0'


class WebhookMinikubeServer(WebhookServer):
    """ ``kopf.WebhookMinikubeServer``: reached from inside Minikube as ``host.minikube.internal``. """
    DEFAULT_HOST = 'host.minikube.internal'
    DEFAULT_ADDR = '0.0.0.0'


class WebhookDockerDesktopServer(WebhookServer):
    """ ``kopf.WebhookDockerDesktopServer``: reached from Docker Desktop as ``host.docker.internal``. """
    DEFAULT_HOST = 'host.docker.internal'
    DEFAULT_ADDR = '0.0.0.0'


class WebhookAutoServer(WebhookServer):
    """
    ``kopf.WebhookAutoServer``: as :class:`WebhookServer` (no guessing of the cluster's kind;
    give ``host=`` or use the K3d/Minikube/Docker Desktop servers for clusters in a VM).
    """


class _Tunnel:
    """ A tunnel through the internet: refused, whatever its arguments. """
    WHY = "the Operon core serves admission webhooks itself and opens no tunnels"

    def __init__(self, *, addr: str | None = None, port: int | None = None, path: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__()
        self.addr = addr
        self.port = port
        self.path = path
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: not supported on Operon>"

    def core_options(self) -> list[str]:
        """
        # Errors
        Always :class:`WebhookNotSupportedError`, naming the tunnel.
        """
        raise WebhookNotSupportedError(
            f"{type(self).__name__} is not supported on Operon: {self.WHY}; "
            f"use kopf.WebhookServer or kopf.WebhookAutoServer (with host= if the cluster "
            f"reaches this machine under another name).")


class WebhookNgrokTunnel(_Tunnel):
    """ ``kopf.WebhookNgrokTunnel``: refused (see the module). """

    def __init__(self, *, addr: str | None = None, port: int | None = None, path: str | None = None,
                 token: str | None = None, region: str | None = None, binary: StrPath | None = None) -> None:
        super().__init__(addr=addr, port=port, path=path, token=token, region=region, binary=binary)


class WebhookAutoTunnel(_Tunnel):
    """ ``kopf.WebhookAutoTunnel``: refused (it falls back to an ngrok tunnel; see the module). """
    WHY = ("it falls back to an ngrok tunnel, and the Operon core serves admission webhooks itself "
           "and opens no tunnels")

    def __init__(self, *, addr: str | None = None, port: int | None = None, path: str | None = None) -> None:
        super().__init__(addr=addr, port=port, path=path)

