// Duress security console: live updates, alarm sound, flashing title, small conveniences.
// Served from /static (the CSP forbids inline script). Everything the page shows comes
// server-rendered and escaped; this script only swaps in fragments and sets text.
'use strict';
(() => {
  const body = document.body;
  const page = body.dataset.page || '';

  // ---- Times: stored in UTC, shown in the officer's local time ----
  function localizeTimes(root) {
    const today = new Date().toDateString();
    root.querySelectorAll('time[datetime]').forEach((t) => {
      const d = new Date(t.getAttribute('datetime'));
      if (Number.isNaN(d.getTime())) return;
      t.title = t.getAttribute('datetime');
      t.textContent = d.toDateString() === today ? d.toLocaleTimeString() : d.toLocaleString();
    });
  }
  localizeTimes(document);

  // ---- Copy buttons, confirmations, print ----
  document.addEventListener('click', async (e) => {
    const copy = e.target.closest('[data-copy]');
    if (copy) {
      const old = copy.textContent;
      try {
        await navigator.clipboard.writeText(copy.dataset.copy);
        copy.textContent = 'Copied';
      } catch (_) {
        copy.textContent = 'Select and copy';
      }
      setTimeout(() => { copy.textContent = old; }, 1500);
    }
    if (e.target.closest('[data-print]')) window.print();
  });
  document.addEventListener('submit', (e) => {
    const btn = e.submitter;
    if (btn && btn.dataset.confirm && !window.confirm(btn.dataset.confirm)) e.preventDefault();
  });

  // A screen showing its duty-display pairing code: go to the board once an admin paired it.
  if (page === 'display-pair' && document.getElementById('pair-code')) {
    const state = document.getElementById('pair-state');
    const poll = setInterval(async () => {
      try {
        const r = await fetch('/display/status', { credentials: 'same-origin', cache: 'no-store' });
        const v = await r.json();
        if (v.state === 'active') { clearInterval(poll); window.location.assign('/'); }
        if (v.state === 'none' && state) state.textContent = 'This code has expired: reload to get a new one.';
      } catch (_) { /* next poll */ }
    }, 2000);
  }

  const signedIn = !!document.querySelector('meta[name="csrf-token"]');
  const isDisplay = body.dataset.display === '1';
  if (!signedIn || page === 'print') return;

  // ---- Sound: Web Audio, repeating while an incident is unclaimed ----
  // Browsers start audio only after a click on the page (autoplay rule). The officer's choice
  // is remembered in this browser (localStorage): after the next sign-in or reload the first
  // click or key anywhere turns sound back on, and until then a full-width banner says it is off.
  const SOUND_KEY = 'duress.sound';
  const gate = document.getElementById('sound-gate');
  const soundBanner = document.getElementById('sound-banner');
  let audio = null;
  let soundMode = null; // null | 'alarm' | 'escalated'
  let soundTimer = null;

  function remembered() {
    try { return window.localStorage.getItem(SOUND_KEY) === 'on'; } catch (_) { return false; }
  }
  function remember() {
    try { window.localStorage.setItem(SOUND_KEY, 'on'); } catch (_) { /* private mode: per page */ }
  }
  function ensureAudio() {
    if (!audio) {
      const AC = window.AudioContext || window.webkitAudioContext;
      if (!AC) return null;
      audio = new AC();
      audio.onstatechange = () => { updateGate(); checkWatch(); };
    }
    return audio;
  }
  function soundOn() { return !!audio && audio.state === 'running'; }
  function updateGate() {
    const on = soundOn();
    document.documentElement.dataset.sound = on ? 'on' : 'off';
    if (soundBanner) soundBanner.hidden = on;
    if (!gate) return;
    gate.textContent = on ? 'Sound on' : 'Click to enable sound';
    gate.classList.toggle('on', on);
    gate.setAttribute('aria-pressed', on ? 'true' : 'false');
  }
  async function enableSound() {
    remember();
    const ac = ensureAudio();
    if (ac) { try { await ac.resume(); } catch (_) { /* stays gated */ } }
    updateGate();
    applySound(true);
    checkWatch();
  }
  if (gate) gate.addEventListener('click', enableSound);
  if (soundBanner) soundBanner.addEventListener('click', enableSound);
  if (remembered()) {
    // Chosen before: try now (allowed where the browser permits it, e.g. a kiosk flag), and
    // else on the first click or key anywhere on the page.
    enableSound();
    const again = () => { if (!soundOn()) enableSound(); };
    document.addEventListener('pointerdown', again, true);
    document.addEventListener('keydown', again, true);
  }
  updateGate();
  function beep(freq, start, dur, type) {
    const o = audio.createOscillator();
    const g = audio.createGain();
    o.type = type || 'square';
    o.frequency.value = freq;
    g.gain.setValueAtTime(0.0001, start);
    g.gain.exponentialRampToValueAtTime(0.25, start + 0.01);
    g.gain.exponentialRampToValueAtTime(0.0001, start + dur);
    o.connect(g).connect(audio.destination);
    o.start(start);
    o.stop(start + dur + 0.05);
  }
  // The trouble tone: low, long and falling (triangle 392 → 262 Hz), unlike the alarm's
  // high square beeps, so "the board cannot hear" is never mistaken for "an alarm".
  let troubleTones = 0;
  function troubleTone() {
    if (!soundOn()) return false;
    const t = audio.currentTime + 0.02;
    beep(392, t, 0.4, 'triangle');
    beep(262, t + 0.5, 0.7, 'triangle');
    troubleTones += 1;
    document.documentElement.dataset.troubleTones = String(troubleTones);
    return true;
  }
  function playPattern() {
    if (!soundOn() || !soundMode) return;
    const t = audio.currentTime + 0.02;
    if (soundMode === 'escalated') {
      // Escalated: faster, higher triple pulse, so the change is heard without looking.
      beep(1320, t, 0.1); beep(1320, t + 0.16, 0.1); beep(1320, t + 0.32, 0.1);
    } else {
      beep(880, t, 0.18); beep(660, t + 0.26, 0.18);
    }
  }
  function applySound(force) {
    document.documentElement.dataset.alarm = soundMode || 'quiet';
    if (!force && soundTimer && soundTimer.mode === soundMode) return;
    if (soundTimer) clearInterval(soundTimer.id);
    soundTimer = null;
    if (!soundMode) return;
    playPattern();
    soundTimer = { mode: soundMode, id: setInterval(playPattern, soundMode === 'escalated' ? 900 : 1600) };
  }

  // ---- Flashing title and alarm banner ----
  const baseTitle = document.title;
  let titleLabel = null;
  let titleTimer = null;
  function setTitle(label) {
    if (label === titleLabel) return;
    titleLabel = label;
    clearInterval(titleTimer);
    titleTimer = null;
    if (!label) { document.title = baseTitle; return; }
    const alarmTitle = '● DURESS — ' + label;
    let on = true;
    document.title = alarmTitle;
    titleTimer = setInterval(() => { on = !on; document.title = on ? alarmTitle : baseTitle; }, 800);
  }
  const banner = document.getElementById('alarm-banner');
  const bannerText = document.getElementById('alarm-text');

  let lastId = Number(body.dataset.lastEventId || 0);
  // What the watch banner (below) judges by.
  let sessionEnded = false;
  let unreachable = false;
  let sessionEndsAt = null; // ms, from the stream's `session` events
  let sessionExtendable = true;
  let warnS = 600;
  let keepAliveS = 15;
  let downSince = Date.now();

  async function refreshAlarm() {
    let state;
    try {
      const r = await fetch('/api/alarm', { credentials: 'same-origin', cache: 'no-store' });
      unreachable = false;
      if (r.status === 401) { sessionOver(); return; }
      if (!r.ok) { checkWatch(); return; }
      sessionEnded = false;
      state = await r.json();
    } catch (_) { unreachable = true; checkWatch(); return; }
    checkWatch();
    soundMode = state.unclaimed > 0 ? (state.escalated > 0 ? 'escalated' : 'alarm') : null;
    applySound(false);
    setTitle(state.unclaimed > 0 ? state.label : null);
    if (banner) {
      const show = state.unclaimed > 0 && page !== 'board';
      banner.hidden = !show;
      banner.classList.toggle('escalated', state.escalated > 0);
      if (show) {
        bannerText.textContent = (state.unclaimed === 1 ? '1 unclaimed alarm: ' : state.unclaimed + ' unclaimed alarms, newest: ') + state.label;
        banner.href = '/incidents/' + state.incident_id;
      }
    }
    // The stream fell silent while things happened: resume it.
    if (state.last_event_id > lastId && streamQuiet()) { refreshAll(); connect(); }
  }

  // ---- Fragments: server-rendered parts of the page that follow the stream ----
  const pageStatus = (document.querySelector('.incident-page') || {}).dataset?.status;
  // What an officer has chosen or typed in a fragment's forms and not yet sent (a response
  // level picked, a box ticked, the control with the focus): a live update re-renders the
  // fragment from the server, and without this it would silently put back the old value, so the
  // next click would send what the officer did not choose. Hidden inputs (the CSRF token) always
  // come fresh from the server.
  function controlKey(c) {
    const form = c.form ? c.form.getAttribute('action') || '' : '';
    const radio = c.type === 'radio' ? '|' + c.value : '';
    return form + '|' + (c.name || c.id) + radio;
  }
  function pendingEdits(el) {
    const edits = new Map();
    for (const c of el.querySelectorAll('select, input, textarea')) {
      if (!(c.name || c.id) || c.type === 'hidden') continue;
      if (c.tagName === 'SELECT') {
        if ([...c.options].some((o) => o.selected !== o.defaultSelected)) edits.set(controlKey(c), { value: c.value });
      } else if (c.type === 'checkbox' || c.type === 'radio') {
        if (c.checked !== c.defaultChecked) edits.set(controlKey(c), { checked: c.checked });
      } else if (c.value !== c.defaultValue) {
        edits.set(controlKey(c), { value: c.value });
      }
    }
    const active = document.activeElement;
    const focused = active && active !== document.body && el.contains(active) && (active.name || active.id) ? controlKey(active) : null;
    return { edits, focused };
  }
  function restoreEdits(el, { edits, focused }) {
    for (const c of el.querySelectorAll('select, input, textarea')) {
      if (!(c.name || c.id) || c.type === 'hidden') continue;
      const key = controlKey(c);
      const edit = edits.get(key);
      if (edit && 'checked' in edit) c.checked = edit.checked;
      else if (edit && c.tagName === 'SELECT') {
        // Only a choice the new rendering still offers (an option can go, e.g. once claimed).
        if ([...c.options].some((o) => o.value === edit.value && !o.disabled)) c.value = edit.value;
      } else if (edit) c.value = edit.value;
      if (focused === key) c.focus({ preventScroll: true });
    }
  }
  async function refreshFragments() {
    const parts = document.querySelectorAll('[data-fragment]');
    for (const el of parts) {
      try {
        const r = await fetch(el.dataset.fragment, { credentials: 'same-origin', cache: 'no-store' });
        if (r.status === 401) { sessionOver(); return; }
        if (!r.ok) continue;
        const html = await r.text();
        // Read just before the swap: the officer may have acted while the fetch was out.
        const kept = pendingEdits(el);
        el.innerHTML = html;
        restoreEdits(el, kept);
        localizeTimes(el);
      } catch (_) { /* next event or reconnect retries */ }
    }
    if (page === 'incident') {
      const root = document.querySelector('#incident-live .live-root');
      if (root && pageStatus && root.dataset.status !== pageStatus) {
        // The page's other forms (resolve, reopen) follow the status, so a reload brings the
        // right ones; but never at the cost of what the officer is writing or has chosen.
        const pageForms = document.querySelector('.incident-page') || document.body;
        const typing = [...document.querySelectorAll('textarea')].some((t) => t.value.trim() !== '')
          || pendingEdits(pageForms).edits.size > 0;
        if (!typing) window.location.reload();
      }
    }
  }
  let refreshQueued = false;
  function refreshAll() {
    if (refreshQueued) return;
    refreshQueued = true;
    setTimeout(async () => {
      refreshQueued = false;
      await Promise.all([refreshFragments(), refreshAlarm()]);
    }, 30);
  }

  // ---- Browser notifications: one per new incident while a console tab is open ----
  // The permission is asked for only from a click on the header's control (browsers refuse
  // or penalise a prompt nobody asked for). Shown for an incident that *opened* while this
  // page was listening: a press whose live row says `opened` (never a repeat press, a cancel
  // or a self-test), arriving after the stream's replay (a reconnect's catch-up shows on the
  // page and sounds, but does not pop up a stale notification), once per incident (`tag` =
  // incident id, so other tabs' notifications of it collapse into one). No service worker:
  // nothing live is ever served from a cache (docs/console.md, "Phones on patrol").
  const notifyGate = document.getElementById('notify-gate');
  const notified = new Set();
  function notifyState() {
    if (!('Notification' in window)) return 'unsupported';
    return { granted: 'on', denied: 'blocked' }[Notification.permission] || 'off';
  }
  function updateNotifyGate() {
    const state = notifyState();
    document.documentElement.dataset.notify = state;
    if (!notifyGate) return;
    notifyGate.hidden = state === 'unsupported';
    notifyGate.textContent = { on: 'Notifications on', blocked: 'Notifications blocked by the browser', off: 'Enable notifications' }[state] || '';
    notifyGate.classList.toggle('on', state === 'on');
    notifyGate.classList.toggle('blocked', state === 'blocked');
    notifyGate.setAttribute('aria-pressed', state === 'on' ? 'true' : 'false');
    notifyGate.title = state === 'blocked'
      ? "This browser blocks this site's notifications: allow them in the site settings (the lock icon by the address)."
      : state === 'on' ? 'A new alarm shows a notification while this tab is open.' : 'Show a notification for each new alarm while this tab is open.';
  }
  if (notifyGate) {
    notifyGate.addEventListener('click', async () => {
      if (notifyState() !== 'off') { updateNotifyGate(); return; }
      try { await Notification.requestPermission(); } catch (_) { /* old callback-only API: state below */ }
      updateNotifyGate();
    });
  }
  updateNotifyGate();
  // What the notification says: the location exactly as the incident page shows it (the
  // registered room first), read from its live fragment; the press's own label if that fails.
  async function incidentLabel(id, fallback) {
    try {
      const r = await fetch('/api/incidents/' + encodeURIComponent(id) + '/live', { credentials: 'same-origin', cache: 'no-store' });
      if (!r.ok) return fallback;
      const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
      const h = doc.querySelector('.location-label');
      if (!h) return fallback;
      h.querySelectorAll('.registered-tag').forEach((t) => t.remove());
      return h.textContent.trim() || fallback;
    } catch (_) { return fallback; }
  }
  async function notifyNewIncident(frame) {
    if (frame.kind !== 'incident.press' || !frame.incident_id || !frame.payload || frame.payload.opened !== true) return;
    if (notifyState() !== 'on' || notified.has(frame.incident_id)) return;
    notified.add(frame.incident_id);
    const id = frame.incident_id;
    const body = await incidentLabel(id, String(frame.payload.label || 'Open the console'));
    try {
      const n = new Notification('Duress alarm', { body, tag: id, requireInteraction: true, icon: '/static/icon-192.png' });
      n.onclick = () => {
        window.focus();
        n.close();
        window.location.assign('/incidents/' + encodeURIComponent(id));
      };
    } catch (_) { /* e.g. a browser that shows notifications only from a service worker */ }
  }

  // ---- The live stream, with reconnect and catch-up ----
  const conn = document.getElementById('conn');
  let es = null;
  let backoff = 500;
  let retryTimer = null;
  let everOpen = false;
  let lastMessageAt = Date.now();
  // False until the stream's replay is done: the server sends `event: trouble` right after it.
  let caughtUp = false;
  function setConn(state, text) {
    document.documentElement.dataset.stream = state;
    if (state === 'live') downSince = null;
    else if (downSince === null) downSince = Date.now();
    if (conn) {
      conn.className = 'conn conn-' + state;
      conn.textContent = text;
    }
    checkWatch();
  }
  // Silence for longer than this means the stream is dead even if the socket looks open (a
  // proxy that swallowed the close): the server sends `event: session` every keep-alive.
  function silentAfterMs() { return keepAliveS * 2000 + 2000; }
  function streamQuiet() { return !es || es.readyState !== 1 || Date.now() - lastMessageAt > silentAfterMs(); }
  function connect() {
    clearTimeout(retryTimer);
    if (es) es.close();
    setConn('connecting', 'Connecting…');
    // `after`: everything committed since this page (or the last event we got) is replayed.
    es = new EventSource('/events?after=' + lastId);
    caughtUp = false;
    es.onopen = () => {
      // An open stream means the server answered and the session is good.
      unreachable = false;
      sessionEnded = false;
      setConn('live', 'Live');
      backoff = 500;
      lastMessageAt = Date.now();
      // After a drop, reload the snapshot too: the page is then current whatever was missed.
      if (everOpen) refreshAll();
      everOpen = true;
    };
    es.onmessage = (m) => {
      lastMessageAt = Date.now();
      const id = Number(m.lastEventId);
      if (id > lastId) lastId = id;
      refreshAll();
      if (caughtUp) {
        let frame = null;
        try { frame = JSON.parse(m.data); } catch (_) { frame = null; }
        if (frame) notifyNewIncident(frame);
      }
    };
    // The trouble banner (the receiver's sweep or notifier stopped): shown while not empty.
    es.addEventListener('trouble', (m) => {
      lastMessageAt = Date.now();
      caughtUp = true;
      let lines = [];
      try { lines = JSON.parse(m.data); } catch (_) { lines = []; }
      const tb = document.getElementById('trouble-banner');
      if (!tb) return;
      tb.replaceChildren(...lines.map((t) => { const p = document.createElement('p'); p.textContent = t; return p; }));
      tb.hidden = lines.length === 0;
    });
    // How long the session has left, and the keep-alive interval (at connect and every
    // keep-alive): the warning banner and the silence check count on it.
    es.addEventListener('session', (m) => {
      lastMessageAt = Date.now();
      try {
        const v = JSON.parse(m.data);
        // A duty display has no session to run out; it ends only when revoked.
        sessionEndsAt = v.display ? null : Date.now() + v.expires_in * 1000;
        sessionExtendable = !!v.extendable;
        warnS = Number(v.warn) || warnS;
        keepAliveS = Number(v.keep_alive) || keepAliveS;
        sessionEnded = false;
      } catch (_) { /* the next one */ }
      checkWatch();
    });
    es.onerror = () => {
      es.close();
      es = null;
      setConn('down', 'Reconnecting…');
      retryTimer = setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 5000);
      // Why: signed out (401), or the server is unreachable? The banner says which.
      refreshAlarm();
    };
  }
  window.addEventListener('online', () => { backoff = 500; connect(); });
  window.addEventListener('offline', () => { if (es) { es.close(); es = null; } setConn('down', 'Offline'); });
  // Testing hook and manual recovery: drop the stream as a network blip would.
  window.duressConsole = { dropStream() { if (es) { es.close(); es = null; } setConn('down', 'Reconnecting…'); retryTimer = setTimeout(connect, backoff); } };

  // ---- Never silently deaf: the watch banner and the trouble tone ----
  // Shown on every page while the stream is down, the server unreachable, or the session
  // ended or about to end; the trouble tone sounds at once (when sound is on) and every 30 s
  // until it is fixed. Recovery is automatic: the stream reconnects and replays from lastId.
  const TONE_EVERY_MS = 30000;
  const watchBanner = document.getElementById('watch-banner');
  const watchText = document.getElementById('watch-text');
  const watchSignIn = document.getElementById('watch-signin');
  const watchExtend = document.getElementById('watch-extend');
  let lastToneAt = null;
  function sessionOver() { sessionEnded = true; checkWatch(); }
  function problem() {
    const now = Date.now();
    if (sessionEnded && isDisplay) {
      return { kind: 'session-ended', text: 'This duty display is no longer paired: it no longer receives alarms.', signIn: true };
    }
    if (sessionEnded || (sessionEndsAt !== null && now >= sessionEndsAt)) {
      return { kind: 'session-ended', text: 'Your session has ended: this page no longer receives alarms.', signIn: true };
    }
    if (unreachable) {
      return { kind: 'unreachable', text: 'The console server cannot be reached: alarms are not arriving here. Retrying…' };
    }
    if (downSince !== null && now - downSince > 2000) {
      return { kind: 'stream-down', text: 'Live updates are down: new alarms may not appear. Reconnecting…' };
    }
    if (es && es.readyState === 1 && now - lastMessageAt > silentAfterMs()) {
      return { kind: 'stream-down', text: 'Live updates have gone silent: new alarms may not appear. Reconnecting…' };
    }
    if (sessionEndsAt !== null && sessionEndsAt - now <= warnS * 1000) {
      const left = Math.max(0, Math.round((sessionEndsAt - now) / 1000));
      const mmss = Math.floor(left / 60) + ':' + String(left % 60).padStart(2, '0');
      return sessionExtendable
        ? { kind: 'session-ending', text: 'Your session ends in ' + mmss + '.', extend: true }
        : { kind: 'session-ending', text: 'Your session ends in ' + mmss + ' and cannot be extended: sign in again.', signIn: true };
    }
    return null;
  }
  function checkWatch() {
    if (!watchBanner) return;
    const p = problem();
    document.documentElement.dataset.watch = p ? p.kind : 'ok';
    watchBanner.hidden = !p;
    if (!p) { lastToneAt = null; return; }
    if (watchText.textContent !== p.text) watchText.textContent = p.text;
    watchSignIn.hidden = !p.signIn;
    if (isDisplay) { watchSignIn.href = '/display'; watchSignIn.textContent = 'Pair again'; }
    watchExtend.hidden = !p.extend;
    if ((lastToneAt === null || Date.now() - lastToneAt >= TONE_EVERY_MS) && troubleTone()) {
      lastToneAt = Date.now();
    }
  }
  if (watchExtend) {
    watchExtend.addEventListener('click', async () => {
      const csrf = document.querySelector('meta[name="csrf-token"]').content;
      try {
        const r = await fetch('/session/extend', { method: 'POST', credentials: 'same-origin', headers: { 'X-CSRF-Token': csrf } });
        if (r.status === 401) { sessionOver(); return; }
        if (!r.ok) return;
        const v = await r.json();
        sessionEndsAt = Date.now() + v.expires_in * 1000;
        sessionExtendable = !!v.extendable;
      } catch (_) { unreachable = true; }
      checkWatch();
    });
  }
  setInterval(() => {
    // A stream open but silent past the keep-alive: drop it and reconnect (catching up).
    if (es && es.readyState === 1 && Date.now() - lastMessageAt > silentAfterMs()) {
      es.close();
      es = null;
      setConn('down', 'Reconnecting…');
      retryTimer = setTimeout(connect, 0);
    }
    checkWatch();
  }, 1000);

  connect();
  refreshAlarm();
  // A watchdog in case a stream dies silently (a proxy that swallows the close).
  setInterval(refreshAlarm, 10000);
})();
