"""
Credentials: ``kopf.ConnectionInfo`` (what ``@kopf.on.login`` handlers return) and Kopf's
``login_*`` functions. On Operon, the core connects on its own (kubeconfig as kubectl finds it);
a login handler's own credentials are handed to it as a private kubeconfig (:func:`as_kubeconfig`).
The ``login_via_*`` functions configure the client libraries that handler code uses.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import os
from collections.abc import Callable
from typing import Any

PathLike = str | bytes | os.PathLike[str] | os.PathLike[bytes]
SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount'


class LoginError(Exception):
    """Raised when the operator cannot log in to the cluster."""


class AccessError(Exception):
    """Raised when the credentials are refused by the cluster."""


@dataclasses.dataclass(frozen=True)
class ConnectionInfo:
    """One API endpoint and the credentials for it."""
    server: str
    ca_path: PathLike | None = None
    ca_data: str | bytes | None = None
    insecure: bool | None = None
    username: str | None = None
    password: str | None = None
    scheme: str | None = None
    token: str | None = None
    certificate_path: PathLike | None = None
    certificate_data: str | bytes | None = None
    private_key_path: PathLike | None = None
    private_key_data: str | bytes | None = None
    default_namespace: str | None = None
    proxy_url: str | None = None
    trust_env: bool = False
    priority: int = 0
    expiration: datetime.datetime | None = None

    def __post_init__(self) -> None:
        for what, path, data in (('CA', self.ca_path, self.ca_data),
                                 ('certificate', self.certificate_path, self.certificate_data),
                                 ('private key', self.private_key_path, self.private_key_data)):
            if path and data:
                raise ValueError(f"Both {what} path & data are set. Need only one.")


def _text(value: PathLike) -> str:
    raw = os.fspath(value)
    return raw.decode() if isinstance(raw, bytes) else raw


def _b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode('ascii')


def is_expired(info: ConnectionInfo, now: datetime.datetime | None = None) -> bool:
    """ Whether the credentials' ``expiration`` (TZ-naive means UTC, as in Kopf) has passed. """
    expiration = info.expiration
    if expiration is None:
        return False
    if expiration.tzinfo is None:
        expiration = expiration.replace(tzinfo=datetime.timezone.utc)
    return (now or datetime.datetime.now(datetime.timezone.utc)) >= expiration


# A kubeconfig field: its key, the value, how the value is written there (each converter takes its
# own kind of value: a path, PEM data, a flag, a string).
_KubeconfigField = tuple[str, Any, Callable[[Any], Any]]


def as_kubeconfig(info: ConnectionInfo) -> dict[str, Any]:
    """A one-context kubeconfig (JSON is valid YAML) with these credentials, for the core."""
    cluster_fields: tuple[_KubeconfigField, ...] = (
        ('certificate-authority', info.ca_path, _text),
        ('certificate-authority-data', info.ca_data, _b64),
        ('insecure-skip-tls-verify', info.insecure, bool),
        ('proxy-url', info.proxy_url, str))
    user_fields: tuple[_KubeconfigField, ...] = (
        ('client-certificate', info.certificate_path, _text),
        ('client-certificate-data', info.certificate_data, _b64),
        ('client-key', info.private_key_path, _text),
        ('client-key-data', info.private_key_data, _b64),
        ('token', info.token, str),
        ('username', info.username, str),
        ('password', info.password, str))
    cluster: dict[str, Any] = {'server': info.server}
    cluster.update({key: conv(value) for key, value, conv in cluster_fields if value})
    user = {key: conv(value) for key, value, conv in user_fields if value}
    context: dict[str, Any] = {'cluster': 'kopf', 'user': 'kopf'}
    if info.default_namespace:
        context['namespace'] = info.default_namespace
    return {'apiVersion': 'v1', 'kind': 'Config', 'current-context': 'kopf',
            'clusters': [{'name': 'kopf', 'cluster': cluster}],
            'users': [{'name': 'kopf', 'user': user}],
            'contexts': [{'name': 'kopf', 'context': context}]}


def installed(module: str) -> bool:
    """Whether an optional library can be imported (without importing it)."""
    import importlib.util
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _split_auth_header(header: str | None) -> tuple[str | None, str | None]:
    if not header:
        return None, None
    scheme, _, token = header.partition(' ')
    return (scheme, token) if token else (None, scheme)


def login_via_client(*, logger: Any, settings: Any = None, **_: Any) -> ConnectionInfo | None:
    """Configure the ``kubernetes`` client (in-cluster or kubeconfig) and report its credentials."""
    try:
        import kubernetes.client
        import kubernetes.config
    except ImportError:
        return None
    try:
        kubernetes.config.load_incluster_config()
        logger.debug("Client is configured in cluster with service account.")
    except kubernetes.config.ConfigException:
        try:
            kubernetes.config.load_kube_config()
            logger.debug("Client is configured via kubeconfig file.")
        except kubernetes.config.ConfigException as e:
            raise LoginError("Cannot authenticate the client library neither in-cluster, nor via kubeconfig.") from e
    config = kubernetes.client.Configuration.get_default_copy()
    header = config.get_api_key_with_prefix('BearerToken') or config.get_api_key_with_prefix('authorization')
    scheme, token = _split_auth_header(header)
    return ConnectionInfo(server=config.host, ca_path=config.ssl_ca_cert, insecure=not config.verify_ssl,
                          username=config.username or None, password=config.password or None,
                          scheme=scheme, token=token, certificate_path=config.cert_file,
                          private_key_path=config.key_file, priority=10)


async def login_via_async_client(*, logger: Any, settings: Any = None, **_: Any) -> ConnectionInfo | None:
    """Configure the ``kubernetes_asyncio`` client and report its credentials."""
    try:
        import kubernetes_asyncio.client
        import kubernetes_asyncio.config
    except ImportError:
        return None
    try:
        kubernetes_asyncio.config.load_incluster_config()
        logger.debug("Async client is configured in cluster with service account.")
    except kubernetes_asyncio.config.ConfigException:
        try:
            await kubernetes_asyncio.config.load_kube_config()
            logger.debug("Async client is configured via kubeconfig file.")
        except kubernetes_asyncio.config.ConfigException as e:
            raise LoginError("Cannot authenticate the async client library neither in-cluster, "
                             "nor via kubeconfig.") from e
    config = kubernetes_asyncio.client.Configuration.get_default_copy()
    scheme, token = _split_auth_header(config.get_api_key_with_prefix('authorization'))
    return ConnectionInfo(server=config.host, ca_path=config.ssl_ca_cert, insecure=not config.verify_ssl,
                          scheme=scheme, token=token, certificate_path=config.cert_file,
                          private_key_path=config.key_file, priority=10)


def login_via_pykube(*, logger: Any, settings: Any = None, **_: Any) -> ConnectionInfo | None:
    """Read pykube-ng's config (in-cluster or kubeconfig) and report its credentials."""
    try:
        import pykube
    except ImportError:
        return None
    try:
        config = pykube.KubeConfig.from_service_account()
        logger.debug("Pykube is configured in cluster with service account.")
    except FileNotFoundError:
        try:
            config = pykube.KubeConfig.from_file()
            logger.debug("Pykube is configured via kubeconfig file.")
        except (pykube.PyKubeError, FileNotFoundError) as e:
            raise LoginError("Cannot authenticate pykube neither in-cluster, nor via kubeconfig.") from e
    files = {key: config.user.get(key) for key in ('client-certificate', 'client-key')}
    ca = config.cluster.get('certificate-authority')
    return ConnectionInfo(
        server=config.cluster.get('server'), ca_path=ca.filename() if ca else None,
        insecure=config.cluster.get('insecure-skip-tls-verify'),
        username=config.user.get('username'), password=config.user.get('password'),
        token=config.user.get('token'),
        certificate_path=files['client-certificate'].filename() if files['client-certificate'] else None,
        private_key_path=files['client-key'].filename() if files['client-key'] else None,
        default_namespace=config.namespace, proxy_url=config.cluster.get('proxy-url'), priority=20)


def login_with_service_account(**_: Any) -> ConnectionInfo | None:
    """The pod's service account, if running in a cluster."""
    token_path = os.path.join(SERVICE_ACCOUNT_DIR, 'token')
    if not os.path.exists(token_path):
        return None
    host, port = os.environ.get('KUBERNETES_SERVICE_HOST'), os.environ.get('KUBERNETES_SERVICE_PORT', '443')
    if not host:
        return None
    with open(token_path, encoding='utf-8') as f:
        token = f.read().strip()
    ns_path = os.path.join(SERVICE_ACCOUNT_DIR, 'namespace')
    namespace = open(ns_path, encoding='utf-8').read().strip() if os.path.exists(ns_path) else None
    return ConnectionInfo(server=f'https://{host}:{port}', ca_path=os.path.join(SERVICE_ACCOUNT_DIR, 'ca.crt'),
                          token=token or None, default_namespace=namespace)


def login_with_kubeconfig(**_: Any) -> ConnectionInfo | None:
    """The current context of ``$KUBECONFIG`` or ``~/.kube/config`` (needs PyYAML for YAML files)."""
    path = os.environ.get('KUBECONFIG', '').split(os.pathsep)[0] or os.path.expanduser('~/.kube/config')
    if not os.path.exists(path):
        return None
    with open(path, encoding='utf-8') as f:
        text = f.read()
    try:
        import yaml
        config = yaml.safe_load(text) or {}
    except ImportError:
        import json
        config = json.loads(text)

    def named(section: str, name: str | None) -> dict[str, Any]:
        found = [item.get(section[:-1], {}) for item in config.get(section, []) if item.get('name') == name]
        return found[0] if found else {}

    context = named('contexts', config.get('current-context'))
    cluster, user = named('clusters', context.get('cluster')), named('users', context.get('user'))
    return ConnectionInfo(
        server=cluster.get('server', ''), ca_path=cluster.get('certificate-authority'),
        ca_data=base64.b64decode(cluster['certificate-authority-data']) if cluster.get('certificate-authority-data') else None,
        insecure=cluster.get('insecure-skip-tls-verify'), username=user.get('username'),
        password=user.get('password'), token=user.get('token'),
        certificate_path=user.get('client-certificate'), private_key_path=user.get('client-key'),
        certificate_data=base64.b64decode(user['client-certificate-data']) if user.get('client-certificate-data') else None,
        private_key_data=base64.b64decode(user['client-key-data']) if user.get('client-key-data') else None,
        default_namespace=context.get('namespace'))
