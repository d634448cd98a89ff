// Keeps [data-live] current: on every change pushed by /api/v1/events (or only those about
// data-key, on an object's page), re-reads the page and swaps that region in. Without this
// script, a reload shows the same.
(() => {
  const live = document.querySelector('[data-live]');
  const status = document.getElementById('live-status');
  if (!live || !window.EventSource || !window.fetch) return;
  const key = live.dataset.key;
  let timer = null, busy = false, again = false, pendingReads = 0;
  const say = (text, on) => { if (status) { status.textContent = text; status.classList.toggle('on', on); } };
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(location.href, { cache: 'no-store', credentials: 'same-origin' });
      if (response.status === 404 && key) { location.reload(); return; } // the object is gone
      if (response.ok) {
        const fresh = new DOMParser().parseFromString(await response.text(), 'text/html').querySelector('[data-live]');
        if (fresh && fresh.innerHTML !== live.innerHTML) {
          const focused = live.contains(document.activeElement) && document.activeElement.getAttribute('href');
          live.innerHTML = fresh.innerHTML;
          if (focused) live.querySelector('[href="' + CSS.escape(focused) + '"]')?.focus();
        }
      }
    } catch (_) { /* the next change tries again */ }
    busy = false;
    if (again) { again = false; schedule(); } else followPending();
  }
  // A trace Jaeger had not answered with when the page was made ([data-trace-pending]): the
  // core fetches it on, so read the page again in a second — ten times at most per change.
  function followPending() {
    if (!live.querySelector('[data-trace-pending]')) { pendingReads = 0; return; }
    if (pendingReads < 10) { pendingReads++; setTimeout(schedule, 1000); }
  }
  function schedule() {
    if (document.hidden) { again = true; return; }
    // One object's page follows closely; lists and counts at most twice a second.
    if (!timer) timer = setTimeout(() => { timer = null; refresh(); }, key ? 150 : 500);
  }
  function onObject(event) {
    if (!key) return schedule();
    try {
      const change = JSON.parse(event.data);
      const o = change.object;
      if ((o ? o.resource + '/' + o.namespace + '/' + o.name : change.key) === key) { pendingReads = 0; schedule(); }
    } catch (_) { schedule(); }
  }
  // One stream per page that is shown: a hidden tab, or a page left for the back/forward cache,
  // gives its connection back (browsers allow 6 per origin over HTTP/1.1: a seventh tab would
  // never load), and catches up with one refresh when it is shown again.
  let source = null, opened = false;
  function connect() {
    if (source) return;
    source = new EventSource('/api/v1/events');
    source.addEventListener('object', onObject);
    // The overview's charts move with the core's counters: re-read them on every tick.
    if (live.querySelector('[data-charts]')) source.addEventListener('tick', schedule);
    source.onopen = () => { say('Live', true); if (opened) schedule(); opened = true; };
    source.onerror = () => say('Reconnecting…', false);
  }
  function disconnect() {
    if (!source) return;
    source.close();
    source = null;
    say('Paused', false);
  }
  document.addEventListener('visibilitychange', () => { if (document.hidden) disconnect(); else connect(); });
  window.addEventListener('pagehide', disconnect);
  window.addEventListener('pageshow', () => { if (!document.hidden) connect(); });
  if (!document.hidden) connect();
  followPending();
})();
