"""
Conflicts: while ``kopf run`` handles a few objects, a second writer changes the same objects in a
tight loop (no pause between its writes): their ``spec.v`` (which the update handler watches), a
foreign annotation ``example.com/foreign: <counter>``, and a foreign finalizer
``example.com/foreign-finalizer`` that it adds and removes. It writes the spec and the annotation
with merge patches, and the finalizer list as a careful client does: read, change, write back
guarded by the ``resourceVersion`` read, again on a 409. It runs 10 s (60 s in the long mode),
then stops; the objects must settle, and are then deleted.

Checks:

- ``lost updates`` — per object, the final ``spec.v`` was seen by a handler (a success line in the
  ledger with it), the update handler's result and the diff-base hold it: must be 0.
- ``clobbered`` — what the second writer wrote last is still there: its ``spec.v``, its
  annotation's value, its finalizer present or absent as it left it; and the core's own finalizer
  is there too (added in spite of the races): must be 0.
- ``re-runs`` — a success in the ledger more than once (per object and handler, and per value for
  the update handler): nothing is killed here, so must be 0; ``persisted re-runs`` likewise.
- The end is clean: with the foreign finalizer removed, every object is deleted, its deletion
  handler called once.
- Figure only: the ``resourceVersion`` conflicts the core met and retried. The core's merge
  patches carry no ``resourceVersion`` (as Kopf's), so they cannot conflict; its finalizer JSON
  patch tests the ``resourceVersion`` it saw, and a lost race (409, or 422 for a failed ``test``)
  is left to the next cycle (``operator/src/runtime/patching.rs``). They are counted from
  ``operon_api_requests_total{verb="patch",code="409"|"422"}`` and from the core's DEBUG line
  "The finalizer patch lost a race" (``kopf run --verbose`` with ``OPERON_LOG``). That the core
  retried is what the check of its finalizer above shows.
"""
import collections
import dataclasses
import time
from typing import Any, cast

from kubernetes.client.exceptions import ApiException

from harness import (GROUP, HERE, PLURAL, VERSION, Context, Loop, Row, ScenarioFailed, annotations,
                     free_port, http_get, log, metric, settled, wait_until)

FOREIGN_ANNOTATION = 'example.com/foreign'
FOREIGN_FINALIZER = 'example.com/foreign-finalizer'
CORE_FINALIZER = 'kopf.zalando.org/KopfFinalizerMarker'
OBJECTS = 8


@dataclasses.dataclass
class Wrote:
    """ What the second writer last wrote to one object (annotation ``None``: none yet). """
    v: int = 0
    annotation: str | None = None
    finalizer: bool = False


class SecondWriter(Loop):
    """ The other writer: one thread, a tight loop over the objects, a random kind of write each. """

    def __init__(self, ctx: Context, namespace: str, names: list[str]) -> None:
        self.ctx, self.namespace, self.names = ctx, namespace, names
        self.wrote = {name: Wrote() for name in names}
        self.writes: collections.Counter[str] = collections.Counter()
        self.conflicts = 0  # its own 409s on the guarded finalizer writes
        self._counter = 0
        super().__init__()

    def set_finalizer(self, name: str, present: bool | None = None) -> None:
        """ Adds or removes the foreign finalizer (``None``: toggles it), guarded by the
        ``resourceVersion`` read; a 409 (someone wrote in between) means read and try again. """
        while True:
            read = self.ctx.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
            obj = cast(dict[str, Any], read)
            finalizers = list(obj['metadata'].get('finalizers') or [])
            want = FOREIGN_FINALIZER not in finalizers if present is None else present
            if want == (FOREIGN_FINALIZER in finalizers):
                return
            others = [f for f in finalizers if f != FOREIGN_FINALIZER]
            patch = {'metadata': {'finalizers': others + [FOREIGN_FINALIZER] if want else others,
                                  'resourceVersion': obj['metadata']['resourceVersion']}}
            try:
                self.ctx.patch(self.namespace, name, patch)
            except ApiException as e:
                if e.status != 409:
                    raise
                self.conflicts += 1
                continue
            self.wrote[name].finalizer = want
            self.writes['finalizer'] += 1
            return

    def _write(self, name: str, kind: str) -> None:
        self._counter += 1
        if kind == 'spec':
            self.ctx.patch(self.namespace, name, {'spec': {'v': self._counter}})
            self.wrote[name].v = self._counter
        elif kind == 'annotation':
            value = str(self._counter)
            self.ctx.patch(self.namespace, name, {'metadata': {'annotations': {FOREIGN_ANNOTATION: value}}})
            self.wrote[name].annotation = value
        else:
            self.set_finalizer(name)
            return
        self.writes[kind] += 1

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for name in self.ctx.random.sample(self.names, len(self.names)):
                    self._write(name, self.ctx.random.choice(('spec', 'annotation', 'finalizer')))
        except BaseException as e:  # noqa: B036 — handed over to stop()
            self._errors.append(e)


def handled(obj: dict[str, Any]) -> bool:
    """ Settled: created, and the last change of ``spec.v`` (if any) answered. """
    status = obj.get('status') or {}
    changed = status.get('changed/spec.v', {}).get('v')
    return (settled(obj) and bool(status.get('created', {}).get('ok'))
            and (changed is None or changed == obj['spec'].get('v')))


def clobbered(obj: dict[str, Any], wrote: Wrote) -> list[str]:
    """ What of the second writer's last writes (and the core's finalizer) is not on the object. """
    finalizers = obj['metadata'].get('finalizers') or []
    problems = []
    if obj['spec'].get('v') != wrote.v:
        problems.append(f"spec.v {obj['spec'].get('v')} != {wrote.v}")
    if annotations(obj).get(FOREIGN_ANNOTATION) != wrote.annotation:
        problems.append(f"annotation {annotations(obj).get(FOREIGN_ANNOTATION)!r} != {wrote.annotation!r}")
    if (FOREIGN_FINALIZER in finalizers) != wrote.finalizer:
        problems.append(f"foreign finalizer {'present' if not wrote.finalizer else 'absent'}")
    if CORE_FINALIZER not in finalizers:
        problems.append("the core's finalizer missing")
    return problems


def run(ctx: Context) -> Row:
    seconds = 60.0 if ctx.long else 10.0
    row = Row(f'conflicts: a second writer on the same objects, {seconds:.0f}s tight loop')
    namespace = ctx.namespace('conflicts')
    ledger = ctx.ledger('conflicts')
    http = free_port()
    # --verbose and OPERON_LOG: the core's DEBUG lines of its writes (the lost races) in the log.
    operator = ctx.operator(HERE / 'operators' / 'conflicts.py', namespace, args=['--verbose'], name='conflicts',
                            env={'RELIABILITY_LEDGER': str(ledger.path), 'OPERON_HTTP': f'127.0.0.1:{http}',
                                 'OPERON_LOG': 'info,kopf.objects=debug,operon::runtime::patching=debug'})
    names = [f'c-{i}' for i in range(OBJECTS)]
    writer = SecondWriter(ctx, namespace, names)
    metrics = ''
    final: dict[str, dict[str, Any]] = {}
    wrote: dict[str, Wrote] = {}  # what the second writer had written when it stopped
    gone = False
    try:
        operator.start()
        wait_until(lambda: http_get(f'http://127.0.0.1:{http}/readyz')[0] == 200, timeout=60,
                   what="the core ready")
        for name in names:
            ctx.create(namespace, name, {'v': 0})
        writer.start()  # at once: racing the core's first cycles (its finalizer, the creation)
        time.sleep(seconds)
        writer.stop()
        wrote = {name: dataclasses.replace(w) for name, w in writer.wrote.items()}
        log(f"conflicts: the second writer stopped after {sum(writer.writes.values())} writes")
        try:
            wait_until(lambda: all(handled(o) for o in ctx.objects(namespace)), timeout=60,
                       what="every object settled after the second writer stopped")
        except ScenarioFailed:
            pass  # counted as lost updates below
        final = {o['metadata']['name']: o for o in ctx.objects(namespace)}
        metrics = http_get(f'http://127.0.0.1:{http}/metrics')[1]
        for name in names:
            writer.set_finalizer(name, present=False)
            ctx.delete(namespace, name)
        wait_until(lambda: not ctx.objects(namespace), timeout=60, what="every object deleted")
        gone = True
        code = operator.stop()
        row.check(code == 0, f"kopf run exited with {code} after SIGTERM")
    except ScenarioFailed as e:
        row.failures.append(str(e))
    finally:
        writer.stop()

    entries = ledger.read()
    successes: dict[tuple[Any, ...], list[dict[str, Any]]] = collections.defaultdict(list)
    seen = set()
    for entry in entries:
        if entry['handler'] in ('created', 'changed/spec.v'):  # the calls that see changes
            seen.add((entry['uid'], entry['v']))
        key = ((entry['uid'], entry['handler'], entry['v']) if entry['handler'] == 'changed/spec.v'
               else (entry['uid'], entry['handler']))
        successes[key].append(entry)
    reruns = [calls for calls in successes.values() if len(calls) > 1]
    persisted = [entry for entry in entries if entry['persisted']]
    lost = [name for name in names if name not in final or not handled(final[name])
            or (final[name]['metadata']['uid'], final[name]['spec'].get('v')) not in seen]
    damage = {name: problems for name in names if name in final and name in wrote
              for problems in [clobbered(final[name], wrote[name])] if problems}
    uids = {o['metadata']['uid'] for o in final.values()}
    undeleted = [uid for uid in uids if len(successes[(uid, 'deleted')]) != 1]
    log_text = operator.log_path.read_text(errors='replace')
    core_conflicts = {code: metric(metrics, 'operon_api_requests_total', verb='patch', code=code)
                      for code in ('409', '422')}

    row.figures.update({
        'objects': len(names), 'second writer': ', '.join(f'{k} {v}' for k, v in sorted(writer.writes.items())),
        "writer's own 409s": writer.conflicts,
        "core's patch 409/422": f"{core_conflicts['409']:.0f}/{core_conflicts['422']:.0f}",
        'lost-race lines': log_text.count('lost a race'),
        'inconsistencies': log_text.count('finished with inconsistencies'),
        'calls': len(entries), 're-runs': len(reruns), 'persisted re-runs': len(persisted),
        'lost updates': len(lost), 'clobbered': len(damage),
    })
    row.check(not lost, f"{len(lost)} objects lost an update (final spec.v not handled), e.g. "
                        f"{[(n, final[n]['spec'] if n in final else None) for n in lost[:3]]}")
    row.check(not damage, f"{len(damage)} objects lost the second writer's writes or the core's finalizer: "
                          f"{dict(list(damage.items())[:3])}")
    row.check(not reruns, f"{len(reruns)} successes repeated with nothing killed, e.g. {reruns[:1]}")
    row.check(not persisted, f"{len(persisted)} calls re-ran a persisted success, e.g. {persisted[:2]}")
    row.check(gone and len(uids) == len(names) and not undeleted,
              f"deletion not clean: all gone {gone}, {len(undeleted)} of {len(uids)} objects without exactly "
              f"one deletion handler success")
    return row
