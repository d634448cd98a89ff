"""
Kopf's peering, the part of it that runs in this process (Kopf's ``kopf._core.engines.peering``).

The Operon core takes part in the peering itself: ``kopf run`` gives it ``--peering NAME`` & co.
from Kopf's options and ``settings.peering`` (:func:`kopf._core.reactor.running.peering_options`),
and the core keeps the operator's record in the ``KopfPeering``/``ClusterKopfPeering`` object
alive, pauses while a live peer has a higher (or the same) priority, cleans the dead peers, and
removes its record on exit --- in Kopf's format, so that Kopf's operators and Operon's pause each
other. This process only names the operator (:func:`detect_own_id`, Kopf's identity, given to the
core as ``--identity``), and, for ``kopf freeze`` and ``kopf resume``, writes or removes a peer
record of its own in the peering objects (:func:`touch_command`), as Kopf's ``touch_command`` does.
"""
from __future__ import annotations

import dataclasses
import datetime
import getpass
import ipaddress
import logging
import os
import random
import socket
from collections.abc import Collection, Sequence
from typing import Any, NewType

from kopf._cogs import kubeapi, refs

logger = logging.getLogger('kopf._core.engines.peering')  # Kopf's name for these lines

Identity = NewType('Identity', str)

# Kopf's peering resources: both groups are used where both exist (Kopf's order).
GROUPS = ('kopf.dev', 'zalando.org')
VERSION = 'v1'
CLUSTER_PLURAL = 'clusterkopfpeerings'
NAMESPACED_PLURAL = 'kopfpeerings'


class PeeringError(Exception):
    """ ``kopf freeze``/``kopf resume`` cannot be done; the message says why. """


def detect_own_id(*, manual: bool) -> Identity:
    """
    Kopf's identity of this operator (or of a person, with ``manual=True``, for ``kopf freeze``):
    ``$POD_ID`` if set; else ``user@host``, with ``/YYYYmmddHHMMSS/rnd`` unless manual.
    """
    pod = os.environ.get('POD_ID', None)
    if pod is not None:
        return Identity(pod)
    user = getpass.getuser()
    host = descriptive_hostname()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S")
    rnd = ''.join(random.choices('abcdefhijklmnopqrstuvwxyz0123456789', k=3))
    return Identity(f'{user}@{host}' if manual else f'{user}@{host}/{now}/{rnd}')


def descriptive_hostname() -> str:
    """ Kopf's: the machine's name, preferring a dotted one, never an address or ``*.arpa``. """
    try:
        hostname, aliases, addresses = socket.gethostbyaddr(socket.gethostname())
    except OSError:
        pass
    else:
        names = [hostname, *aliases, *addresses]
        plain = [name for name in names if not name.endswith('.arpa') and not _is_address(name)]
        for name in plain:
            if '.' in name:
                return _without_useless_suffixes(name)
        for name in plain:
            if name != 'localhost':
                return _without_useless_suffixes(name)
    return _without_useless_suffixes(socket.gethostname())


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _without_useless_suffixes(hostname: str) -> str:
    suffixes = ['.local', '.localdomain']
    while any(hostname.endswith(suffix) for suffix in suffixes):
        for suffix in suffixes:
            hostname = hostname.removesuffix(suffix)
    return hostname


def peer_record(*, priority: int, lifetime: int, now: datetime.datetime | None = None) -> dict[str, Any] | None:
    """
    A peer's record as Kopf writes it into ``status.<identity>``: ``priority``, ``lifetime`` (s)
    and ``lastseen`` (ISO 8601, UTC); ``None`` --- the record removed --- for a peer that is dead
    at once (``lifetime`` 0 or less: Kopf's ``kopf resume`` and an operator's exit).
    """
    if int(lifetime) <= 0:
        return None
    now = now if now is not None else datetime.datetime.now(datetime.timezone.utc)
    return {'priority': int(priority), 'lifetime': int(lifetime), 'lastseen': now.isoformat()}


def touch_patch(*, identity: str, priority: int, lifetime: int,
                now: datetime.datetime | None = None) -> dict[str, Any]:
    """ The merge patch of a peering object that writes (or removes) one peer's record. """
    return {'status': {identity: peer_record(priority=priority, lifetime=lifetime, now=now)}}


@dataclasses.dataclass(frozen=True)
class PeeringResource:
    """ One of Kopf's peering resources as the API server serves it. """
    group: str
    plural: str
    namespaced: bool
    status_subresource: bool  # not in Kopf's CRDs; Kopf patches `/status` when there is one

    def path(self, name: str, namespace: str | None) -> str:
        where = f'/namespaces/{kubeapi.quote(namespace)}' if self.namespaced and namespace else ''
        tail = '/status' if self.status_subresource else ''
        return f'/apis/{self.group}/{VERSION}{where}/{self.plural}/{kubeapi.quote(name)}{tail}'

    def __str__(self) -> str:
        return f'{self.plural}.{VERSION}.{self.group}'


def find_resources(api: kubeapi.APIClient, *, clusterwide: bool) -> list[PeeringResource]:
    """
    Kopf's peering resources that the cluster serves: ``clusterkopfpeerings`` (``clusterwide``)
    or ``kopfpeerings``, in the groups ``kopf.dev`` and ``zalando.org``.

    # Errors
    :class:`kubeapi.APIError` if the API server cannot be asked.
    """
    plural = CLUSTER_PLURAL if clusterwide else NAMESPACED_PLURAL
    found = []
    for group in GROUPS:
        try:
            listing = api.get(f'/apis/{group}/{VERSION}')
        except kubeapi.APIError as e:
            if e.status == 404:
                continue
            raise
        names = {item.get('name'): item for item in (listing or {}).get('resources', [])}
        if plural in names:
            found.append(PeeringResource(group=group, plural=plural,
                                         namespaced=bool(names[plural].get('namespaced')),
                                         status_subresource=f'{plural}/status' in names))
    return found


def find_namespaces(api: kubeapi.APIClient, patterns: Collection[refs.NamespacePattern]) -> list[str]:
    """
    The namespaces that the patterns select, as Kopf's namespace observer finds them: listed and
    matched (those being deleted left out); if listing is forbidden, the patterns that are plain
    names (with Kopf's warning).

    # Errors
    :class:`kubeapi.APIError` if the API server cannot be asked (other than a 403).
    """
    try:
        listing = api.get('/api/v1/namespaces')
    except kubeapi.APIError as e:
        if e.status != 403:
            raise
        exact = sorted(refs.select_specific_namespaces(patterns))
        logger.warning("Not enough permissions to list namespaces. "
                       f"Falling back to a list of namespaces which are assumed to exist: {set(exact)!r}")
        return exact
    found = []
    for item in (listing or {}).get('items', []):
        name = item.get('metadata', {}).get('name', '')
        deleting = bool(item.get('metadata', {}).get('deletionTimestamp'))
        if deleting and (item.get('status') or {}).get('conditions'):
            continue  # Kopf's `is_deleted`: as good as gone
        if any(refs.match_namespace(name, pattern) for pattern in patterns):
            found.append(name)
    return sorted(found)


def touch_command(
        api: kubeapi.APIClient,
        *,
        name: str,
        identity: str,
        priority: int,
        lifetime: int,
        clusterwide: bool,
        namespaces: Sequence[refs.NamespacePattern],
) -> int:
    """
    Kopf's ``touch_command`` (``kopf freeze``: ``lifetime`` > 0; ``kopf resume``: 0): write the
    peer record of ``identity`` --- or remove it --- in the peering object ``name`` of every peering
    resource served (cluster-wide, or in every namespace that ``namespaces`` select). Objects that
    do not exist are skipped (Kopf's DEBUG line ``Keep-alive in 'name' in 'ns': not found.``).
    Returns how many objects were patched.

    # Errors
    :class:`PeeringError` if the cluster serves none of Kopf's peering resources (the CRDs are not
    installed); :class:`kubeapi.APIError` if a request fails (other than a missing object).
    """
    resources = find_resources(api, clusterwide=clusterwide)
    if not resources:
        plural = CLUSTER_PLURAL if clusterwide else NAMESPACED_PLURAL
        wanted = ', '.join(f'{plural}.{VERSION}.{group}' for group in GROUPS)
        raise PeeringError(f"Cannot find the peering resource for {wanted}: "
                           f"are Kopf's peering CRDs (peering.yaml) installed?")
    targets: list[str | None] = [None] if clusterwide else list(find_namespaces(api, namespaces))
    patch = touch_patch(identity=identity, priority=priority, lifetime=lifetime)
    touched = 0
    for namespace in targets:
        for resource in resources:
            try:
                api.merge_patch(resource.path(name, namespace), patch)
            except kubeapi.APIError as e:
                if e.status != 404:
                    raise
                result = "not found"
            else:
                result = "ok"
                touched += 1
            where = f"in {namespace!r}" if namespace else "cluster-wide"
            logger.debug(f"Keep-alive in {name!r} {where}: {result}.")
    return touched


__all__ = ['Identity', 'PeeringError', 'PeeringResource', 'detect_own_id', 'descriptive_hostname',
           'find_namespaces', 'find_resources', 'peer_record', 'touch_command', 'touch_patch']
