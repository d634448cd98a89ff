"""
A minimal Kubernetes API client of this process, for what Kopf's CLI does without an operator:
``kopf freeze`` and ``kopf resume`` patch the peering objects (:mod:`kopf._core.peering`). A
running operator's API requests are the core's own; nothing else here talks to the API server.

It speaks JSON over HTTPS with the standard library (``urllib`` and ``ssl``), with the credentials
of a :class:`~kopf._cogs.credentials.ConnectionInfo` --- what the login handlers return, or Kopf's
rudimentary fallbacks (the pod's service account, the kubeconfig's current context) --- as Kopf's
own client uses them: the CA (a file or PEM data), ``insecure``, a client certificate and key (files
or data), a token (with its ``scheme``, ``Bearer`` by default), a username and password (basic
auth), ``proxy_url``, and ``trust_env`` (the proxy from the environment).

# Errors
:class:`APIError` for an answer other than 2xx (its ``status``), or for no answer at all (``status``
``None``), with the API server's message when it gave one.
"""
from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from kopf._cogs.credentials import ConnectionInfo

# How long one request may take (connecting, sending, reading the answer), in seconds.
REQUEST_TIMEOUT = 30.0


class APIError(Exception):
    """ A request that failed: ``status`` is the HTTP status, or ``None`` when there was no answer. """

    def __init__(self, message: str, *, status: int | None) -> None:
        super().__init__(message)
        self.status = status


def _pem_or_der(data: str | bytes) -> str | bytes:
    """ ``ssl``'s ``cadata``: PEM as text, DER as bytes. """
    if isinstance(data, bytes) and data.lstrip().startswith(b'-----'):
        return data.decode('ascii')
    return data


def _ssl_context(info: ConnectionInfo) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if info.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if info.ca_path:
        context.load_verify_locations(cafile=os.fsdecode(info.ca_path))
    if info.ca_data:
        context.load_verify_locations(cadata=_pem_or_der(info.ca_data))
    if info.certificate_path or info.certificate_data:
        with tempfile.TemporaryDirectory(prefix='kopf-') as folder:  # the data as files, for `ssl`
            def as_file(path: Any, data: str | bytes | None, name: str) -> str | None:
                if path:
                    return os.fsdecode(path)
                if data is None:
                    return None
                file = os.path.join(folder, name)
                with open(os.open(file, os.O_WRONLY | os.O_CREAT, 0o600), 'wb') as f:
                    f.write(data.encode() if isinstance(data, str) else data)
                return file

            certfile = as_file(info.certificate_path, info.certificate_data, 'tls.crt')
            keyfile = as_file(info.private_key_path, info.private_key_data, 'tls.key')
            assert certfile is not None
            context.load_cert_chain(certfile, keyfile)  # read now: the files can go
    return context


def _authorization(info: ConnectionInfo) -> str | None:
    if info.token:
        return f'{info.scheme or "Bearer"} {info.token}'
    if info.username or info.password:
        pair = f'{info.username or ""}:{info.password or ""}'.encode()
        return f'Basic {base64.b64encode(pair).decode("ascii")}'
    return None


class APIClient:
    """ JSON requests to one API server with one set of credentials. """

    def __init__(self, info: ConnectionInfo, *, timeout: float = REQUEST_TIMEOUT) -> None:
        super().__init__()
        if not info.server:
            raise APIError("The credentials name no API server.", status=None)
        self.server = info.server.rstrip('/')
        self.timeout = timeout
        self._authorization = _authorization(info)
        handlers: list[urllib.request.BaseHandler] = []
        if self.server.startswith('https:'):
            handlers.append(urllib.request.HTTPSHandler(context=_ssl_context(info)))
        proxies = ({'http': info.proxy_url, 'https': info.proxy_url} if info.proxy_url else
                   None if info.trust_env else {})  # None: from the environment, as `trust_env` says
        handlers.append(urllib.request.ProxyHandler(proxies))
        self._opener = urllib.request.build_opener(*handlers)

    def request(self, method: str, path: str, *, payload: Any = None,
                content_type: str = 'application/json') -> Any:
        """
        One request; the answer's JSON.

        # Errors
        :class:`APIError` for a status other than 2xx, or no answer.
        """
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header('Accept', 'application/json')
        if data is not None:
            request.add_header('Content-Type', content_type)
        if self._authorization:
            request.add_header('Authorization', self._authorization)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as e:
            raise APIError(f"{method} {path}: {e.code} {_message(e.read()) or e.reason}", status=e.code) from e
        except (urllib.error.URLError, OSError) as e:
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            raise APIError(f"{method} {path}: no answer from {self.server}: {reason}", status=None) from e
        return json.loads(body) if body else None

    def get(self, path: str) -> Any:
        """ ``GET path`` (see :meth:`request`). """
        return self.request('GET', path)

    def merge_patch(self, path: str, patch: Any) -> Any:
        """ ``PATCH path`` with a JSON merge patch (see :meth:`request`). """
        return self.request('PATCH', path, payload=patch, content_type='application/merge-patch+json')


def _message(body: bytes) -> str:
    """ The ``message`` of a ``Status`` answer, else the text (shortened). """
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.decode(errors='replace').strip()[:200]
    return str(parsed.get('message', '')) if isinstance(parsed, dict) else ''


def quote(segment: str) -> str:
    """ One segment of a path (a name, a namespace), escaped. """
    return urllib.parse.quote(segment, safe='')


__all__ = ['APIClient', 'APIError', 'REQUEST_TIMEOUT', 'quote']
