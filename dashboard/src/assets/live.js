// Keeps [data-live] current: on every change pushed by /api/v1/events (or only those about
// data-key, on an object's page), re-reads the page and swaps that region in. Without this
// script, a reload shows the same.
(() => {
  const live = document.querySelector('[data-live]');
  const status = document.getElementById('live-status');
  if (!live || !window.EventSource || !window.fetch) return;
  const key = live.dataset.key;
  let timer = null, busy = false, again = false;
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
    if (again) { again = false; schedule(); }
  }
  function schedule() {
    if (document.hidden) { again = true; return; }
    // One object's page follows closely; lists and counts at most twice a second.
    if (!timer) timer = setTimeout(() => { timer = null; refresh(); }, key ? 150 : 500);
  }
  const source = new EventSource('/api/v1/events');
  let opened = false;
  source.addEventListener('object', (event) => {
    if (!key) return schedule();
    try {
      const change = JSON.parse(event.data);
      const o = change.object;
      if ((o ? o.resource + '/' + o.namespace + '/' + o.name : change.key) === key) schedule();
    } catch (_) { schedule(); }
  });
  source.onopen = () => { say('Live', true); if (opened) schedule(); opened = true; };
  source.onerror = () => say('Reconnecting…', false);
  document.addEventListener('visibilitychange', () => { if (!document.hidden && again) { again = false; schedule(); } });
})();
