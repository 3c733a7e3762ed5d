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

  const signedIn = !!document.querySelector('meta[name="csrf-token"]');
  if (!signedIn || page === 'print') return;

  // ---- Sound: Web Audio, repeating while an incident is unclaimed ----
  const gate = document.getElementById('sound-gate');
  let audio = null;
  let soundMode = null; // null | 'alarm' | 'escalated'
  let soundTimer = null;

  function ensureAudio() {
    if (!audio) {
      const AC = window.AudioContext || window.webkitAudioContext;
      if (!AC) return null;
      audio = new AC();
      audio.onstatechange = updateGate;
    }
    return audio;
  }
  function soundOn() { return !!audio && audio.state === 'running'; }
  function updateGate() {
    if (!gate) return;
    gate.textContent = soundOn() ? 'Sound on' : 'Click to enable sound';
    gate.classList.toggle('on', soundOn());
    gate.setAttribute('aria-pressed', soundOn() ? 'true' : 'false');
  }
  if (gate) {
    gate.addEventListener('click', async () => {
      const ac = ensureAudio();
      if (ac) { try { await ac.resume(); } catch (_) { /* stays gated */ } }
      updateGate();
      applySound(true);
    });
  }
  function beep(freq, start, dur) {
    const o = audio.createOscillator();
    const g = audio.createGain();
    o.type = 'square';
    o.frequency.value = freq;
    g.gain.setValueAtTime(0.0001, start);
    g.gain.exponentialRampToValueAtTime(0.25, start + 0.01);
    g.gain.exponentialRampToValueAtTime(0.0001, start + dur);
    o.connect(g).connect(audio.destination);
    o.start(start);
    o.stop(start + dur + 0.05);
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

  async function refreshAlarm() {
    let state;
    try {
      const r = await fetch('/api/alarm', { credentials: 'same-origin', cache: 'no-store' });
      if (r.status === 401) { window.location.assign('/login'); return; }
      if (!r.ok) return;
      state = await r.json();
    } catch (_) { return; }
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
  async function refreshFragments() {
    const parts = document.querySelectorAll('[data-fragment]');
    for (const el of parts) {
      try {
        const r = await fetch(el.dataset.fragment, { credentials: 'same-origin', cache: 'no-store' });
        if (r.status === 401) { window.location.assign('/login'); return; }
        if (!r.ok) continue;
        const html = await r.text();
        el.innerHTML = html;
        localizeTimes(el);
      } catch (_) { /* next event or reconnect retries */ }
    }
    if (page === 'incident') {
      const root = document.querySelector('#incident-live .live-root');
      if (root && pageStatus && root.dataset.status !== pageStatus) {
        const typing = [...document.querySelectorAll('textarea')].some((t) => t.value.trim() !== '');
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

  // ---- The live stream, with reconnect and catch-up ----
  const conn = document.getElementById('conn');
  let es = null;
  let backoff = 500;
  let retryTimer = null;
  let everOpen = false;
  let lastMessageAt = Date.now();
  function setConn(state, text) {
    if (!conn) return;
    conn.className = 'conn conn-' + state;
    conn.textContent = text;
    document.documentElement.dataset.stream = state;
  }
  function streamQuiet() { return !es || es.readyState !== 1 || Date.now() - lastMessageAt > 30000; }
  function connect() {
    clearTimeout(retryTimer);
    if (es) es.close();
    setConn('connecting', 'Connecting…');
    // `after`: everything committed since this page (or the last event we got) is replayed.
    es = new EventSource('/events?after=' + lastId);
    es.onopen = () => {
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
    };
    // The trouble banner (the receiver's sweep or notifier stopped): shown while not empty.
    es.addEventListener('trouble', (m) => {
      lastMessageAt = Date.now();
      let lines = [];
      try { lines = JSON.parse(m.data); } catch (_) { lines = []; }
      const tb = document.getElementById('trouble-banner');
      if (!tb) return;
      tb.replaceChildren(...lines.map((t) => { const p = document.createElement('p'); p.textContent = t; return p; }));
      tb.hidden = lines.length === 0;
    });
    es.onerror = () => {
      es.close();
      es = null;
      setConn('down', 'Reconnecting…');
      retryTimer = setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 10000);
    };
  }
  window.addEventListener('online', () => { backoff = 500; connect(); });
  window.addEventListener('offline', () => { if (es) { es.close(); es = null; } setConn('down', 'Offline'); });
  // Testing hook and manual recovery: drop the stream as a network blip would.
  window.duressConsole = { dropStream() { if (es) { es.close(); es = null; } setConn('down', 'Reconnecting…'); retryTimer = setTimeout(connect, backoff); } };

  connect();
  refreshAlarm();
  // A watchdog in case a stream dies silently (a proxy that swallows the close).
  setInterval(refreshAlarm, 10000);
})();
