"""
kill -9 everything: ``kopf run`` and its core are SIGKILLed together at random moments while
objects are created, changed and deleted; after each kill the operator starts again and every
object must end fully handled.

Figures: kills, objects, handler calls; ``persisted re-runs`` — calls made with the handler's own
success already stored on the object (must be 0); ``at-least-once re-runs`` — a success repeated
because the kill came after the handler returned and before the core's PATCH stored it (Kopf has
the same window: the call is repeated, never lost); ``unexplained re-runs`` — a success repeated with no kill
between the two calls (must be 0); ``lost`` — objects not fully handled or changes whose handler
never saw the final value (must be 0).
"""
import collections
import time
from typing import Any

from harness import (HERE, Context, Operator, Row, ScenarioFailed, later, log, repeated_successes, settled,
                     trial_work, wait_until)

CREATION = ('first', 'second', 'second/a', 'second/b', 'third')


def handled(obj: dict[str, Any]) -> bool:
    status = obj.get('status') or {}
    n = obj['spec'].get('n', 0)
    counted = status.get('counted/spec.n', {}).get('n', 0) if n else 0
    return settled(obj) and all(status.get(h, {}).get('ok') for h in ('first', 'third')) and counted == n


def trial_of(ctx: Context, operator: Operator, namespace: str, trial: int,
             generations: collections.deque[list[str]], per_trial: int) -> int:
    """ One trial: start, work while a kill comes at a random moment, start again, settle. """
    operator.start()
    delay = ctx.random.uniform(0.5, 4.0)
    killed = later(delay, operator.kill9)
    created = trial_work(ctx, namespace, trial, generations,
                         lambda i: {'n': 0, 'flaky': i % 2 == 0}, per_trial)
    killed()
    operator.start()
    try:
        wait_until(lambda: all(handled(o) for o in ctx.objects(namespace)), timeout=120,
                   what=f"trial {trial} (killed {delay:.2f}s after the start): every object handled")
    except ScenarioFailed:
        left = [o['metadata']['name'] for o in ctx.objects(namespace) if not handled(o)]
        raise ScenarioFailed(f"trial {trial}: {len(left)} objects not fully handled (lost): {left[:5]}")
    if trial + 1 < ctx.trials:
        operator.kill9()  # idle: the next trial starts it afresh (a start-up, a listing)
    if trial % 10 == 9:
        log(f"kill9: {trial + 1} of {ctx.trials} trials")
    return created


def run(ctx: Context) -> Row:
    row = Row('kill -9: `kopf run` + core, whole process tree')
    namespace = ctx.namespace('kill9')
    ledger = ctx.ledger('kill9')
    operator = ctx.operator(HERE / 'operators' / 'kill9.py', namespace,
                            env={'RELIABILITY_LEDGER': str(ledger.path)})
    per_trial = 50
    generations: collections.deque[list[str]] = collections.deque()
    created = 0
    try:
        for trial in range(ctx.trials):
            created += trial_of(ctx, operator, namespace, trial, generations, per_trial)
        code = operator.stop()
        row.check(code == 0, f"kopf run exited with {code} after SIGTERM")
    except ScenarioFailed as e:  # the ledger is read all the same: what went wrong before this?
        row.failures.append(str(e))
    not_handled = [o['metadata']['name'] for o in ctx.objects(namespace) if not handled(o)]

    entries = ledger.read()
    # (The parent `second` runs again on every cycle until its sub-handlers are done, as in Kopf:
    # its lines are no successes — outcome `subhandlers`.)
    persisted_reruns = [e for e in entries if e['persisted']]
    at_least_once, unexplained = repeated_successes(
        entries, operator.kills, key=lambda e: (e['uid'], e['handler'], e['reason'], e.get('n')))
    uids = {e['uid'] for e in entries}
    creation = [h for h in CREATION if h != 'second']
    succeeded = {(e['uid'], e['handler']) for e in entries if e['outcome'] == 'success' and e['reason'] == 'create'}
    missing = [(uid, h) for uid in uids for h in creation if (uid, h) not in succeeded]
    row.figures.update({
        'kills at random moments': ctx.trials, 'objects': created, 'calls': len(entries),
        'persisted re-runs': len(persisted_reruns), 'at-least-once re-runs': at_least_once,
        'unexplained re-runs': len(unexplained), 'lost': len(missing) + len(not_handled),
    })
    row.check(not unexplained, f"{len(unexplained)} successes repeated with no kill in between, e.g. "
                               f"{unexplained[:1]}")
    row.check(not persisted_reruns, f"{len(persisted_reruns)} calls re-ran a persisted success, e.g. "
                                    f"{persisted_reruns[:2]}")
    row.check(len(uids) == created, f"{created - len(uids)} objects were never handled")
    row.check(not missing, f"{len(missing)} creation handlers never succeeded, e.g. {missing[:3]}")
    return row
