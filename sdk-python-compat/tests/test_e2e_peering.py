"""
Kopf's peering between real Kopf 1.45.2 and Operon, on the real plane: they pause each other.

One operator file, run by Kopf (from PyPI, in ~/.cache/operon/venv-kopf) and by this package's
``kopf run`` (with the ``operon`` core), both with ``--peering NAME`` on one ``KopfPeering`` in the
test's namespace, on the same resource (``kopfexamples``). Its create handler is filtered by a label
(``for: kopf`` / ``for: operon``), so that every object is for one runtime only, and records each
call in a file: so "paused" is seen as it matters, in handler calls --- an object for the paused
runtime, created while it is paused, is not handled, and is handled once it resumes --- and in
Kopf's log lines ("Pausing operations in favour of …", "Resuming operations after the pause"),
which the core words as Kopf does.

- Kopf with ``--priority 100``, then Operon with ``--priority 200``: Kopf pauses (Operon goes on);
  Operon is stopped (SIGTERM: it removes its record): Kopf resumes and handles what came meanwhile.
- The reverse: Operon with ``--priority 100``, then Kopf with ``--priority 200``: Operon pauses;
  Kopf is stopped: Operon resumes.

The peering object's status is checked on the way: both records in Kopf's format
(``{priority, lifetime, lastseen}``), and a stopped operator's record gone.

And ``kopf freeze``/``kopf resume`` (this package's) pause and resume Operon as they do Kopf; a
pause is not a restart: the resume handlers do not run again after it (Kopf runs them for the
objects found at the start only).

Skipped, with the reason, only when the plane, the core or Kopf's venv are not available.
"""
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

import realkopf
from realkopf import Operator

pytestmark = pytest.mark.e2e

PEERING = 'e2e-peering'
QUIET = 10  # seconds an object for a paused runtime is watched for not being handled

OPERATOR = '''
import json
import os

import kopf

RUNTIME = os.environ['PEERING_RUNTIME']
LOG = os.environ['PEERING_LOG']


def record(handler, name):
    with open(LOG, 'a', encoding='utf-8') as f:
        f.write(json.dumps({'runtime': RUNTIME, 'handler': handler, 'object': name}) + '\\n')


@kopf.on.create('kopfexamples', labels={'for': RUNTIME})
def created(name, logger, **_):
    record('create', name)
    logger.info(f"Handled by {RUNTIME}.")


@kopf.on.resume('kopfexamples', labels={'for': RUNTIME})
def resumed(name, **_):
    record('resume', name)
'''


class Peers:
    """ The namespace, the peering object, the objects, the handlers' calls, and the two runtimes. """

    def __init__(self, kubectl: str, kubeconfig: str, operon: str, kopf: str, namespace: str,
                 tmp_path: pathlib.Path) -> None:
        self.kubectl, self.namespace, self.tmp_path = kubectl, namespace, tmp_path
        self.operator_py = tmp_path / 'operator.py'
        self.operator_py.write_text(OPERATOR)
        self.calls = tmp_path / 'calls.jsonl'
        self.calls.touch()
        self.env = {**os.environ, 'KUBECONFIG': kubeconfig, 'OPERON_BIN': operon, 'PEERING_LOG': str(self.calls)}
        self.kopf = kopf
        self.runs = 0
        self.apply({'apiVersion': 'kopf.dev/v1', 'kind': 'KopfPeering',
                    'metadata': {'name': PEERING, 'namespace': namespace}})

    def start(self, runtime: str, priority: int) -> Operator:
        self.runs += 1
        common = ['run', '-n', self.namespace, '--peering', PEERING, '--priority', str(priority), '--verbose',
                  str(self.operator_py)]
        argv = [self.kopf, *common] if runtime == 'kopf' else [sys.executable, '-m', 'kopf', *common]
        env = {**self.env, 'PEERING_RUNTIME': runtime, 'POD_ID': f'{runtime}-e2e'}  # Kopf's identity: $POD_ID
        return Operator(runtime, argv, env, self.tmp_path / f'{self.runs}-{runtime}.log')

    def apply(self, *objects: dict[str, Any]) -> None:
        manifest = json.dumps({'apiVersion': 'v1', 'kind': 'List', 'items': list(objects)})
        subprocess.run([self.kubectl, 'apply', '-f', '-'], input=manifest, text=True, check=True,
                       capture_output=True, timeout=30, env=self.env)

    def create(self, name: str, *, for_: str) -> None:
        self.apply({'apiVersion': 'kopf.dev/v1', 'kind': 'KopfExample',
                    'metadata': {'name': name, 'namespace': self.namespace, 'labels': {'for': for_}},
                    'spec': {'field': 'value'}})

    def handled(self, name: str, handler: str = 'create') -> list[str]:
        """ The runtimes whose handler (the create handler by default) ran for the object, in order. """
        lines = self.calls.read_text(encoding='utf-8').splitlines()
        return [entry['runtime'] for entry in map(json.loads, lines)
                if entry['object'] == name and entry['handler'] == handler]

    def command(self, *args: str) -> None:
        """ This package's ``kopf freeze``/``kopf resume`` & co. """
        result = subprocess.run([sys.executable, '-m', 'kopf', *args], env=self.env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr

    def wait_handled(self, name: str, by: Operator, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.handled(name):
                break
            if by.process.poll() is not None:
                break
            time.sleep(0.2)
        assert self.handled(name) == [by.runtime], (
            f"{name}: handled by {self.handled(name)}, not once by {by.runtime} within {timeout} s:\n{by.tail()}")

    def stays_unhandled(self, name: str, paused: Operator) -> None:
        time.sleep(QUIET)
        assert self.handled(name) == [], f"{name} was handled while {paused.runtime} was paused:\n{paused.tail()}"

    def records(self) -> dict[str, Any]:
        result = subprocess.run([self.kubectl, 'get', 'kopfpeering', PEERING, '-n', self.namespace, '-o', 'json'],
                                check=True, capture_output=True, text=True, timeout=30, env=self.env)
        return dict(json.loads(result.stdout).get('status') or {})

    def wait_records(self, what: str, condition: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.records()
            if condition(records):
                return records
            time.sleep(0.5)
        raise AssertionError(f"{what}: not so within {timeout} s: {self.records()}")


def kopfs_record(record: Any, priority: int) -> bool:
    """ Kopf's format of a live peer's record. """
    if not isinstance(record, dict) or set(record) != {'priority', 'lifetime', 'lastseen'}:
        return False
    lastseen = datetime.datetime.fromisoformat(record['lastseen'])
    age = datetime.datetime.now(datetime.timezone.utc) - lastseen
    return (record['priority'] == priority and record['lifetime'] == 60 and lastseen.utcoffset() is not None
            and datetime.timedelta(seconds=-5) < age < datetime.timedelta(seconds=90))


@pytest.fixture()
def peers(plane, namespace, peering_crds, real_kopf, tmp_path) -> Peers:
    kubectl, operon, kubeconfig = plane
    return Peers(kubectl, kubeconfig, operon, real_kopf, namespace, tmp_path)


@pytest.mark.parametrize('low, high', [('kopf', 'operon'), ('operon', 'kopf')])
def test_the_lower_priority_pauses_for_the_higher_one_and_resumes_when_it_stops(peers, low, high):
    lower = peers.start(low, priority=100)
    higher: Operator | None = None
    try:
        peers.create(f'{low}-1', for_=low)
        peers.wait_handled(f'{low}-1', lower)  # the lower one is up and handling
        peers.wait_records("its record", lambda r: kopfs_record(r.get(f'{low}-e2e'), 100))

        mark = lower.mark()
        higher = peers.start(high, priority=200)
        line = lower.wait_for("Pausing operations in favour of", since=mark)
        assert f'<Peer {high}-e2e: priority=200, lifetime=60' in line, line  # Kopf's line, both
        peers.wait_records("both records, in Kopf's format", lambda r: kopfs_record(r.get(f'{high}-e2e'), 200)
                           and kopfs_record(r.get(f'{low}-e2e'), 100))
        peers.create(f'{high}-1', for_=high)
        peers.wait_handled(f'{high}-1', higher)  # the higher priority goes on
        peers.create(f'{low}-2', for_=low)
        peers.stays_unhandled(f'{low}-2', lower)  # the lower one is paused

        mark = lower.mark()
        code, higher = higher.stop(), None
        assert code == 0
        lower.wait_for("Resuming operations after the pause", since=mark)
        peers.wait_handled(f'{low}-2', lower)
        records = peers.wait_records("the higher one's record removed on exit", lambda r: f'{high}-e2e' not in r)
        assert kopfs_record(records.get(f'{low}-e2e'), 100), records
    finally:
        if higher is not None:
            higher.stop()
        assert lower.stop() == 0, lower.tail()
    assert 'Traceback' not in lower.output(), lower.tail()
    records = peers.wait_records("the lower one's record removed on exit", lambda r: f'{low}-e2e' not in r)
    assert records == {}, records


def freeze_and_resume(peers: Peers, operon: Operator) -> None:
    """ ``kopf freeze`` (priority 100) pauses Operon (priority 0); ``kopf resume`` resumes it. """
    peers.create('operon-1', for_='operon')
    peers.wait_handled('operon-1', operon)
    mark = operon.mark()
    peers.command('freeze', '-P', PEERING, '-n', peers.namespace, '-t', '60', '--id', 'freezer')
    line = operon.wait_for("Pausing operations in favour of", since=mark)
    assert 'freezer' in line, line
    peers.create('operon-2', for_='operon')
    peers.stays_unhandled('operon-2', operon)
    mark = operon.mark()
    peers.command('resume', '-P', PEERING, '-n', peers.namespace, '--id', 'freezer')
    operon.wait_for("Resuming operations after the pause", since=mark)
    peers.wait_handled('operon-2', operon)
    assert 'freezer' not in peers.records()


def test_kopf_freeze_pauses_operon_and_kopf_resume_resumes_it(peers):
    operon = peers.start('operon', priority=0)
    try:
        freeze_and_resume(peers, operon)
    finally:
        assert operon.stop() == 0, operon.tail()


@pytest.mark.parametrize('runtime', ['kopf', 'operon'])
def test_a_pause_is_not_a_restart_as_in_kopf(peers, runtime):
    # Kopf runs the resume handlers for the objects it finds at its start (`initial` causes); after
    # a pause its watch lists the objects again, but it knows them: no resume handlers then.
    operator = peers.start(runtime, priority=0)
    try:
        peers.create(f'{runtime}-1', for_=runtime)
        peers.wait_handled(f'{runtime}-1', operator)
        mark = operator.mark()
        peers.command('freeze', '-P', PEERING, '-n', peers.namespace, '-t', '60', '--id', 'freezer')
        operator.wait_for("Pausing operations in favour of", since=mark)
        mark = operator.mark()
        peers.command('resume', '-P', PEERING, '-n', peers.namespace, '--id', 'freezer')
        operator.wait_for("Resuming operations after the pause", since=mark)
        peers.create(f'{runtime}-2', for_=runtime)
        peers.wait_handled(f'{runtime}-2', operator)  # after the re-listing, surely
        time.sleep(3)  # and the resume handlers, if any, have had their time
        assert peers.handled(f'{runtime}-1', 'resume') == [], (
            f"{runtime} ran the resume handler again after the pause:\n{operator.tail()}")
    finally:
        assert operator.stop() == 0, operator.tail()
