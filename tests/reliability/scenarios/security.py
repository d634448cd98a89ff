"""
Security: what a dashboard user, a log reader and the cluster's RBAC get to see.

1. **Hostile content is escaped.** A Kopf operator (``operators/security.py``, served by ``kopf
   serve``; the core runs on its own with a dashboard token and ``OPERON_LOG=debug``) puts
   hostile strings (``PAYLOADS``) in a TemporaryError's and a PermanentError's message, a result,
   Events, annotations and the spec (which the diff shows). Headless Chromium, driven over the
   DevTools protocol (``--dump-dom --virtual-time-budget`` never returns on a live page: the
   page's EventSource keeps virtual time from running out), loads the list page, both objects'
   pages, the object page again after a live refresh (the script swaps the region in), and two
   pages that reflect the URL (``?q=``, an unknown object's path). On each: the title is not
   PWNED, no element a payload would create exists (``img``, ``svg``, a foreign ``script``, an
   ``on*`` attribute), and each string shown there IS present as text — so nothing passes by not
   being shown. The JSON API answers ``application/json`` and the server-sent events
   ``text/event-stream``, every event's data a JSON document with the payloads inside its strings.
2. **The token.** Every route but the probes refuses a request without the token, with a wrong
   bearer, a wrong cookie, a wrong ``?token=``, the right token as a cookie (the cookie carries it
   hex-encoded) and under another scheme (401); the right bearer and cookie pass (200), the right
   ``?token=`` redirects (303) to the URL without it and sets an HTTP-only, same-site cookie. The
   core's and the operator's logs hold neither the token nor the wrong ones tried. The figure
   says where the comparison is and whether it is constant-time (read from the source).
3. **Secrets stay out.** The operator handles Secrets in its namespace; a Secret carries canaries
   in ``data`` and ``stringData``, then a changed ``stringData``. The canaries — plain and
   base64, at any alignment — must be nowhere: the JSON API, the events, the list page and the
   Secret's page (DOM and HTML), the core's log at debug level, the operator's log (``kopf serve
   --debug``), and — when ``OPERON_JAEGER_QUERY`` (Jaeger's query API, e.g.
   ``http://127.0.0.1:16686``) is set — the traces of the core and the SDK (exported to
   ``OPERON_JAEGER_OTLP``, default the same host's port 4317). Without it the traces are not
   checked, and the row says so.
4. **RBAC as generated.** ``operon rbac --handler … -n NS`` for two Rust services — the example
   handler (a change handler and a task type) and the sync example (ConfigMap and Service
   children) — is applied as printed to a fresh ServiceAccount; the core runs with only that
   account's token (a kubeconfig of its own) and must do the work end to end: children created
   and pruned, the task Succeeded, the change handler's diff-base written. Then a core that is
   also told to serve a namespace the Role does not cover: its requests there fail with 403,
   which must be visible in the core's log naming the namespace, with ``/readyz`` not ready
   (503); the figure says what the core still does meanwhile in the covered namespace (its
   change handlers, the sync, a task: served, or held). The account's token must not be logged.
"""
import base64
import contextlib
import http.client
import json
import os
import pathlib
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable
from typing import Any

import kubernetes
import websocket
import yaml
from kubernetes.client.rest import ApiException

from harness import (CORE_READY, GROUP, HERE, PLURAL, ROOT, VERSION, Context, Process, Row, ScenarioFailed, free_port,
                     log, settled, wait_until)

OPERATOR = HERE / 'operators' / 'security.py'
PAYLOADS = (
    '<img src=x onerror="document.title=\'PWNED\'">',
    "<script>document.title='PWNED'</script>",
    '"\'><svg onload=document.title=\'PWNED\'>',
    "</script><script>document.title='PWNED'</script>",
)
DIFFBASE = 'kopf.zalando.org/last-handled-configuration'
# Without the back/forward cache: a cached page keeps its EventSource open, and six of them take
# all of Chromium's six connections to the dashboard: the seventh page never loads.
CHROMIUM_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync',
                  '--disable-features=BackForwardCache')
# What a payload would create, were it parsed as HTML: any image, SVG or frame, a script but the
# page's own, an event handler attribute. The page's own drawings (the live charts, the timeline
# of attempts) are SVGs with role="img" placed directly in their figure; a payload's SVG sits in
# a text cell instead.
INJECTED_JS = """(() => {
  const found = [];
  const own = (el) => el.localName === 'svg' && el.getAttribute('role') === 'img'
    && el.parentElement && el.parentElement.matches('figure.chart, figure.tl');
  for (const el of document.querySelectorAll('*')) {
    const tag = el.localName;
    if ((['img', 'svg', 'iframe', 'object', 'embed'].includes(tag) && !own(el))
        || (tag === 'script' && el.getAttribute('src') !== '/assets/live.js')) {
      found.push(el.outerHTML.slice(0, 160));
    }
    for (const a of el.attributes) if (a.name.startsWith('on')) found.push(tag + '[' + a.name + ']');
  }
  const attrs = [];
  for (const el of document.querySelectorAll('*')) for (const a of el.attributes) attrs.push(a.value);
  return {title: document.title, injected: found, text: document.documentElement.textContent,
          attrs: attrs, html: document.documentElement.outerHTML};
})()"""
SITES = ('securitysites', 'SecuritySite')
TASKS = ('securitytasks', 'SecurityTask')
RBAC_GROUP = 'reliability.operon.dev'


def hostile(channel: str) -> str:
    """ As the operator builds it (``operators/security.py``). """
    return f"{channel}: " + ' '.join(PAYLOADS)


def as_json(text: str) -> str:
    """ A string as the diff shows it (compact JSON, as serde_json writes it). """
    return json.dumps(text, ensure_ascii=False)


# --- HTTP ------------------------------------------------------------------------------------------
class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode(errors='replace')


def fetch(port: int, path: str, headers: dict[str, str] | None = None, *, timeout: float = 20,
          host: str = '127.0.0.1') -> Answer:
    """ One GET; the body of a stream (server-sent events) is not read. """
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request('GET', path, headers=headers or {})
        response = conn.getresponse()
        found = {k.lower(): v for k, v in response.getheaders()}
        streaming = found.get('content-type', '').startswith('text/event-stream')
        return Answer(response.status, found, b'' if streaming else response.read())
    finally:
        conn.close()


def bearer(token: str) -> dict[str, str]:
    return {'Authorization': f'Bearer {token}'}


class EventStream:
    """ ``/api/v1/events`` read in a thread: its content type and every line, until closed. """

    def __init__(self, port: int, token: str) -> None:
        self.lines: list[str] = []
        self.content_type: str | None = None
        self.status: int | None = None
        self._conn = http.client.HTTPConnection('127.0.0.1', port, timeout=30)
        self._conn.request('GET', '/api/v1/events', headers=bearer(token))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
            response = self._conn.getresponse()
            self.status, self.content_type = response.status, response.getheader('content-type')
            if self._conn.sock is not None:
                self._conn.sock.settimeout(None)
            while line := response.readline():
                self.lines.append(line.decode(errors='replace').rstrip('\r\n'))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self._conn.sock is not None:
                self._conn.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)
        self._conn.close()

    def data(self) -> list[str]:
        return [line[len('data:'):].strip() for line in self.lines if line.startswith('data:')]


# --- Chromium over the DevTools protocol -------------------------------------------------------
class Browser:
    """ Headless Chromium (a fresh profile), one page driven over the DevTools protocol. """

    def __init__(self, ctx: Context) -> None:
        exe = shutil.which('chromium') or '/usr/bin/chromium'
        if not os.access(exe, os.X_OK):
            raise ScenarioFailed("no Chromium (apt-get install -y chromium): the pages cannot be checked")
        self.profile = pathlib.Path(tempfile.mkdtemp(prefix='chromium-', dir=ctx.workdir))
        self.process = Process(ctx, [exe, *CHROMIUM_FLAGS, f'--user-data-dir={self.profile}',
                                     '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0',
                                     'about:blank'], name='chromium')
        self.process.start()
        active = self.profile / 'DevToolsActivePort'
        port = wait_until(lambda: active.exists() and active.read_text().split()[:1], timeout=30,
                          what="Chromium's DevTools port")[0]
        targets = json.loads(fetch(int(port), '/json/list').body)
        page = next(t for t in targets if t['type'] == 'page')
        self.ws = websocket.create_connection(page['webSocketDebuggerUrl'], suppress_origin=True, timeout=30)
        self._id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({'id': self._id, 'method': method, 'params': params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get('id') == self._id:
                if 'error' in message:
                    raise ScenarioFailed(f"Chromium: {method}: {message['error']}")
                return message['result']  # type: ignore[no-any-return]

    def evaluate(self, expression: str) -> Any:
        result = self.call('Runtime.evaluate', expression=expression, returnByValue=True, awaitPromise=True)
        return result['result'].get('value')

    def open(self, url: str) -> None:
        """ Navigates and waits for the new document's load (the old window's mark is gone). """
        self.evaluate('window.previousPage = true')
        self.call('Page.navigate', url=url)
        wait_until(lambda: self.evaluate("!window.previousPage && document.readyState === 'complete'"),
                   timeout=30, what=f"{url} loaded")
        time.sleep(0.5)  # an image's error, a late script

    def page(self) -> dict[str, Any]:
        return self.evaluate(INJECTED_JS)  # type: ignore[no-any-return]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call('Browser.close')
        with contextlib.suppress(Exception):
            self.ws.close()
        if self.process.process is not None:
            try:
                self.process.process.wait(timeout=10)
                self.process.process = None
            except subprocess.TimeoutExpired:
                self.process.kill9()


# --- what to look for --------------------------------------------------------------------------
def b64_needles(text: str) -> list[str]:
    """ ``text`` plain, and its base64 at each of the three alignments it can have inside longer
    base64 (the characters that do not depend on the neighbours). """
    raw = text.encode()
    found = [text]
    for shift in range(3):
        encoded = base64.b64encode(b'\0' * shift + raw).decode()
        start = (shift * 4 + 2) // 3  # the first characters mix in the bytes before
        end = len(encoded) - (4 if (shift + len(raw)) % 3 else 0)  # the last, the bytes after
        found.append(encoded[start:end])
    return found


def where(needles: Iterable[str], text: str) -> list[str]:
    """ The lines of ``text`` holding a needle (cut, with the needle's position). """
    lines = []
    for line in text.splitlines():
        for needle in needles:
            at = line.find(needle)
            if at >= 0:
                plain = re.sub(r'\x1b\[[0-9;]*m', '', line)
                at = max(plain.find(needle), 0)
                lines.append(plain[:at + 60] if at < 160 else f"{plain[:110]} … {plain[at - 40:at + 60]}")
                break
    return lines


def strings_of(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings_of(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_of(v)


def constant_time_figure() -> str:
    """ Where the token is compared, and whether the comparison is constant-time (read from the
    source: a figure, not a check). """
    path = ROOT / 'dashboard' / 'src' / 'auth.rs'
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if line.startswith('fn same('):
            body = '\n'.join(lines[number:number + 8])
            kind = 'XOR fold over every byte' if '^' in body and 'fold' in body else 'NOT constant-time'
            lengths = ', lengths compared first' if '.len() == ' in body else ''
            return f"{kind}{lengths} (dashboard/src/auth.rs:{number})"
    return "comparison not found in dashboard/src/auth.rs"


# --- the scenario --------------------------------------------------------------------------------
def run(ctx: Context) -> Row:
    row = Row('security: escaping, token, Secrets, RBAC')
    try:
        dashboard_items(ctx, row)
    except ScenarioFailed as e:
        row.failures.append(f"items 1-3: {e}")
    try:
        rbac_item(ctx, row)
    except ScenarioFailed as e:
        row.failures.append(f"item 4 (RBAC): {e}")
    return row


def dashboard_items(ctx: Context, row: Row) -> None:
    namespace = ctx.namespace('security')
    token, wrong = f'tok-{secrets.token_urlsafe(24)}', f'tok-{secrets.token_urlsafe(24)}'
    canaries = [f's3cr3t-canary-{secrets.token_hex(8)}' for _ in range(3)]
    jaeger = os.environ.get('OPERON_JAEGER_QUERY', '').rstrip('/')
    services = {'core': f'operon-security-core-{os.getpid()}', 'sdk': f'operon-security-sdk-{os.getpid()}'}
    tracing: dict[str, dict[str, str]] = {'core': {}, 'sdk': {}}
    if jaeger:
        host = urllib.parse.urlsplit(jaeger).hostname
        otlp = os.environ.get('OPERON_JAEGER_OTLP', f'http://{host}:4317')
        for who in tracing:
            tracing[who] = {'OTEL_EXPORTER_OTLP_ENDPOINT': otlp, 'OTEL_SERVICE_NAME': services[who]}
    handler_port, port = free_port(), free_port()
    sdk = Process(ctx, [str(ctx.kopf), 'serve', '--debug', '--log-format', 'plain', '--listen',
                        f'127.0.0.1:{handler_port}', str(OPERATOR)], name='security-sdk',
                  env={**ctx.base_env, 'RELIABILITY_PAYLOADS': json.dumps(PAYLOADS), **tracing['sdk']})
    core = Process(ctx, [ctx.base_env['OPERON_BIN'], 'run', '-n', namespace, '--handler',
                         f'http://127.0.0.1:{handler_port}', '--http', f'127.0.0.1:{port}'], name='security-core',
                   ready_line=CORE_READY, env={'OPERON_LOG': 'debug', 'OPERON_DASHBOARD_TOKEN': token, **tracing['core']})
    sdk.start()
    core.start()
    wait_until(lambda: ready(port), timeout=60, what="the core ready (/readyz)")
    events = EventStream(port, token)
    browser = Browser(ctx)
    try:
        objects = make_objects(ctx, namespace, port, token, canaries)
        escaping(ctx, row, browser, events, namespace, port, token, objects)
        token_checks(row, port, token, wrong)
        secret_pages = secret_checks_live(row, browser, events, namespace, port, token, canaries)
    finally:
        browser.close()
        events.close()
    for process in (core, sdk):
        if process.process is not None:
            code = process.stop()
            row.check(code == 0, f"{process.name} exited with {code} after SIGTERM")
    logs = {'core log': core.log_path.read_text(errors='replace'),
            'operator log': sdk.log_path.read_text(errors='replace')}
    secrets_in = {name: where(token_needles(token, wrong), text) for name, text in logs.items()}
    leaks = {name: lines for name, lines in secrets_in.items() if lines}
    row.figures['token or tried tokens in logs'] = sum(len(v) for v in leaks.values())
    for name, lines in leaks.items():
        row.failures.append(f"a dashboard token is in the {name} ({len(lines)} lines), e.g. {lines[0]!r}")
    canary_places = {**secret_pages, **{name: where(canary_needles(canaries), text) for name, text in logs.items()}}
    if jaeger:
        canary_places.update(trace_checks(row, jaeger, services, namespace, canaries))
    else:
        row.figures['traces'] = 'not checked (OPERON_JAEGER_QUERY unset)'
    annotations = ctx.core_api.read_namespaced_secret('canary', namespace).metadata.annotations or {}
    holding = [key for key, value in annotations.items() if where(canary_needles(canaries), value)]
    row.figures["the Secret's own annotations holding its data"] = (
        f"{', '.join(holding)} (Kopf's diff-base format; `kubectl describe secret` shows it)" if holding else 'none')
    found = {place: lines for place, lines in canary_places.items() if lines}
    row.figures['Secret canary found in'] = (
        ', '.join(f"{place} ({len(lines)})" for place, lines in found.items()) or 'nowhere'
    ) + f" of {len(canary_places)} places"
    for place, lines in found.items():
        row.failures.append(f"the Secret's canary is in the {place} ({len(lines)} lines), e.g. {lines[0]!r}")


def ready(port: int) -> bool:
    with contextlib.suppress(OSError, http.client.HTTPException):
        return fetch(port, '/readyz', timeout=5).status == 200
    return False


def token_needles(token: str, wrong: str) -> list[str]:
    return [token, wrong, token.encode().hex(), wrong.encode().hex()]


def canary_needles(canaries: list[str]) -> list[str]:
    return [needle for canary in canaries for needle in b64_needles(canary)]


def views(port: int, token: str) -> dict[str, dict[str, Any]]:
    answer = fetch(port, '/api/v1/objects', bearer(token))
    return {f"{o['resource']}/{o['name']}": o for o in json.loads(answer.body)['objects']}


def handler(view: dict[str, Any] | None, handler_id: str) -> dict[str, Any]:
    return next((h for h in (view or {}).get('handlers', []) if h['id'] == handler_id), {})


def make_objects(ctx: Context, namespace: str, port: int, token: str, canaries: list[str]) -> dict[str, str]:
    """ The hostile objects, handled, then changed and handled again; the Secret, handled, then
    changed and handled again. Returns the dashboard paths of the objects. """
    example = f'{PLURAL}.{GROUP}/{VERSION}'
    annotations = {f'security-{i}': f'annotation {i}: {p}' for i, p in enumerate(PAYLOADS)}
    spec = {'hostile': {f'p{i}': f'spec {i}: {p}' for i, p in enumerate(PAYLOADS)}}
    for name, label in (('stuck', 'message'), ('shown', 'shown')):
        body = {'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'KopfExample',
                'metadata': {'name': name, 'labels': {'security': label}, 'annotations': annotations},
                'spec': spec}
        ctx.api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    ctx.core_api.create_namespaced_secret(namespace, {
        'metadata': {'name': 'canary'}, 'type': 'Opaque',
        'data': {'password': base64.b64encode(canaries[0].encode()).decode()},
        'stringData': {'token': canaries[1]}})
    wait_until(lambda: handler(views(port, token).get(f'{example}/stuck'), 'stuck').get('message') == hostile('message'),
               timeout=60, what="the TemporaryError's message on the dashboard")
    wait_until(lambda: settled(ctx.api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, 'shown')),
               timeout=60, what="the hostile object's creation handled")
    ctx.patch(namespace, 'shown', {
        'metadata': {'annotations': {f'security-{i}': f'annotation {i} changed: {p}' for i, p in enumerate(PAYLOADS)}},
        'spec': {'hostile': {f'p{i}': f'spec {i} changed: {p}' for i, p in enumerate(PAYLOADS)}}})
    wait_until(lambda: handler(views(port, token).get(f'{example}/shown'), 'hostile_failure').get('message')
               == hostile('permanent'), timeout=60, what="the PermanentError's message on the dashboard")

    def secret_base() -> str:
        secret = ctx.core_api.read_namespaced_secret('canary', namespace)
        return (secret.metadata.annotations or {}).get(DIFFBASE, '')
    wait_until(lambda: base64.b64encode(canaries[1].encode()).decode() in secret_base(), timeout=60,
               what="the Secret's creation handled")
    ctx.core_api.patch_namespaced_secret('canary', namespace, {'stringData': {'token': canaries[2]}})
    wait_until(lambda: base64.b64encode(canaries[2].encode()).decode() in secret_base(), timeout=60,
               what="the Secret's change handled")
    return {'stuck': f'/objects/{example}/{namespace}/stuck', 'shown': f'/objects/{example}/{namespace}/shown'}


def check_page(row: Row, page: dict[str, Any], what: str, expected: dict[str, str]) -> int:
    """ One loaded page: no PWNED title, nothing injected, every expected string shown as text
    (or as an attribute's value). Returns how many expected strings were shown. """
    row.check('PWNED' not in page['title'], f"{what}: the title is {page['title']!r}: a payload ran")
    row.check(not page['injected'], f"{what}: a payload made elements: {page['injected'][:3]}")
    shown = 0
    for channel, text in expected.items():
        present = text in page['text'] or text in page['attrs']
        row.check(present, f"{what}: the {channel} string is not shown (so escaping is not proven): {text[:60]!r}…")
        shown += present
    return shown


def escaping(ctx: Context, row: Row, browser: Browser, events: EventStream, namespace: str, port: int,
             token: str, objects: dict[str, str]) -> None:
    base = f'http://127.0.0.1:{port}'
    changed = {f'annotation {i}': as_json(f'annotation {i} changed: {p}') for i, p in enumerate(PAYLOADS)}
    changed.update({f'spec {i}': as_json(f'spec {i} changed: {p}') for i, p in enumerate(PAYLOADS)})
    messages = {'TemporaryError': hostile('message'), 'PermanentError': hostile('permanent')}
    pages = [
        ('the list page', '/objects', messages),
        ("the retrying object's page", objects['stuck'], {'TemporaryError': hostile('message')}),
        ("the failed object's page", objects['shown'],
         {'PermanentError': hostile('permanent'), 'kopf.info': hostile('info'), 'kopf.event': hostile('warning'),
          **{f'diff of {k}': v for k, v in changed.items()}}),
        ('the search (?q=)', '/objects?q=' + urllib.parse.quote(hostile('query'), safe=''),
         {'query': hostile('query')}),
        ("an unknown object's page", '/objects/' + urllib.parse.quote(hostile('path'), safe=''),
         {'path': hostile('path')}),
        ('the overview', '/', {}),
    ]
    browser.open(f'{base}/?token={urllib.parse.quote(token)}')  # signs in: the cookie from here on
    shown = expected = 0
    texts = []
    for what, path, strings in pages:
        browser.open(base + path)
        page = browser.page()
        texts.append(page['text'])
        shown += check_page(row, page, what, strings)
        expected += len(strings)
    # The live refresh: the object's page stays open while the object changes; the script swaps
    # the fresh region in (the marker on the heading is gone once it has).
    browser.open(base + objects['shown'])
    browser.evaluate("document.querySelector('[data-live] h1').dataset.before = '1'")
    live = f'annotation live: {PAYLOADS[0]}'
    ctx.patch(namespace, 'shown', {'metadata': {'annotations': {'security-live': live}}})
    wait_until(lambda: browser.evaluate("!document.querySelector('[data-live] h1[data-before]') && "
                                        f"document.body.textContent.includes({json.dumps(as_json(live))})"),
               timeout=30, what="the object's page refreshed live")
    time.sleep(0.5)
    shown += check_page(row, browser.page(), "the failed object's page after a live refresh", {'diff (live)': as_json(live)})
    expected += 1
    result_shown = any(hostile('result') in text for text in texts)
    row.figures['pages (Chromium)'] = len(pages) + 1
    row.figures['hostile strings shown escaped'] = f"{shown} of {expected}"
    row.figures['result (status) shown'] = 'yes' if result_shown else 'no page shows results'

    # The JSON API and the server-sent events: JSON, with the payloads inside its strings.
    api = fetch(port, '/api/v1/objects', bearer(token))
    row.check(api.headers.get('content-type', '').split(';')[0] == 'application/json',
              f"/api/v1/objects answers {api.headers.get('content-type')!r}, not application/json")
    try:
        in_api = hostile('permanent') in set(strings_of(json.loads(api.body)))
    except ValueError:
        in_api = False
    row.check(in_api, "/api/v1/objects: not JSON, or the PermanentError's message is not one of its strings")
    stream = fetch(port, '/api/v1/events', bearer(token))
    row.check(stream.headers.get('content-type', '').split(';')[0] == 'text/event-stream',
              f"/api/v1/events answers {stream.headers.get('content-type')!r}, not text/event-stream")
    data = events.data()
    bad = []
    carried = 0
    for item in data:
        try:
            carried += any(PAYLOADS[0] in s for s in strings_of(json.loads(item)))
        except ValueError:
            bad.append(item[:120])
    row.check(events.status == 200 and bool(data), f"the event stream gave nothing (status {events.status})")
    row.check(not bad, f"{len(bad)} events are not JSON, e.g. {bad[:1]}")
    row.check(carried > 0, "no event carried a payload (inside a JSON string): the stream is not proven")
    row.figures['API / events'] = (f"{api.headers.get('content-type')}, {stream.headers.get('content-type')} "
                                   f"({len(data)} events, {carried} with payloads, {len(bad)} not JSON)")


def token_checks(row: Row, port: int, token: str, wrong: str) -> None:
    routes = ['/', '/objects', '/objects/x/y/z', '/api/v1/objects', '/api/v1/events', '/metrics', '/assets/live.js']
    refusals = {
        'no token': {},
        'a wrong bearer': bearer(wrong),
        'a wrong cookie': {'Cookie': f'operon_token={wrong.encode().hex()}'},
        'the token as the cookie, not hex': {'Cookie': f'operon_token={token}'},
        'the token under Basic': {'Authorization': f'Basic {token}'},
        'the cookie value as a bearer': bearer(token.encode().hex()),
    }
    problems: list[str] = []
    refused = tried = 0
    for route in routes:
        for how, headers in refusals.items():
            answer = fetch(port, route, headers)
            tried += 1
            refused += answer.status == 401
            if answer.status != 401:
                problems.append(f"{route} with {how}: {answer.status}, not 401")
        answer = fetch(port, f"{route}?token={urllib.parse.quote(wrong)}")
        tried += 1
        refused += answer.status == 401
        if answer.status != 401:
            problems.append(f"{route} with a wrong ?token=: {answer.status}, not 401")
        if wrong in answer.text:
            problems.append(f"{route}: the sign-in page repeats the wrong token")
        for how, headers in (('the bearer', bearer(token)), ('the cookie', {'Cookie': f'operon_token={token.encode().hex()}'})):
            answer = fetch(port, route, headers)
            expected = 404 if route == '/objects/x/y/z' else 200
            if answer.status != expected:
                problems.append(f"{route} with {how}: {answer.status}, not {expected}")
    for route in ('/healthz', '/readyz'):
        answer = fetch(port, route)
        if answer.status != 200:
            problems.append(f"{route} without a token: {answer.status}, not 200 (probes are open)")
    answer = fetch(port, f'/objects?phase=failed&token={urllib.parse.quote(token)}')
    cookie = answer.headers.get('set-cookie', '')
    location = answer.headers.get('location', '')
    if answer.status != 303 or location != '/objects?phase=failed':
        problems.append(f"?token= answered {answer.status} to {location!r}, not 303 to the URL without the token")
    if 'HttpOnly' not in cookie or 'SameSite=Strict' not in cookie or token in cookie:
        problems.append(f"the cookie set is {cookie!r}: not HttpOnly + SameSite=Strict, or the token in clear")
    row.check(not problems, f"{len(problems)} token checks failed, e.g. {problems[:3]}")
    row.figures['token'] = f"{refused} of {tried} missing/wrong refused (401); right: 200, ?token= 303 + cookie"
    row.figures['token comparison'] = constant_time_figure()


def secret_checks_live(row: Row, browser: Browser, events: EventStream, namespace: str, port: int, token: str,
                       canaries: list[str]) -> dict[str, list[str]]:
    """ Where the canaries might show while the core runs: the API, the events, the pages. """
    needles = canary_needles(canaries)
    base = f'http://127.0.0.1:{port}'
    secret = f'/objects/secrets/v1/{namespace}/canary'
    places: dict[str, list[str]] = {}
    objects = fetch(port, '/api/v1/objects', bearer(token)).text
    row.check(f'"name":"canary"' in objects.replace(' ', ''), "the Secret is not on the dashboard's API (so the "
                                                           "canary check of the API proves nothing)")
    places['/api/v1/objects'] = where(needles, objects)
    places['/api/v1/events'] = where(needles, '\n'.join(events.lines))
    for what, path in (('list page', '/objects'), ("Secret's page", secret)):
        answer = fetch(port, path, bearer(token))
        row.check(answer.status == 200 and 'canary' in answer.text, f"the {what} ({path}) does not show the Secret")
        places[f'{what} (HTML)'] = where(needles, answer.text)
        browser.open(base + path)
        page = browser.page()
        places[f'{what} (DOM)'] = where(needles, page['html'])
    return places


def trace_checks(row: Row, jaeger: str, services: dict[str, str], namespace: str,
                 canaries: list[str]) -> dict[str, list[str]]:
    """ The traces of the core and the SDK: those of the Secret's cycles must be there (else the
    check proves nothing), and no canary in any. """
    parsed = urllib.parse.urlsplit(jaeger)
    needles = canary_needles(canaries)
    places: dict[str, list[str]] = {}
    about_secret = 0
    counts = []

    def traces(service: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({'service': service, 'limit': 1000, 'lookback': '1h'})
        answer = fetch(parsed.port or 80, f'{parsed.path}/api/traces?{query}', host=parsed.hostname or '127.0.0.1')
        if answer.status != 200:
            return []
        return json.loads(answer.body).get('data') or []

    for who, service in services.items():
        found = wait_until(lambda: traces(service), timeout=30, what=f"traces of {service} in Jaeger ({jaeger})")
        text = json.dumps(found)
        about_secret += sum(1 for t in found for s in t['spans']
                            if any(tag.get('value') == 'canary' for tag in s.get('tags', []))
                            and any(tag.get('value') == namespace for tag in s.get('tags', [])))
        counts.append(f"{len(found)} of the {who}")
        places[f'traces of the {who}'] = where(needles, text.replace('}, {', '},\n{'))
    row.check(about_secret > 0, "no span names the Secret: the trace check proves nothing")
    row.figures['traces'] = f"checked: {' + '.join(counts)} traces, {about_secret} spans about the Secret"
    return places


# --- 4. RBAC as generated ------------------------------------------------------------------------
CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {plural}.{group}}}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: {plural}, singular: {singular}, kind: {kind}}}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {{status: {{}}}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
          status: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
"""


def install_crds() -> None:
    api = kubernetes.client.ApiextensionsV1Api()
    for plural, kind in (SITES, TASKS):
        body = yaml.safe_load(CRD.format(plural=plural, singular=plural[:-1], kind=kind, group=RBAC_GROUP))
        try:
            api.create_custom_resource_definition(body)
        except ApiException as e:
            if e.status != 409:
                raise

        def established(name: str = f'{plural}.{RBAC_GROUP}') -> bool:
            crd = api.read_custom_resource_definition(name)
            return any(c.type == 'Established' and c.status == 'True' for c in crd.status.conditions or [])
        wait_until(established, timeout=60, what=f"the CRD {plural}.{RBAC_GROUP} established")


def sa_kubeconfig(ctx: Context, namespace: str, account: str) -> tuple[pathlib.Path, str]:
    """ A kubeconfig with the account's token; the server and the CA of the current one. """
    token = ctx.core_api.create_namespaced_service_account_token(
        account, namespace, {'spec': {'expirationSeconds': 3600}}).status.token
    current = yaml.safe_load(pathlib.Path(os.environ['KUBECONFIG']).read_text())
    context_name = current['current-context']
    context = next(c['context'] for c in current['contexts'] if c['name'] == context_name)
    cluster = dict(next(c['cluster'] for c in current['clusters'] if c['name'] == context['cluster']))
    if 'certificate-authority' in cluster:  # relative to the kubeconfig it was in
        cluster['certificate-authority'] = str(pathlib.Path(os.environ['KUBECONFIG']).parent / cluster['certificate-authority'])
    config = {'apiVersion': 'v1', 'kind': 'Config', 'current-context': 'sa',
              'clusters': [{'name': 'plane', 'cluster': {k: v for k, v in cluster.items()
                                                        if k in ('server', 'certificate-authority',
                                                                 'certificate-authority-data')}}],
              'users': [{'name': account, 'user': {'token': token}}],
              'contexts': [{'name': 'sa', 'context': {'cluster': 'plane', 'user': account, 'namespace': namespace}}]}
    path = ctx.workdir / f'kubeconfig-{namespace}'
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path, token


def rbac_item(ctx: Context, row: Row) -> None:
    # (run.sh builds the sync example with the core.)
    install_crds()
    namespace, outside = ctx.namespace('secrbac'), ctx.namespace('secrbac-out')
    target = pathlib.Path(ctx.base_env['OPERON_BIN']).parent
    sites, tasks = f'{RBAC_GROUP}/v1/{SITES[0]}', f'{RBAC_GROUP}/v1/{TASKS[0]}'
    ports = free_port(), free_port()
    Process(ctx, [str(target / 'operon-example-handler'), '--listen', f'127.0.0.1:{ports[0]}', '--resource', sites,
                  '--handler', 'create:noted', '--task', f'job:{tasks}:{sites}:spec.parent:sequential'],
            name='rbac-handler').start()
    Process(ctx, [str(target / 'operon-sync-example'), '--listen', f'127.0.0.1:{ports[1]}', '--parent', sites],
            name='rbac-sync').start()
    urls = [f'http://127.0.0.1:{p}' for p in ports]
    account = 'operon-core'
    argv = [ctx.base_env['OPERON_BIN'], 'rbac', *[a for u in urls for a in ('--handler', u)], '-n', namespace,
            '--service-account', f'{namespace}/{account}']

    def generated() -> str | None:
        done = subprocess.run(argv, capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else None
    printed = wait_until(generated, timeout=60, what="operon rbac answered (the services described)")
    documents = [d for d in yaml.safe_load_all(printed) if d]
    kinds = sorted(d['kind'] for d in documents)
    row.check(kinds == ['Role', 'RoleBinding'], f"operon rbac -n printed {kinds}, not a Role and a RoleBinding")
    ctx.core_api.create_namespaced_service_account(namespace, {'metadata': {'name': account}})
    rbac = kubernetes.client.RbacAuthorizationV1Api()
    for document in documents:
        if document['kind'] == 'Role':
            rbac.create_namespaced_role(document['metadata']['namespace'], document)
        elif document['kind'] == 'RoleBinding':
            rbac.create_namespaced_role_binding(document['metadata']['namespace'], document)
    rules = next(d for d in documents if d['kind'] == 'Role')['rules']
    kubeconfig, sa_token = sa_kubeconfig(ctx, namespace, account)
    core = Process(ctx, [ctx.base_env['OPERON_BIN'], 'run', '-n', namespace, *[a for u in urls for a in ('--handler', u)],
                         '--http', f'127.0.0.1:{(port := free_port())}'], name='rbac-core', ready_line=CORE_READY,
                   env={'KUBECONFIG': str(kubeconfig), 'OPERON_LOG': 'debug'})
    core.start()
    wait_until(lambda: ready(port), timeout=60, what="the core ready under the generated RBAC")
    work = end_to_end(ctx, namespace, 'site-a')
    code = core.stop()
    row.check(code == 0, f"the core under the generated RBAC exited with {code} after SIGTERM")
    forbidden_in_own = forbidden(core.log_path.read_text(errors='replace'))
    row.check(not forbidden_in_own, f"under the generated RBAC, {len(forbidden_in_own)} requests were forbidden, "
                                    f"e.g. {forbidden_in_own[:1]}")

    # A namespace the Role does not cover: 403s there, visible; what is still served in the covered one.
    beyond = Process(ctx, [ctx.base_env['OPERON_BIN'], 'run', '-n', namespace, '-n', outside,
                           *[a for u in urls for a in ('--handler', u)], '--http', f'127.0.0.1:{(port := free_port())}'],
                     name='rbac-core-beyond', env={'KUBECONFIG': str(kubeconfig)})
    beyond.start()
    lines = wait_until(lambda: [line for line in forbidden(beyond.log_path.read_text(errors='replace')) if outside in line],
                       timeout=60, what=f"a 403 about {outside} in the core's log")
    t0 = time.monotonic()
    still = partly_served(ctx, namespace, 'site-b')
    readyz = fetch(port, '/readyz')
    row.check(readyz.status == 503, f"/readyz answers {readyz.status} while a namespace is forbidden, not 503")
    elapsed = time.monotonic() - t0
    beyond.stop()
    total = [line for line in forbidden(beyond.log_path.read_text(errors='replace')) if outside in line]
    logs = core.log_path.read_text(errors='replace') + beyond.log_path.read_text(errors='replace')
    row.check(sa_token not in logs and sa_token.split('.')[-1] not in logs,
              "the ServiceAccount's token is in the core's log")
    row.figures['RBAC as generated'] = f"{len(rules)} rules; {work}"
    row.figures['RBAC, a namespace not covered'] = (
        f"403 in the core's log ({len(total)} lines in {elapsed:.0f}s), /readyz {readyz.status}; "
        f"the covered namespace meanwhile: {still}")
    log(f"security: forbidden, e.g. {lines[0][:300]}")


def forbidden(text: str) -> list[str]:
    plain = re.sub(r'\x1b\[[0-9;]*m', '', text)
    return [line for line in plain.splitlines() if re.search(r'\b403\b|forbidden', line) and 'RSA_PSS' not in line]


def partly_served(ctx: Context, namespace: str, name: str, seconds: float = 30) -> str:
    """ What the core still does in the covered namespace while another one is forbidden: the
    change handler, the sync's children, a task — each given ``seconds``. """
    api = ctx.api
    entries = [{'name': 'web', 'port': 8080}]
    api.create_namespaced_custom_object(RBAC_GROUP, 'v1', namespace, SITES[0], {
        'apiVersion': f'{RBAC_GROUP}/v1', 'kind': SITES[1], 'metadata': {'name': name}, 'spec': {'entries': entries}})
    api.create_namespaced_custom_object(RBAC_GROUP, 'v1', namespace, TASKS[0], {
        'apiVersion': f'{RBAC_GROUP}/v1', 'kind': TASKS[1], 'metadata': {'name': f'{name}-job'},
        'spec': {'parent': name, 'steps': 1, 'stepSeconds': 0.1}})

    def handled() -> bool:
        site = api.get_namespaced_custom_object(RBAC_GROUP, 'v1', namespace, SITES[0], name)
        return DIFFBASE in (site['metadata'].get('annotations') or {})

    def synced() -> bool:
        return any(o.name == name for c in ctx.core_api.list_namespaced_config_map(namespace).items
                   for o in c.metadata.owner_references or [])

    def task_phase() -> str:
        job = api.get_namespaced_custom_object(RBAC_GROUP, 'v1', namespace, TASKS[0], f'{name}-job')
        return str((job.get('status') or {}).get('phase') or '')
    deadline = time.monotonic() + seconds
    seen = {'change handler': False, 'sync': False, 'task': False}
    while time.monotonic() < deadline and not all(seen.values()):
        seen['change handler'] = seen['change handler'] or handled()
        seen['sync'] = seen['sync'] or synced()
        seen['task'] = seen['task'] or task_phase() == 'Succeeded'
        time.sleep(0.5)
    return ', '.join(f"{what} {'served' if done else f'held ({seconds:.0f}s)'}" for what, done in seen.items())


def end_to_end(ctx: Context, namespace: str, name: str) -> str:
    """ A site with two entries: two ConfigMaps and two Services, the change handler's diff-base;
    one entry removed: its children pruned; a task of the site: Succeeded. """
    api = ctx.api
    entries = [{'name': 'web', 'port': 8080}, {'name': 'db', 'port': 5432}]
    api.create_namespaced_custom_object(RBAC_GROUP, 'v1', namespace, SITES[0], {
        'apiVersion': f'{RBAC_GROUP}/v1', 'kind': SITES[1], 'metadata': {'name': name}, 'spec': {'entries': entries}})

    def children() -> set[str]:
        maps = {f'cm/{c.metadata.name}' for c in ctx.core_api.list_namespaced_config_map(namespace).items
                if any(o.name == name for o in c.metadata.owner_references or [])}
        services = {f'svc/{s.metadata.name}' for s in ctx.core_api.list_namespaced_service(namespace).items
                    if any(o.name == name for o in s.metadata.owner_references or [])}
        return maps | services
    both = {f'{k}/{name}-{e}' for k in ('cm', 'svc') for e in ('web', 'db')}
    wait_until(lambda: children() == both, timeout=60, what=f"{name}'s four children created")
    wait_until(lambda: DIFFBASE in (api.get_namespaced_custom_object(RBAC_GROUP, 'v1', namespace, SITES[0], name)
                                    ['metadata'].get('annotations') or {}),
               timeout=60, what=f"{name}'s change handler done (diff-base)")
    api.patch_namespaced_custom_object(RBAC_GROUP, 'v1', namespace, SITES[0], name, {'spec': {'entries': entries[:1]}})
    wait_until(lambda: children() == {f'{k}/{name}-web' for k in ('cm', 'svc')}, timeout=60,
               what=f"{name}'s removed entry's children pruned")
    api.create_namespaced_custom_object(RBAC_GROUP, 'v1', namespace, TASKS[0], {
        'apiVersion': f'{RBAC_GROUP}/v1', 'kind': TASKS[1], 'metadata': {'name': f'{name}-job'},
        'spec': {'parent': name, 'steps': 2, 'stepSeconds': 0.1}})

    def finished() -> str | None:
        job = api.get_namespaced_custom_object(RBAC_GROUP, 'v1', namespace, TASKS[0], f'{name}-job')
        phase = (job.get('status') or {}).get('phase')
        return phase if phase in ('Succeeded', 'Failed') else None
    phase = wait_until(finished, timeout=60, what="the task finished")
    if phase != 'Succeeded':
        raise ScenarioFailed(f"the task ended {phase} under the generated RBAC")
    return 'children created and pruned, diff-base written, task Succeeded'
