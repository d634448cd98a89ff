"""
A TCP proxy between an operator and the API server, to break the network on purpose.

It listens on 127.0.0.1 (a free port) and forwards bytes, unchanged, to the API server: TLS passes
through end to end, and the server's certificate (IP SAN 127.0.0.1) still verifies. Two faults, and
the way back:

- :meth:`Proxy.cut`: a network cut — every open connection is closed (reset) and every new one is
  closed as soon as it is accepted, until :meth:`Proxy.heal`;
- :meth:`Proxy.stall`: a silent network — the connections open now stay open but no byte passes
  on them in either direction (not even the server's end of a watch), until :meth:`Proxy.heal`;
  new connections are forwarded normally, as a freshly routed path would be;
- :meth:`Proxy.heal`: back to forwarding; stalled connections carry on where they stopped.

:func:`kubeconfig_via` writes a copy of a kubeconfig (its current context, flattened) whose server
is the proxy. Only the operator under test goes through the proxy; the scenario's own client
talks to the API server directly.
"""
import base64
import contextlib
import dataclasses
import enum
import pathlib
import select
import socket
import struct
import threading
import urllib.parse
from typing import Any

import yaml


class Mode(enum.Enum):
    """ What the proxy does with new connections. """
    FORWARD = 'forward'
    CUT = 'cut'


@dataclasses.dataclass
class Counts:
    """ What the proxy saw: connections accepted and forwarded, refused during a cut, closed by a
    cut, and stalled. """
    forwarded: int = 0
    refused: int = 0
    cut: int = 0
    stalled: int = 0


class Link:
    """ One client connection and its upstream connection, pumped by two threads. """

    def __init__(self, proxy: 'Proxy', client: socket.socket, upstream: socket.socket) -> None:
        self.proxy, self.client, self.upstream = proxy, client, upstream
        self.stalled = False  # guarded by proxy.lock; waited on with proxy.changed
        self.closed = False

    def start(self) -> None:
        for source, target in ((self.client, self.upstream), (self.upstream, self.client)):
            threading.Thread(target=self.pump, args=(source, target), daemon=True,
                             name=f'proxy-pump-{source.fileno()}').start()

    def pump(self, source: socket.socket, target: socket.socket) -> None:
        """ Copies bytes from ``source`` to ``target`` until either end closes; while stalled,
        reads nothing and sends nothing (so an end of stream is not passed on either). """
        try:
            while True:
                with self.proxy.lock:
                    while self.stalled and not self.closed:
                        self.proxy.changed.wait()
                    if self.closed:
                        return
                readable, _, _ = select.select([source], [], [], 0.2)
                if not readable:
                    continue
                data = source.recv(65536)
                with self.proxy.lock:  # what was read before a stall waits for the heal
                    while self.stalled and not self.closed:
                        self.proxy.changed.wait()
                    if self.closed:
                        return
                if not data:
                    break
                target.sendall(data)
        except (OSError, ValueError):  # closed under our feet (a cut), or reset by a peer
            pass
        self.close(reset=False)

    def close(self, *, reset: bool) -> None:
        """ Closes both ends; with ``reset``, as an RST (SO_LINGER 0), as a cut network looks. """
        with self.proxy.lock:
            if self.closed:
                return
            self.closed = True
            self.proxy.links.discard(self)
            self.proxy.changed.notify_all()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                if reset:  # SHUT_RD wakes a pump blocked on it, and sends nothing
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
                    sock.shutdown(socket.SHUT_RD)
                else:
                    sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class Proxy:
    """ Forwards 127.0.0.1:``port`` to ``upstream`` (host, port); see the module's docstring. """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.links: set[Link] = set()
        self.mode = Mode.FORWARD
        self.counts = Counts()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.running = True
        self.thread = threading.Thread(target=self.accept, daemon=True, name='proxy-accept')
        self.thread.start()

    def __enter__(self) -> 'Proxy':
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def accept(self) -> None:
        while self.running:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                cut = self.mode is Mode.CUT or not self.running
                if cut:
                    self.counts.refused += 1
            if cut:
                with contextlib.suppress(OSError):
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
                    client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            link = Link(self, client, upstream)
            with self.lock:
                self.links.add(link)
                self.counts.forwarded += 1
            link.start()

    def cut(self) -> int:
        """ Closes every open connection (an RST to both ends) and refuses new ones until
        :meth:`heal`. Returns how many connections were cut. """
        with self.lock:
            self.mode = Mode.CUT
            links = list(self.links)
            self.counts.cut += len(links)
        for link in links:
            link.close(reset=True)
        return len(links)

    def stall(self) -> int:
        """ The connections open now stop carrying bytes, both ways, without being closed; new
        connections are forwarded. Returns how many connections were stalled. """
        with self.lock:
            for link in self.links:
                link.stalled = True
            self.counts.stalled += len(self.links)
            return len(self.links)

    def heal(self) -> None:
        """ Forwards again: new connections are accepted, stalled ones carry on. """
        with self.lock:
            self.mode = Mode.FORWARD
            for link in self.links:
                link.stalled = False
            self.changed.notify_all()

    def open_connections(self) -> int:
        with self.lock:
            return len(self.links)

    def close(self) -> None:
        """ Stops listening and closes every connection. """
        with self.lock:
            self.running = False
            links = list(self.links)
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (Linux)
        with contextlib.suppress(OSError):
            self.listener.close()
        for link in links:
            link.close(reset=True)
        self.thread.join(timeout=5)


def upstream_of(kubeconfig: pathlib.Path) -> tuple[str, int]:
    """ The API server's host and port, from the current context of ``kubeconfig``. """
    _, cluster, _ = current(yaml.safe_load(kubeconfig.read_text()))
    url = urllib.parse.urlsplit(cluster['server'])
    return url.hostname or '127.0.0.1', url.port or 443


def current(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """ The current context, its cluster and its user (the entries' inner dicts). """
    def entry(section: str, name: str) -> dict[str, Any]:
        found = [e[section[:-1]] for e in config.get(section) or [] if e['name'] == name]
        if not found:
            raise ValueError(f"kubeconfig: no {section[:-1]} named {name!r}")
        return dict(found[0])
    context = entry('contexts', config['current-context'])
    cluster = entry('clusters', context['cluster'])
    user = entry('users', context['user']) if context.get('user') else {}
    return context, cluster, user


def kubeconfig_via(proxy: Proxy, source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    """ Writes ``target``: ``source`` minified to its current context and flattened (files inlined
    as ``…-data``, as ``kubectl config view --raw --minify --flatten``), with the server replaced
    by the proxy. """
    config = yaml.safe_load(source.read_text())
    context, cluster, user = current(config)
    base = source.parent
    for entry, keys in ((cluster, ('certificate-authority',)), (user, ('client-certificate', 'client-key'))):
        for key in keys:
            if key in entry:
                path = base / entry.pop(key)
                entry[f'{key}-data'] = base64.b64encode(path.read_bytes()).decode()
    if 'tokenFile' in user:
        user['token'] = (base / user.pop('tokenFile')).read_text().strip()
    cluster = {**cluster, 'server': f'https://127.0.0.1:{proxy.port}'}
    minified = {
        'apiVersion': 'v1', 'kind': 'Config', 'current-context': 'proxied',
        'clusters': [{'name': 'proxied', 'cluster': cluster}],
        'users': [{'name': 'proxied', 'user': user}],
        'contexts': [{'name': 'proxied', 'context': {**context, 'cluster': 'proxied', 'user': 'proxied'}}],
    }
    target.write_text(yaml.safe_dump(minified))
    target.chmod(0o600)
    return target
