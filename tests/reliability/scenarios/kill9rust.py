"""
kill -9 everything, Rust edition: the core (``operon run``) and the Rust example handler service
(``operon-example-handler``, proto/examples/rust) are SIGKILLed together at random moments while
objects are created, changed and deleted, then both start again. The handler service loses its
memory of answers by ``attempt_id`` with every kill, so nothing but the stored progress keeps a
success from running twice.

The handler's ledger does not see the objects, so "persisted" is judged from the outside: a
watch records when each success first appears stored on the object (its progress record says
success, the creation's diff-base is written, or the diff-base holds the generation's spec). A
call that starts after that moment re-runs a persisted success (must be 0). The watch sees a
write a little after it happened, so this errs on the lenient side by that delay, never the
other way.
"""
import collections
import contextlib
import json
import threading
import time
from typing import Any

import kubernetes

from harness import (CORE_READY, GROUP, PLURAL, VERSION, Context, Process, Row, ScenarioFailed, diff_base,
                     free_port, later, log, progress, repeated_successes, settled, trial_work,
                     wait_until)
from harness import ROOT

CREATION = ('first', 'second/a', 'second/b', 'third')
# A field handler's id ends with its field, as in Kopf (`field:counted=spec.n` → counted/spec.n).
COUNTED = 'counted/spec.n'


def behaviour(i: int) -> dict[str, Any]:
    """ The Rust example's script: `second` has two sub-handlers, `third` retries once on every
    other object, and every handler sleeps a little, so that kills land inside calls too. """
    nap = {'sleep': 0.02}
    third = {**nap, 'fail_temporarily': 1, 'delay': 0.3} if i % 2 == 0 else nap
    return {'first': nap, 'second': {'subhandlers': {'a': nap, 'b': nap}}, 'third': third,
            COUNTED: nap}


class Stored:
    """ When each success was first seen stored: (uid, handler) for creation, (uid, COUNTED, generation) for changes. """

    def __init__(self, ctx: Context, namespace: str) -> None:
        self.seen: dict[tuple[Any, ...], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(ctx, namespace), daemon=True)
        self._thread.start()

    def _watch(self, ctx: Context, namespace: str) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                stream = kubernetes.watch.Watch().stream(
                    ctx.api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, timeout_seconds=5)
                for event in stream:
                    self._note(event['object'], time.time())
                    if self._stop.is_set():
                        return

    def _note(self, obj: dict[str, Any], now: float) -> None:
        uid = obj['metadata']['uid']
        for handler_key, record in progress(obj).items():
            if record.get('success'):
                self.seen.setdefault((uid, handler_key.replace('.', '/')), now)
        base = diff_base(obj)
        if base is not None:
            for handler in CREATION:
                self.seen.setdefault((uid, handler), now)
            if base.get('spec') == obj.get('spec'):
                self.seen.setdefault((uid, COUNTED, obj['metadata'].get('generation')), now)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def persisted_before(self, entry: dict[str, Any]) -> bool:
        """ The call started after its own success was seen stored. """
        uid, handler, started = entry['uid'], entry['handler'], entry['started']
        if entry['reason'] == 'create':
            return self.seen.get((uid, handler), float('inf')) < started
        if handler == COUNTED:
            # Stored as handled at this generation or a later one, before the call started.
            return any(key[0] == uid and key[1] == COUNTED and key[2] >= entry['generation'] and at < started
                       for key, at in self.seen.items() if len(key) == 3)
        return False


def handled(obj: dict[str, Any]) -> bool:
    return settled(obj)


def run(ctx: Context) -> Row:
    row = Row('kill -9: core + Rust handler service')
    namespace = ctx.namespace('kill9rust')
    ledger = ctx.ledger('kill9rust')
    target = ROOT / 'target' / 'debug'
    handler_port = free_port()
    handler = Process(ctx, [str(target / 'operon-example-handler'), '--listen', f'127.0.0.1:{handler_port}',
                            '--ledger', str(ledger.path), '--resource', f'{GROUP}/{VERSION}/{PLURAL}',
                            '--handler', 'create:first', '--handler', 'create:second',
                            '--handler', 'create:third', '--handler', 'field:counted=spec.n'],
                      name='rust-handler', ready_line='listening on')
    core = Process(ctx, [ctx.base_env['OPERON_BIN'], 'run', '-n', namespace,
                         '--handler', f'http://127.0.0.1:{handler_port}', '--http', f'127.0.0.1:{free_port()}'],
                   name='core', ready_line=CORE_READY)
    stored = Stored(ctx, namespace)
    generations: collections.deque[list[str]] = collections.deque()
    created = 0
    per_trial = 50
    try:
        for trial in range(ctx.trials):
            handler.start()
            core.start()
            delay = ctx.random.uniform(0.5, 4.0)
            killed = later(delay, lambda: (handler.kill9(), core.kill9()))
            created += trial_work(ctx, namespace, trial, generations,
                                  lambda i: {'n': 0, 'behaviour': behaviour(i)}, per_trial)
            killed()
            handler.start()
            core.start()
            wait_until(lambda: all(handled(o) for o in ctx.objects(namespace)), timeout=120,
                       what=f"trial {trial} (killed {delay:.2f}s after the start): every object handled")
            if trial + 1 < ctx.trials:
                handler.kill9()
                core.kill9()
            if trial % 10 == 9:
                log(f"kill9rust: {trial + 1} of {ctx.trials} trials")
        for process in (core, handler):
            code = process.stop()
            row.check(code == 0, f"{process.name} exited with {code} after SIGTERM")
    except ScenarioFailed as e:
        row.failures.append(str(e))
    finally:
        stored.stop()

    not_handled = [o['metadata']['name'] for o in ctx.objects(namespace) if not handled(o)]
    entries = [dict(e, ended=e['ts']) for e in ledger.read()]
    kills = sorted(core.kills)
    persisted_reruns = [e for e in entries if e['outcome'] != 'cancelled' and stored.persisted_before(e)]
    at_least_once, unexplained = repeated_successes(
        entries, kills, key=lambda e: (e['uid'], e['handler'], e['reason'], e.get('generation') if e['handler'] == COUNTED else None))
    succeeded = {(e['uid'], e['handler']) for e in entries if e['outcome'] == 'success' and e['reason'] == 'create'}
    uids = {e['uid'] for e in entries}
    missing = [(uid, h) for uid in uids for h in CREATION if (uid, h) not in succeeded]
    row.figures.update({
        'kills at random moments': ctx.trials, 'objects': created, 'calls': len(entries),
        'persisted re-runs': len(persisted_reruns), 'at-least-once re-runs': at_least_once,
        'unexplained re-runs': len(unexplained), 'lost': len(missing) + len(not_handled),
    })
    row.check(not persisted_reruns, f"{len(persisted_reruns)} calls re-ran a persisted success, e.g. "
                                    f"{json.dumps(persisted_reruns[:1])}")
    row.check(not unexplained, f"{len(unexplained)} successes repeated with no kill in between, e.g. "
                               f"{unexplained[:1]}")
    row.check(len(uids) == created, f"{created - len(uids)} objects were never handled")
    row.check(not missing and not not_handled,
              f"lost: {len(missing)} creation handlers never succeeded ({missing[:3]}), "
              f"{len(not_handled)} objects not fully handled ({not_handled[:3]})")
    return row
