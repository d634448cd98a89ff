"""
The network between the operator and the API server breaks: the operator (``kopf run`` and its
core) reaches the API server only through a proxy (:mod:`proxy`) that the scenario breaks on
purpose, while the scenario itself talks to the API server directly.

**A cut under load.** While objects are created and their ``spec.n`` changed (two of each per
second), every connection through the proxy is reset and new ones are refused for
:data:`CUT_SECONDS`; then the network heals. One creation handler (``straddling``) is sure to be
running when the cut comes, so that its result has to be stored during the cut. Checks: every
object ends fully handled, with its final ``spec.n`` seen by a handler (``lost``: must be 0); no
success repeated (``repeated successes``: the same handler, object, reason and value succeeding
twice — there is no kill here, so every repeat is one too many); no stored success run again
(``persisted re-runs``); the core logged the broken watch; a call was in flight at the cut (or
the scenario proved nothing about it). Figure: ``handled after the heal`` — when the last object
was fully handled (mostly the watch's backoff, grown during the cut).

**A silent watch.** The connections open at one moment stop carrying bytes without being closed
(a NAT or a load balancer that forgot them), while new connections work. Two operators run side
by side: one with ``settings.watching.inactivity_timeout`` = :data:`SILENCE` (the core's
``--watch-silence-timeout``), one with :data:`SILENCE_CONTROL` (the negative control). Once each
has handled a first object, its connections are stalled, a new object is created and the first
one changed: the first operator must handle both within :data:`SILENCE` + :data:`MARGIN` seconds,
having logged that its watch was silent; the control must *not* handle them in the same window
(otherwise something else rescued the watch and the first figure proves nothing), and must handle
them once its connections are healed (so it was the silent watch alone that held them back).
Nothing else rescues a stalled watch sooner: the server's end of a watch (``timeoutSeconds=290``)
never comes through a stalled connection, kube-runtime gives up on an idle watch after 295 s, and
the core's client has no read timeout. Each idle keep-alive connection stalled with the watch costs
another silence period (the restarted watch's listing is sent on it): ``silent restarts before
it`` counts them.
"""
import collections
import dataclasses
import pathlib
import time
from collections.abc import Callable
from typing import Any

from harness import HERE, Context, Operator, Row, ScenarioFailed, log, settled, wait_until
from proxy import Proxy, kubeconfig_via, upstream_of

CUT_SECONDS = 30.0
STRADDLE_SECONDS = 3.0  # a creation handler that starts 1 s before the cut and ends 2 s into it
SILENCE = 5.0          # the silence timeout under test
SILENCE_CONTROL = 600.0  # the negative control's: far beyond the window
MARGIN = 10.0          # a second silence (see above), the listing, the calls and PATCHes
SETTLE = 60.0          # after the heal: the watch's backoff is 30 s at most
WATCH_FAILED = 'The watch failed'
WATCH_SILENT = 'The watch has been silent too long'
PATCH_FAILED = 'Patching failed'


def handled(obj: dict[str, Any]) -> bool:
    """ Creation done, and the current ``spec.n`` seen by the creation handler (an object first
    seen already changed) or by the update handler; nothing left to do. """
    status = obj.get('status') or {}
    seen = (status.get('created', {}).get('n'), status.get('counted/spec.n', {}).get('n'))
    return settled(obj) and bool(status.get('created', {}).get('ok')) and obj['spec'].get('n', 0) in seen


def key(entry: dict[str, Any]) -> tuple[str, str, str, Any]:
    """ What a success is unique by: a creation once per object, an update once per value (every
    change sets a value never used before). """
    return (entry['uid'], entry['handler'], entry['reason'],
            entry.get('n') if entry['handler'] == 'counted/spec.n' else None)


@dataclasses.dataclass
class Proxied:
    """ An operator whose every connection to the API server goes through its own proxy. """
    operator: Operator
    proxy: Proxy
    namespace: str

    def log_between(self, start: int, end: int | None = None) -> str:
        """ The operator's log from byte ``start`` (a :meth:`log_size`) to ``end`` or its end. """
        return self.operator.log_path.read_bytes()[start:end].decode(errors='replace')

    def log_size(self) -> int:
        return self.operator.log_path.stat().st_size


def proxied(ctx: Context, label: str, ledger: pathlib.Path, proxies: list[Proxy],
            env: dict[str, str] | None = None) -> Proxied:
    """ A namespace, a proxy to the API server and an operator that goes through it (started). """
    namespace = ctx.namespace(label)
    source = pathlib.Path(ctx.base_env['KUBECONFIG'])
    proxy = Proxy(upstream_of(source))
    proxies.append(proxy)
    kubeconfig = kubeconfig_via(proxy, source, ctx.workdir / f'kubeconfig-{label}')
    operator = ctx.operator(HERE / 'operators' / 'network.py', namespace, name=f'network-{label}',
                            env={'RELIABILITY_LEDGER': str(ledger), 'KUBECONFIG': str(kubeconfig),
                                 **(env or {})})
    operator.start()
    return Proxied(operator, proxy, namespace)


def all_handled(ctx: Context, namespace: str) -> bool:
    return all(handled(o) for o in ctx.objects(namespace))


def first_object(ctx: Context, side: Proxied) -> None:
    """ Creates an object and waits until it is handled: the operator is up and watching. """
    ctx.create(side.namespace, 'first', {'n': 0})
    wait_until(lambda: all_handled(ctx, side.namespace), timeout=60,
               what=f"{side.namespace}: the first object handled")


def load(ctx: Context, namespace: str, seconds: float, names: list[str], counter: list[int]) -> None:
    """ For ``seconds``: every 0.5 s, a new object and a change of ``spec.n`` of an older one
    (to a value never used before, so that every success has a key of its own). """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        name = f'o{len(names)}'
        ctx.create(namespace, name, {'n': 0})
        names.append(name)
        counter[0] += 1
        ctx.patch(namespace, ctx.random.choice(names), {'spec': {'n': counter[0]}})
        time.sleep(0.5)


def cut_under_load(ctx: Context, row: Row, proxies: list[Proxy]) -> None:
    """ The cut under load (see the module's docstring): its figures and checks into ``row``. """
    ledger = ctx.ledger('network-cut')
    side = proxied(ctx, 'cut', ledger.path, proxies)
    first_object(ctx, side)
    names: list[str] = []
    counter = [0]
    load(ctx, side.namespace, 2, names, counter)
    # One creation handler is sure to be running when the cut comes: it ends during the cut.
    ctx.create(side.namespace, 'straddling', {'n': 0, 'sleep': STRADDLE_SECONDS})
    load(ctx, side.namespace, 1, names, counter)
    cut_at = time.time()
    cut = side.proxy.cut()
    log(f"network: cut {cut} connections for {CUT_SECONDS:.0f}s under load")
    load(ctx, side.namespace, CUT_SECONDS, names, counter)
    side.proxy.heal()
    healed = time.monotonic()
    load(ctx, side.namespace, 3, names, counter)
    try:
        wait_until(lambda: all_handled(ctx, side.namespace), timeout=SETTLE,
                   what="after the cut: every object handled")
        after_heal = f'{time.monotonic() - healed:.1f} s'
    except ScenarioFailed:
        after_heal = f'not all in {SETTLE:.0f} s'
    finally:
        code = side.operator.stop()
    row.check(code == 0, f"after the cut: kopf run exited with {code} after SIGTERM")

    objects = {o['metadata']['uid']: o for o in ctx.objects(side.namespace)}
    entries = ledger.read()
    successes = collections.Counter(key(e) for e in entries)
    repeated = [k for k, count in successes.items() if count > 1]
    persisted = [e for e in entries if e['persisted']]
    straddling = [e for e in entries if e['started'] < cut_at < e['ended']]
    saw = {(e['uid'], e['n']) for e in entries}  # every (object, spec.n) that a handler was called with
    lost = sorted(o['metadata']['name'] for uid, o in objects.items()
                  if not handled(o) or (uid, o['spec'].get('n', 0)) not in saw)
    log_text = side.log_between(0)
    failed_watches = log_text.count(WATCH_FAILED)
    row.figures.update({
        'cut: objects': len(objects), 'changes': counter[0],
        'connections cut/refused': f'{cut}/{side.proxy.counts.refused}',
        'watch failures logged': failed_watches, 'calls across the cut': len(straddling),
        'PATCHes failed': log_text.count(PATCH_FAILED), 'handled after the heal': after_heal,
        'repeated successes': len(repeated), 'persisted re-runs': len(persisted), 'lost': len(lost),
    })
    row.check(cut > 0 and side.proxy.counts.refused > 0,
              f"the cut cut nothing ({cut} connections cut, {side.proxy.counts.refused} refused): "
              "does the operator go through the proxy?")
    row.check(bool(straddling), "no handler call was running when the cut came")
    row.check(not repeated, f"after the cut: {len(repeated)} successes repeated, e.g. "
                            f"{[e for e in entries if key(e) in repeated[:1]]}")
    row.check(not persisted, f"after the cut: {len(persisted)} calls re-ran a persisted success, e.g. {persisted[:2]}")
    row.check(not lost, f"after the cut: {len(lost)} objects not fully handled {SETTLE:.0f} s after the heal, "
                        f"or their final spec.n never seen by a handler (lost): {lost[:5]}")
    row.check(failed_watches > 0, f"the core did not log a broken watch ({WATCH_FAILED!r}) during the cut")


def silent_watch(ctx: Context, row: Row, proxies: list[Proxy]) -> None:
    """ The silent watch and its negative control (see the module's docstring), into ``row``. """
    ledger = ctx.ledger('network-silent')
    tested = proxied(ctx, 'silent', ledger.path, proxies, env={'RELIABILITY_SILENCE': str(SILENCE)})
    control = proxied(ctx, 'silent-control', ledger.path, proxies,
                      env={'RELIABILITY_SILENCE': str(SILENCE_CONTROL)})
    for side in (tested, control):
        first_object(ctx, side)
    window = SILENCE + MARGIN
    offsets, stalled_links, forwarded = {}, {}, {}
    for side in (tested, control):
        offsets[side.namespace] = side.log_size()
        forwarded[side.namespace] = side.proxy.counts.forwarded
        stalled_links[side.namespace] = side.proxy.stall()
    stalled = time.monotonic()
    for side in (tested, control):
        ctx.create(side.namespace, 'second', {'n': 0})
        ctx.patch(side.namespace, 'first', {'spec': {'n': 1}})
    seen: dict[str, float] = {}
    seen_at_log: dict[str, int] = {}

    def both_seen_or_window() -> bool:
        for side in (tested, control):
            if side.namespace not in seen and all_handled(ctx, side.namespace):
                seen[side.namespace] = time.monotonic() - stalled
                seen_at_log[side.namespace] = side.log_size()
        return len(seen) == 2 or time.monotonic() - stalled > window

    wait_until(both_seen_or_window, timeout=window + 30, what="the silent watch's window")
    in_tested = seen.get(tested.namespace)
    in_control = seen.get(control.namespace)
    # Restarts logged between the stall and the handling (an idle watch restarts too, later).
    restarts = tested.log_between(offsets[tested.namespace], seen_at_log.get(tested.namespace)).count(WATCH_SILENT)
    control_restarts = control.log_between(offsets[control.namespace]).count(WATCH_SILENT)
    row.figures[f'silent watch, timeout {SILENCE:.0f} s: handled in'] = (
        f'{in_tested:.1f} s' if in_tested is not None else f'not in {window:.0f} s')
    row.figures['silent restarts before it'] = restarts
    row.figures['connections stalled/opened since'] = (
        f'{stalled_links[tested.namespace]}/{tested.proxy.counts.forwarded - forwarded[tested.namespace]}')
    row.check(in_tested is not None,
              f"silent watch: the change was not handled within {window:.0f} s "
              f"(silence timeout {SILENCE:.0f} s + {MARGIN:.0f} s)")
    row.check(restarts > 0, f"silent watch: the core did not log {WATCH_SILENT!r} after the stall")
    # The negative control: without the short timeout, the stalled watch must hold the change back.
    row.check(in_control is None,
              f"silent watch's control (timeout {SILENCE_CONTROL:.0f} s): handled anyway in "
              f"{in_control or 0:.1f} s — something else restarts a silent watch, the check proves nothing")
    row.check(control_restarts == 0, f"silent watch's control: {control_restarts} silent restarts logged")
    control.proxy.heal()
    healed = time.monotonic()
    try:
        wait_until(lambda: all_handled(ctx, control.namespace), timeout=30,
                   what="silent watch's control: handled after the heal")
        healed_in = f'{time.monotonic() - healed:.1f} s'
    except ScenarioFailed as e:
        row.failures.append(str(e))
        healed_in = 'never'
    row.figures[f'without it ({SILENCE_CONTROL:.0f} s)'] = (
        f'not handled in {window:.0f} s, then {healed_in} after the heal' if in_control is None
        else f'handled in {in_control:.1f} s')
    for side in (tested, control):
        code = side.operator.stop()
        row.check(code == 0, f"silent watch: kopf run exited with {code} after SIGTERM")


def run(ctx: Context) -> Row:
    row = Row(f'network: a {CUT_SECONDS:.0f} s cut under load; a silent watch')
    proxies: list[Proxy] = []
    parts: list[Callable[[Context, Row, list[Proxy]], None]] = [cut_under_load, silent_watch]
    try:
        for part in parts:
            try:
                part(ctx, row, proxies)
            except ScenarioFailed as e:  # one part failing does not hide the other's figures
                row.failures.append(f"{part.__name__}: {e}")
    finally:
        for proxy in proxies:
            proxy.close()
    return row
