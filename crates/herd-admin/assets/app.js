// herd's operator dashboard. Plain JS, no dependencies, served from the binary.
//
// Data flow:
//   1. GET /cluster/status (a 401 shows the token form), /scaling/status, /scaling/events and
//      GET /telemetry?minutes=15 (chart history; a 404 means an older herd: charts start empty).
//   2. Live: GET /telemetry/stream (SSE over fetch so the Bearer header can be sent), one `tick`
//      per second with {sample, cluster, scaling_events}. Reconnects with backoff. A 404 means
//      the endpoint does not exist here: poll /cluster/status + /scaling/events every second.
//   3. Actions: POST /scaling/manual, POST /reload, POST /loadbalancer/instances/{id}/drain|ready.
//
// Errors are shown on the page, never thrown past a handler: the page logs nothing to the
// console in normal operation (the browser test fails on any console error).
'use strict';

(() => {
  const TOKEN_KEY = 'herd.adminToken';
  const WINDOW_MS = 15 * 60 * 1000; // history kept and charted by default
  // Chart windows: span, tick spacing, tick label.
  const RANGES = {
    '15m': { ms: 15 * 60000, tick: 5 * 60000, label: (ago) => `-${ago / 60000}m`, name: '15 min' },
    '5m': { ms: 5 * 60000, tick: 60000, label: (ago) => `-${ago / 60000}m`, name: '5 min' },
    '1m': { ms: 60000, tick: 15000, label: (ago) => `-${ago / 1000}s`, name: '1 min' },
  };
  const POLL_MS = 1000;
  const SCALING_STATUS_MS = 5000;
  const STREAM_STALL_MS = 10000;
  const STREAM_REPROBE_MS = 5 * 60 * 1000;
  const MAX_EVENTS_PER_APP = 50;

  // ---------------------------------------------------------------- state

  const state = {
    token: readToken(),
    range: readRange(),
    needToken: false,
    cluster: null, // last /cluster/status (or stream `cluster`)
    scaling: new Map(), // app -> /scaling/status entry
    events: [], // scaling events, oldest first
    eventKeys: new Set(),
    series: new Map(), // app -> [{t, rps, p95, ready, desired}]
    telemetry: null, // true | false (404) | null (unknown)
    mode: 'connecting', // live | polling | reconnecting | offline | token
    modeDetail: '',
    lastUpdate: 0,
    skewMs: 0, // server clock - browser clock (from stream samples)
    drained: new Set(), // instances this page took out of rotation
    generation: 0, // bumped on token change: stale loops stop
    abort: null, // AbortController of the running live loop
  };

  const cards = new Map(); // app name -> Card

  // ---------------------------------------------------------------- helpers

  function readToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch (_) {
      return '';
    }
  }

  function readRange() {
    try {
      const r = localStorage.getItem('herd.chartRange');
      return r && RANGES[r] ? r : '15m';
    } catch (_) {
      return '15m';
    }
  }

  function setRange(r) {
    if (!RANGES[r]) return;
    state.range = r;
    try {
      localStorage.setItem('herd.chartRange', r);
    } catch (_) {
      /* not kept: fine */
    }
    for (const b of document.querySelectorAll('#range button')) b.setAttribute('aria-pressed', String(b.dataset.range === r));
    scheduleRender();
  }

  function saveToken(t) {
    try {
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      /* storage disabled: the token lives in memory only */
    }
  }

  function $(id) {
    return document.getElementById(id);
  }

  /** Element builder: h('div', {class: 'x', onclick: f}, child, 'text'). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function setText(el, text) {
    const t = String(text);
    if (el.textContent !== t) el.textContent = t;
  }

  const sleep = (ms, signal) =>
    new Promise((resolve) => {
      const id = setTimeout(resolve, ms);
      if (signal) signal.addEventListener('abort', () => { clearTimeout(id); resolve(); }, { once: true });
    });

  function fmtBytes(b) {
    if (b === null || b === undefined) return '–';
    if (b < 1024) return `${b} B`;
    const units = ['KiB', 'MiB', 'GiB', 'TiB'];
    let v = b / 1024;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
  }

  function fmtDuration(s) {
    if (s === null || s === undefined || !Number.isFinite(s)) return '–';
    s = Math.max(0, Math.floor(s));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  function fmtNum(v, digits = 1) {
    if (v === null || v === undefined || !Number.isFinite(v)) return '–';
    if (Math.abs(v) >= 100) return String(Math.round(v));
    if (Math.abs(v) >= 10) return v.toFixed(Math.min(digits, 1));
    return v.toFixed(digits);
  }

  function fmtMs(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return '–';
    if (v >= 1000) return `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)} s`;
    if (v >= 10) return `${Math.round(v)} ms`;
    return `${v.toFixed(1)} ms`;
  }

  function fmtClock(ms) {
    const d = new Date(ms);
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  }

  function fmtAgo(ms) {
    const s = Math.max(0, Math.round((serverNow() - ms) / 1000));
    if (s < 5) return 'just now';
    if (s < 60) return `${s}s ago`;
    if (s < 3600) return `${Math.floor(s / 60)}m ago`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
    return `${Math.floor(s / 86400)}d ago`;
  }

  const serverNow = () => Date.now() + state.skewMs;

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, body, message) {
      super(message);
      this.status = status;
      this.body = body;
    }
    get hint() {
      return this.body && typeof this.body.hint === 'string' ? this.body.hint : '';
    }
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra);
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    return headers;
  }

  /** JSON request to the admin API; throws ApiError (status 0: unreachable). */
  async function api(path, opts = {}) {
    const init = {
      method: opts.method || 'GET',
      headers: authHeaders({ Accept: 'application/json' }),
      cache: 'no-store',
      signal: opts.signal,
    };
    if (opts.body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      if (e && e.name === 'AbortError') throw new ApiError(-1, null, 'aborted');
      throw new ApiError(0, null, 'the admin API is unreachable');
    }
    let text = '';
    try {
      text = await res.text();
    } catch (_) {
      /* body cut off: treat as empty */
    }
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = { error: text.slice(0, 300) };
      }
    }
    if (res.status === 401) {
      tokenRejected();
      throw new ApiError(401, data, 'admin token required');
    }
    if (!res.ok) {
      const msg = data && data.error ? data.error : `HTTP ${res.status}`;
      throw new ApiError(res.status, data, msg);
    }
    return data;
  }

  function errorText(e) {
    if (!(e instanceof ApiError)) return String((e && e.message) || e);
    return e.hint ? `${e.message} (${e.hint})` : e.message;
  }

  // ---------------------------------------------------------------- token

  function tokenRejected() {
    if (state.needToken) return;
    const hadToken = Boolean(state.token);
    state.needToken = true;
    stopLive();
    setMode('token', hadToken ? 'token rejected' : '');
    const login = $('login');
    login.hidden = false;
    $('login-error').textContent = hadToken ? 'That token was not accepted. Check [admin] token in herd.toml.' : '';
    $('apps').setAttribute('aria-busy', 'false');
    const ph = $('placeholder');
    if (ph) ph.textContent = 'Waiting for the admin token…';
    setTimeout(() => $('token-input').focus(), 0);
  }

  function setupLogin() {
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = $('token-input').value.trim();
      if (!t) return;
      state.token = t;
      saveToken(t);
      state.needToken = false;
      $('login').hidden = true;
      $('token-input').value = '';
      $('forget-token').hidden = false;
      start();
    });
    $('forget-token').addEventListener('click', () => {
      state.token = '';
      saveToken('');
      $('forget-token').hidden = true;
      stopLive();
      state.needToken = false;
      start();
    });
    $('forget-token').hidden = !state.token;
  }

  // ---------------------------------------------------------------- data intake

  function eventKey(e) {
    return `${e.app}|${e.at_unix_ms}|${e.from}|${e.to}`;
  }

  function addEvents(list) {
    let added = false;
    for (const e of list || []) {
      if (!e || typeof e.at_unix_ms !== 'number') continue;
      const k = eventKey(e);
      if (state.eventKeys.has(k)) continue;
      state.eventKeys.add(k);
      state.events.push(e);
      added = true;
    }
    if (added) {
      state.events.sort((a, b) => a.at_unix_ms - b.at_unix_ms);
      const keep = 1000;
      if (state.events.length > keep) {
        for (const e of state.events.splice(0, state.events.length - keep)) state.eventKeys.delete(eventKey(e));
      }
    }
    return added;
  }

  function pushPoint(app, p) {
    let s = state.series.get(app);
    if (!s) {
      s = [];
      state.series.set(app, s);
    }
    if (s.length && p.t <= s[s.length - 1].t) return;
    s.push(p);
    const cutoff = p.t - WINDOW_MS - 60000;
    let drop = 0;
    while (drop < s.length && s[drop].t < cutoff) drop++;
    if (drop) s.splice(0, drop);
  }

  function ingestSample(sample) {
    if (!sample || typeof sample.at_unix_ms !== 'number') return;
    for (const a of sample.apps || []) {
      pushPoint(a.app, {
        t: sample.at_unix_ms,
        rps: numOrNull(a.rps),
        p95: numOrNull(a.p95_ms),
        ready: numOrNull(a.ready),
        desired: numOrNull(a.desired),
      });
    }
  }

  function numOrNull(v) {
    return typeof v === 'number' && Number.isFinite(v) ? v : null;
  }

  /** Polling mode: a chart point from the cluster status (req/s summed; no p95 there). */
  function sampleFromCluster(cluster, t) {
    for (const app of cluster.apps || []) {
      const rps = (app.instances || []).reduce((sum, i) => sum + (Number(i.rps) || 0), 0);
      pushPoint(app.name, { t, rps, p95: null, ready: app.ready, desired: app.desired });
    }
  }

  function setCluster(cluster) {
    state.cluster = cluster;
    state.lastUpdate = Date.now();
    // Forget drain marks of instances that are gone.
    const ids = new Set();
    for (const a of cluster.apps || []) for (const i of a.instances || []) ids.add(i.id);
    for (const id of [...state.drained]) if (!ids.has(id)) state.drained.delete(id);
    scheduleRender();
  }

  async function loadScalingStatus(signal) {
    try {
      const s = await api('/scaling/status', { signal });
      state.scaling = new Map((s.apps || []).map((a) => [a.name, a]));
      scheduleRender();
    } catch (e) {
      if (e.status === 401 || e.status === -1) throw e;
      /* not fatal: the cards show what they know */
    }
  }

  async function loadEvents(signal) {
    try {
      const r = await api('/scaling/events?limit=200', { signal });
      if (addEvents(r.events)) scheduleRender();
    } catch (e) {
      if (e.status === 401 || e.status === -1) throw e;
    }
  }

  /** Chart history. Returns false when this herd has no telemetry endpoint (404). */
  async function loadHistory(signal) {
    try {
      const r = await api('/telemetry?minutes=15', { signal });
      for (const s of r.samples || []) ingestSample(s);
      const last = (r.samples || []).at(-1);
      if (last) state.skewMs = last.at_unix_ms - Date.now();
      state.telemetry = true;
      scheduleRender();
      return true;
    } catch (e) {
      if (e.status === 404) {
        state.telemetry = false;
        scheduleRender();
        return false;
      }
      if (e.status === 401 || e.status === -1) throw e;
      return null;
    }
  }

  // ---------------------------------------------------------------- live data

  function setMode(mode, detail) {
    state.mode = mode;
    state.modeDetail = detail || '';
    const conn = $('conn');
    conn.dataset.mode = mode;
    const labels = {
      connecting: 'connecting…',
      live: 'live',
      polling: 'polling every 1s',
      reconnecting: 'reconnecting',
      offline: 'offline',
      token: 'token needed',
    };
    setText($('conn-text'), detail ? `${labels[mode]} · ${detail}` : labels[mode]);
    conn.title = {
      live: 'Live stream: GET /telemetry/stream',
      polling: 'This herd has no /telemetry/stream: polling /cluster/status and /scaling/events',
      reconnecting: 'The connection to the admin API was lost; retrying with backoff',
      offline: 'The admin API does not answer',
      token: 'The admin API needs a token',
      connecting: 'Connecting to the admin API',
    }[mode];
    renderFooter();
  }

  function stopLive() {
    state.generation++;
    if (state.abort) state.abort.abort();
    state.abort = null;
  }

  /** (Re)starts everything: initial load, then the live loop. */
  function start() {
    stopLive();
    const gen = state.generation;
    const ctrl = new AbortController();
    state.abort = ctrl;
    setMode('connecting');
    liveLoop(gen, ctrl.signal).catch((e) => {
      if (gen !== state.generation) return;
      if (e instanceof ApiError && e.status === 401) return; // the token form is up
      setMode('offline', errorText(e));
    });
  }

  async function liveLoop(gen, signal) {
    const alive = () => gen === state.generation && !signal.aborted;
    let backoff = 1000;
    // Initial cluster load, retried with backoff while herd is unreachable.
    for (;;) {
      try {
        setCluster(await api('/cluster/status', { signal }));
        break;
      } catch (e) {
        if (!alive() || e.status === 401 || e.status === -1) throw e;
        setMode('offline', `${errorText(e)}; retrying in ${Math.round(backoff / 1000)}s`);
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, 30000);
        if (!alive()) return;
      }
    }
    $('apps').setAttribute('aria-busy', 'false');
    await Promise.all([loadScalingStatus(signal), loadEvents(signal), loadHistory(signal)]);
    if (!alive()) return;
    // Scaling status (manual override, paused, last explanation) is not in the stream.
    scalingStatusLoop(gen, signal).catch(() => {});

    backoff = 1000;
    let streamAvailable = true;
    let lastProbe = 0;
    while (alive()) {
      if (streamAvailable || Date.now() - lastProbe > STREAM_REPROBE_MS) {
        lastProbe = Date.now();
        let outcome;
        try {
          outcome = await runStream(gen, signal);
        } catch (e) {
          if (!alive() || e.status === 401) throw e;
          outcome = { error: errorText(e) };
        }
        if (!alive()) return;
        if (outcome.unsupported) {
          streamAvailable = false;
        } else {
          streamAvailable = true;
          if (outcome.ticks > 0) backoff = 1000;
          const wait = backoff * (0.8 + Math.random() * 0.4);
          backoff = Math.min(backoff * 2, 30000);
          await countdown(wait, outcome.error || 'stream ended', signal);
          // Fill the gap in the charts from the server's history.
          if (alive() && state.telemetry) await loadHistory(signal);
          continue;
        }
      }
      // Polling fallback (no /telemetry/stream on this herd).
      await pollOnce(gen, signal);
      await sleep(POLL_MS, signal);
    }
  }

  async function countdown(ms, why, signal) {
    const until = Date.now() + ms;
    while (Date.now() < until && !signal.aborted) {
      setMode('reconnecting', `${why}; retry in ${Math.ceil((until - Date.now()) / 1000)}s`);
      await sleep(Math.min(1000, until - Date.now()), signal);
    }
  }

  let pollFailures = 0;
  async function pollOnce(gen, signal) {
    try {
      const [cluster, events] = await Promise.all([
        api('/cluster/status', { signal }),
        api('/scaling/events?limit=50', { signal }),
      ]);
      if (gen !== state.generation) return;
      sampleFromCluster(cluster, Date.now());
      addEvents(events.events);
      setCluster(cluster);
      pollFailures = 0;
      setMode('polling');
    } catch (e) {
      if (e.status === 401 || e.status === -1) throw e;
      pollFailures++;
      setMode(pollFailures > 2 ? 'offline' : 'polling', errorText(e));
    }
  }

  async function scalingStatusLoop(gen, signal) {
    while (gen === state.generation && !signal.aborted) {
      await sleep(SCALING_STATUS_MS, signal);
      if (signal.aborted) return;
      try {
        await loadScalingStatus(signal);
      } catch (_) {
        return;
      }
    }
  }

  /**
   * One connection to /telemetry/stream. Resolves {unsupported} on 404, {ticks, error?} when the
   * stream ends; throws ApiError(401) when the token is refused.
   */
  async function runStream(gen, signal) {
    const ctrl = new AbortController();
    const onAbort = () => ctrl.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    let res;
    try {
      res = await fetch('/telemetry/stream', {
        headers: authHeaders({ Accept: 'text/event-stream' }),
        cache: 'no-store',
        signal: ctrl.signal,
      });
    } catch (e) {
      signal.removeEventListener('abort', onAbort);
      return { ticks: 0, error: 'admin API unreachable' };
    }
    if (res.status === 404 || res.status === 405) {
      signal.removeEventListener('abort', onAbort);
      cancelBody(res);
      return { unsupported: true };
    }
    if (res.status === 401) {
      signal.removeEventListener('abort', onAbort);
      cancelBody(res);
      tokenRejected();
      throw new ApiError(401, null, 'admin token required');
    }
    if (!res.ok || !res.body) {
      signal.removeEventListener('abort', onAbort);
      cancelBody(res);
      return { ticks: 0, error: `stream answered HTTP ${res.status}` };
    }
    setMode('live');
    let ticks = 0;
    let lastByte = Date.now();
    const watchdog = setInterval(() => {
      if (Date.now() - lastByte > STREAM_STALL_MS) ctrl.abort();
    }, 1000);
    const parser = sseParser((ev) => {
      if (ev.event !== 'tick' || gen !== state.generation) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (_) {
        return; // a malformed tick is skipped, the next one follows in a second
      }
      ticks++;
      if (msg.sample) {
        if (typeof msg.sample.at_unix_ms === 'number') state.skewMs = msg.sample.at_unix_ms - Date.now();
        ingestSample(msg.sample);
        state.telemetry = true;
      }
      if (Array.isArray(msg.scaling_events)) addEvents(msg.scaling_events);
      if (msg.cluster) setCluster(msg.cluster);
      else scheduleRender();
      if (state.mode !== 'live') setMode('live');
    });
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let error;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        lastByte = Date.now();
        parser(decoder.decode(value, { stream: true }));
      }
      error = 'stream closed by herd';
    } catch (_) {
      error = signal.aborted ? 'stopped' : 'stream interrupted';
    } finally {
      clearInterval(watchdog);
      signal.removeEventListener('abort', onAbort);
      try {
        reader.releaseLock();
      } catch (_) {
        /* already released */
      }
    }
    return { ticks, error };
  }

  function cancelBody(res) {
    if (res.body) res.body.cancel().catch(() => {});
  }

  /** A text/event-stream parser (WHATWG rules): feed it chunks, it calls onEvent({event, data, id}). */
  function sseParser(onEvent) {
    let buf = '';
    let data = [];
    let event = '';
    let id = '';
    const dispatch = () => {
      if (data.length) onEvent({ event: event || 'message', data: data.join('\n'), id });
      data = [];
      event = '';
    };
    const line = (l) => {
      if (l === '') return dispatch();
      if (l.startsWith(':')) return undefined;
      const colon = l.indexOf(':');
      const field = colon < 0 ? l : l.slice(0, colon);
      let value = colon < 0 ? '' : l.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') data.push(value);
      else if (field === 'event') event = value;
      else if (field === 'id') id = value;
      return undefined;
    };
    return (chunk) => {
      buf += chunk;
      for (;;) {
        const m = /\r\n|\r|\n/.exec(buf);
        if (!m) break;
        // A lone \r at the very end may be the first half of \r\n: wait for more.
        if (m[0] === '\r' && m.index === buf.length - 1) break;
        line(buf.slice(0, m.index));
        buf = buf.slice(m.index + m[0].length);
      }
    };
  }

  // ---------------------------------------------------------------- actions

  function toast(text, kind = 'info', ms = 5000) {
    const el = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
    $('toasts').append(el);
    setTimeout(() => {
      el.classList.add('toast-out');
      setTimeout(() => el.remove(), 400);
    }, ms);
  }

  async function doScale(card) {
    const n = Number(card.scaleInput.value);
    if (!Number.isInteger(n) || n < 0) {
      card.setResult('Enter a whole number of instances (0 or more).', 'error');
      return;
    }
    const reason = card.reasonInput.value.trim() || 'dashboard';
    card.scaling = true;
    card.scaleBtn.disabled = true;
    card.setResult(`Scaling to ${n}…`, 'pending');
    try {
      await api('/scaling/manual', { method: 'POST', body: { app: card.name, instances: n, reason } });
      card.scaleDirty = false;
      card.reasonInput.value = '';
      card.setResult(`Desired count set to ${n}.`, 'ok');
      toast(`${card.name}: scaling to ${n} (${reason})`, 'ok');
      loadScalingStatus().catch(() => {});
    } catch (e) {
      if (e.status === 401) return;
      card.setResult(`Scale failed: ${errorText(e)}`, 'error');
    } finally {
      card.scaling = false;
      card.scaleBtn.disabled = false;
    }
  }

  async function doClearOverride(card) {
    try {
      await api('/scaling/manual', { method: 'POST', body: { app: card.name, clear: true } });
      toast(`${card.name}: manual override cleared, the autoscaler decides again`, 'ok');
      await loadScalingStatus();
    } catch (e) {
      if (e.status !== 401) card.setResult(`Could not clear the override: ${errorText(e)}`, 'error');
    }
  }

  async function doReload(card) {
    if (card.reloadArmed !== true) {
      card.reloadArmed = true;
      setText(card.reloadBtn, 'Confirm reload');
      card.reloadBtn.classList.add('btn-warn');
      clearTimeout(card.reloadArmTimer);
      card.reloadArmTimer = setTimeout(() => {
        card.reloadArmed = false;
        setText(card.reloadBtn, 'Reload');
        card.reloadBtn.classList.remove('btn-warn');
      }, 4000);
      return;
    }
    clearTimeout(card.reloadArmTimer);
    card.reloadArmed = false;
    card.reloadBtn.classList.remove('btn-warn');
    card.reloadBtn.disabled = true;
    card.reloadStarted = Date.now();
    card.reloadTimer = setInterval(() => card.updateReloadProgress(), 500);
    card.updateReloadProgress();
    try {
      await api('/reload', { method: 'POST', body: { app: card.name } });
      const secs = ((Date.now() - card.reloadStarted) / 1000).toFixed(1);
      card.setResult(`Reloaded: every instance replaced in ${secs}s.`, 'ok');
      toast(`${card.name}: rolling reload done in ${secs}s`, 'ok');
    } catch (e) {
      if (e.status !== 401) {
        card.setResult(`Reload failed: ${errorText(e)}`, 'error');
        toast(`${card.name}: reload failed`, 'error');
      }
    } finally {
      clearInterval(card.reloadTimer);
      card.reloadStarted = 0;
      card.reloadBtn.disabled = false;
      setText(card.reloadBtn, 'Reload');
      refreshSoon();
    }
  }

  async function doRotation(card, id, action, btn) {
    btn.disabled = true;
    try {
      await api(`/loadbalancer/instances/${encodeURIComponent(id)}/${action}`, { method: 'POST' });
      if (action === 'drain') state.drained.add(id);
      else state.drained.delete(id);
      toast(action === 'drain' ? `${id} taken out of rotation` : `${id} back in rotation`, 'ok');
      refreshSoon();
    } catch (e) {
      if (e.status === 404 && !(e.body && e.body.error && /instance/i.test(e.body.error))) {
        card.setResult('This herd has no load-balancer API (POST /loadbalancer/instances/{id}/drain): upgrade herd to drain single instances.', 'error');
      } else if (e.status !== 401) {
        card.setResult(`${action === 'drain' ? 'Drain' : 'Ready'} ${id} failed: ${errorText(e)}`, 'error');
      }
    } finally {
      btn.disabled = false;
      scheduleRender();
    }
  }

  /** After an action in polling mode the next poll comes within a second anyway; in live mode
   * the next tick does. Nothing to do but redraw. */
  function refreshSoon() {
    scheduleRender();
  }

  // ---------------------------------------------------------------- charts

  const COLORS = {
    grid: 'rgba(148, 163, 184, 0.12)',
    axis: 'rgba(148, 163, 184, 0.75)',
    up: '#3fc1b0',
    down: '#f0a23b',
  };

  class Chart {
    constructor({ title, color, unit, format, emptyText }) {
      this.color = color;
      this.format = format;
      this.emptyText = emptyText;
      this.valueEl = h('span', { class: 'chart-value' }, '–');
      this.title = title;
      this.canvas = h('canvas', { class: 'chart-canvas', role: 'img' });
      this.rangeEl = h('small', { class: 'chart-range' });
      this.el = h(
        'figure',
        { class: 'chart' },
        h('figcaption', {}, h('span', { class: 'chart-title' }, title, h('small', {}, ` ${unit} · `), this.rangeEl), this.valueEl),
        this.canvas,
      );
      this.points = [];
      this.events = [];
      this.hoverX = null;
      this.canvas.addEventListener('mousemove', (e) => {
        const r = this.canvas.getBoundingClientRect();
        this.hoverX = e.clientX - r.left;
        this.draw();
      });
      this.canvas.addEventListener('mouseleave', () => {
        this.hoverX = null;
        this.draw();
      });
    }

    update(points, events, emptyText) {
      this.points = points;
      this.events = events;
      this.currentEmpty = emptyText || this.emptyText;
      const last = [...points].reverse().find((p) => p.v !== null);
      setText(this.valueEl, last && serverNow() - last.t < 5000 ? this.format(last.v) : '–');
      this.draw();
    }

    draw() {
      const c = this.canvas;
      const w = c.clientWidth;
      const hgt = c.clientHeight;
      if (!w || !hgt) return;
      const dpr = window.devicePixelRatio || 1;
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(hgt * dpr)) {
        c.width = Math.round(w * dpr);
        c.height = Math.round(hgt * dpr);
      }
      const ctx = c.getContext('2d');
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, hgt);
      ctx.font = '11px system-ui, -apple-system, "Segoe UI", sans-serif';

      const pad = { l: 46, r: 10, t: 12, b: 20 };
      const pw = w - pad.l - pad.r;
      const ph = hgt - pad.t - pad.b;
      const now = serverNow();
      const range = RANGES[state.range];
      setText(this.rangeEl, range.name);
      this.canvas.setAttribute('aria-label', `${this.title} over the last ${range.name}`);
      const span = range.ms;
      const t0 = now - span;
      const x = (t) => pad.l + ((t - t0) / span) * pw;
      const pts = this.points.filter((p) => p.t >= t0 - 2000);
      const vals = pts.filter((p) => p.v !== null).map((p) => p.v);
      const { max, step } = niceScale(vals.length ? Math.max(...vals) : 0);
      const y = (v) => pad.t + ph - (v / max) * ph;

      // Grid and axes.
      ctx.lineWidth = 1;
      ctx.strokeStyle = COLORS.grid;
      ctx.fillStyle = COLORS.axis;
      ctx.textAlign = 'right';
      ctx.textBaseline = 'middle';
      for (let v = 0; v <= max + step / 2; v += step) {
        const yy = Math.round(y(v)) + 0.5;
        ctx.beginPath();
        ctx.moveTo(pad.l, yy);
        ctx.lineTo(w - pad.r, yy);
        ctx.stroke();
        if (vals.length || v === 0) ctx.fillText(this.format(v, true), pad.l - 6, yy);
      }
      ctx.textAlign = 'center';
      ctx.textBaseline = 'top';
      for (let ago = span; ago >= 0; ago -= range.tick) {
        const xx = Math.round(x(now - ago)) + 0.5;
        ctx.beginPath();
        ctx.moveTo(xx, pad.t);
        ctx.lineTo(xx, pad.t + ph);
        ctx.stroke();
        ctx.textAlign = ago === span ? 'left' : ago === 0 ? 'right' : 'center';
        ctx.fillText(ago === 0 ? 'now' : range.label(ago), xx, pad.t + ph + 5);
      }

      // Scaling events: dashed verticals labelled "2→3".
      ctx.save();
      ctx.setLineDash([3, 3]);
      ctx.textBaseline = 'top';
      ctx.textAlign = 'left';
      const rowEnds = [-Infinity, -Infinity]; // labels of close events stack on two rows
      for (const e of this.events) {
        if (e.at_unix_ms < t0) continue;
        const xx = Math.round(x(e.at_unix_ms)) + 0.5;
        const col = e.to >= e.from ? COLORS.up : COLORS.down;
        ctx.strokeStyle = col;
        ctx.globalAlpha = 0.7;
        ctx.beginPath();
        ctx.moveTo(xx, pad.t);
        ctx.lineTo(xx, pad.t + ph);
        ctx.stroke();
        ctx.globalAlpha = 1;
        ctx.fillStyle = col;
        const label = `${e.from}→${e.to}`;
        const tw = ctx.measureText(label).width;
        const lx = Math.min(xx + 3, w - pad.r - tw);
        const row = rowEnds.findIndex((end) => lx > end + 3);
        if (row < 0) continue;
        ctx.fillStyle = 'rgba(13, 17, 23, 0.85)';
        ctx.fillRect(lx - 1, pad.t + 1 + row * 13, tw + 2, 12);
        ctx.fillStyle = col;
        ctx.fillText(label, lx, pad.t + 1 + row * 13);
        rowEnds[row] = lx + tw;
      }
      ctx.restore();

      if (!vals.length) {
        ctx.fillStyle = COLORS.axis;
        ctx.textAlign = 'center';
        ctx.textBaseline = 'middle';
        ctx.fillText(this.currentEmpty, pad.l + pw / 2, pad.t + ph / 2);
        return;
      }

      // Line segments: break at gaps (missing value, or more than 3 s without a point).
      const segments = [];
      let seg = [];
      let prevT = null;
      for (const p of pts) {
        if (p.v === null || (prevT !== null && p.t - prevT > 3500)) {
          if (seg.length) segments.push(seg);
          seg = [];
        }
        if (p.v !== null) seg.push(p);
        prevT = p.t;
      }
      if (seg.length) segments.push(seg);

      ctx.save();
      ctx.beginPath();
      ctx.rect(pad.l, pad.t - 2, pw + 1, ph + 4);
      ctx.clip();
      const grad = ctx.createLinearGradient(0, pad.t, 0, pad.t + ph);
      grad.addColorStop(0, hexAlpha(this.color, 0.35));
      grad.addColorStop(1, hexAlpha(this.color, 0.02));
      for (const s of segments) {
        ctx.beginPath();
        ctx.moveTo(x(s[0].t), y(0));
        for (const p of s) ctx.lineTo(x(p.t), y(p.v));
        ctx.lineTo(x(s[s.length - 1].t), y(0));
        ctx.closePath();
        ctx.fillStyle = grad;
        ctx.fill();
        ctx.beginPath();
        s.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.v)) : ctx.moveTo(x(p.t), y(p.v))));
        if (s.length === 1) ctx.arc(x(s[0].t), y(s[0].v), 1.5, 0, Math.PI * 2);
        ctx.strokeStyle = this.color;
        ctx.lineWidth = 1.6;
        ctx.lineJoin = 'round';
        ctx.stroke();
      }
      ctx.restore();

      // Hover: the nearest point's time and value.
      if (this.hoverX !== null && this.hoverX >= pad.l && this.hoverX <= w - pad.r) {
        const t = t0 + ((this.hoverX - pad.l) / pw) * span;
        let best = null;
        for (const p of pts) {
          if (p.v === null) continue;
          if (!best || Math.abs(p.t - t) < Math.abs(best.t - t)) best = p;
        }
        if (best && Math.abs(best.t - t) < span / 30) {
          const xx = x(best.t);
          const yy = y(best.v);
          ctx.strokeStyle = 'rgba(226, 232, 240, 0.35)';
          ctx.lineWidth = 1;
          ctx.beginPath();
          ctx.moveTo(xx, pad.t);
          ctx.lineTo(xx, pad.t + ph);
          ctx.stroke();
          ctx.fillStyle = this.color;
          ctx.beginPath();
          ctx.arc(xx, yy, 3, 0, Math.PI * 2);
          ctx.fill();
          const label = `${fmtClock(best.t)}  ${this.format(best.v)}`;
          const tw = ctx.measureText(label).width + 10;
          const bx = Math.min(Math.max(xx - tw / 2, pad.l), w - pad.r - tw);
          ctx.fillStyle = 'rgba(15, 19, 24, 0.92)';
          ctx.fillRect(bx, pad.t, tw, 18);
          ctx.fillStyle = '#e2e8f0';
          ctx.textAlign = 'left';
          ctx.textBaseline = 'middle';
          ctx.fillText(label, bx + 5, pad.t + 9);
        }
      }
    }
  }

  /** A y axis from 0 with 3 to 5 round ticks (1, 2, 2.5 or 5 times a power of ten) above `v`. */
  function niceScale(v) {
    const top = v > 0 ? v * 1.1 : 1;
    const raw = top / 4;
    const mag = 10 ** Math.floor(Math.log10(raw));
    let step = 10 * mag;
    for (const m of [1, 2, 2.5, 5, 10]) {
      if (m * mag >= raw) {
        step = m * mag;
        break;
      }
    }
    return { max: Math.ceil(top / step - 1e-9) * step, step };
  }

  function hexAlpha(hex, a) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
  }

  // ---------------------------------------------------------------- app cards

  class Card {
    constructor(name) {
      this.name = name;
      this.scaleDirty = false;
      this.reloadStarted = 0;
      this.rows = new Map();

      this.kindEl = h('span', { class: 'tag' });
      this.readyEl = h('span', { class: 'count' });
      this.stateEl = h('span', { class: 'app-state' });
      this.autoEl = h('p', { class: 'autoscale' });

      this.scaleInput = h('input', {
        type: 'number', min: '0', step: '1', name: 'instances', class: 'scale-input',
        'aria-label': `Instances of ${name}`,
        oninput: () => { this.scaleDirty = true; },
      });
      this.reasonInput = h('input', {
        type: 'text', name: 'reason', class: 'reason-input', placeholder: 'reason (optional)',
        maxlength: '200', 'aria-label': `Reason for scaling ${name}`,
      });
      this.scaleBtn = h('button', { type: 'submit', class: 'btn btn-primary scale-btn' }, 'Scale');
      this.clearBtn = h('button', { type: 'button', class: 'btn btn-ghost', hidden: true, onclick: () => doClearOverride(this) }, 'Clear override');
      this.reloadBtn = h('button', { type: 'button', class: 'btn reload-btn', onclick: () => doReload(this) }, 'Reload');
      const scaleForm = this.scaleForm = h('form', {
        class: 'scale-form',
        onsubmit: (e) => { e.preventDefault(); doScale(this); },
      }, h('label', { class: 'scale-label' }, 'Instances', this.scaleInput), this.reasonInput, this.scaleBtn);

      this.resultEl = h('p', { class: 'result', role: 'status' });
      this.rps = new Chart({ title: 'Requests', unit: 'req/s', color: '#4aa3ff', format: (v, axis) => (axis ? fmtAxis(v) : `${fmtNum(v)} req/s`), emptyText: 'no requests yet' });
      this.p95 = new Chart({ title: 'Latency p95', unit: 'ms', color: '#c084fc', format: (v, axis) => (axis ? fmtAxis(v) : fmtMs(v)), emptyText: 'no requests yet' });

      this.tbody = h('tbody');
      const table = h('table', { class: 'instances' },
        h('thead', {}, h('tr', {},
          h('th', {}, 'Instance'), h('th', {}, 'State'), h('th', { class: 'num' }, 'PID'), h('th', { class: 'num' }, 'Port'),
          h('th', { class: 'num' }, 'Uptime'), h('th', { class: 'num' }, 'Restarts'), h('th', { class: 'num' }, 'RSS'),
          h('th', { class: 'num' }, 'CPU'), h('th', { class: 'num' }, 'In flight'), h('th', { class: 'num' }, 'Req/s'),
          h('th', { class: 'actions' }, h('span', { class: 'sr-only' }, 'Actions')))),
        this.tbody);
      this.emptyRow = h('tr', { class: 'empty' }, h('td', { colspan: '11' }, 'No instances (scaled to zero).'));

      this.eventsList = h('ol', { class: 'events' });
      this.eventsEmpty = h('p', { class: 'events-empty' }, 'No scaling events yet.');

      this.el = h('section', { class: 'card', dataset: { app: name }, 'aria-label': `App ${name}` },
        h('header', { class: 'card-head' },
          h('div', { class: 'card-title' },
            h('h2', {}, name), this.kindEl, this.stateEl,
            h('span', { class: 'ready-line' }, this.readyEl)),
          h('div', { class: 'card-actions' }, scaleForm, this.clearBtn, this.reloadBtn)),
        this.autoEl,
        this.resultEl,
        h('div', { class: 'card-body' },
          h('div', { class: 'card-main' },
            h('div', { class: 'charts' }, this.rps.el, this.p95.el),
            h('div', { class: 'table-wrap' }, table)),
          h('aside', { class: 'card-side' },
            h('h3', {}, 'Scaling events'), this.eventsEmpty, this.eventsList)));
    }

    setResult(text, kind) {
      setText(this.resultEl, text);
      this.resultEl.dataset.kind = kind || '';
      clearTimeout(this.resultTimer);
      if (kind === 'ok') this.resultTimer = setTimeout(() => setText(this.resultEl, ''), 8000);
    }

    updateReloadProgress() {
      if (!this.reloadStarted) return;
      const elapsed = (Date.now() - this.reloadStarted) / 1000;
      const app = this.app;
      let detail = '';
      if (app) {
        const fresh = (app.instances || []).filter((i) => i.state === 'ready' && i.uptime_s < elapsed + 0.5).length;
        detail = ` · ${Math.min(fresh, app.desired)}/${app.desired} replaced`;
      }
      setText(this.reloadBtn, `Reloading… ${Math.floor(elapsed)}s`);
      this.setResult(`Rolling reload in progress${detail}: new instances start and become ready before old ones drain.`, 'pending');
    }

    update(app) {
      this.app = app;
      setText(this.kindEl, app.kind === 'servers' ? 'servers' : 'supervised');
      const insts = app.instances || [];
      setText(this.readyEl, `${app.ready}/${app.desired} ready`);
      const healthy = app.ready >= app.desired && app.desired > 0;
      const st = app.reloading ? 'reloading' : app.desired === 0 ? 'idle' : healthy ? 'healthy' : app.ready === 0 ? 'down' : 'degraded';
      setText(this.stateEl, st);
      this.stateEl.dataset.state = st;

      if (!this.scaleDirty && document.activeElement !== this.scaleInput) this.scaleInput.value = String(app.desired);
      const supervised = app.kind !== 'servers';
      this.scaleBtn.disabled = !supervised || this.scaling === true;
      this.scaleInput.disabled = !supervised;
      // Fixed servers are not started by herd: there is nothing to scale or reload.
      this.scaleForm.hidden = !supervised;
      this.reloadBtn.hidden = !supervised;
      if (app.reloading && !this.reloadStarted) {
        setText(this.reloadBtn, 'Reloading…');
        this.reloadBtn.disabled = true;
      } else if (!app.reloading && !this.reloadStarted && this.reloadBtn.disabled) {
        this.reloadBtn.disabled = false;
        setText(this.reloadBtn, 'Reload');
      }
      if (this.reloadStarted) this.updateReloadProgress();

      // Autoscaler line.
      const sc = state.scaling.get(app.name);
      this.autoEl.replaceChildren();
      let manual = null;
      if (sc && sc.enabled && sc.status) {
        const s = sc.status;
        manual = s.manual;
        this.autoEl.append(h('span', { class: 'tag tag-auto', title: (s.paused && s.pause_reason) || '' }, s.paused ? 'autoscaling paused' : 'autoscaling'));
        if (manual) {
          this.autoEl.append(h('span', { class: 'tag tag-manual', title: manual.reason || '' }, `manual override: ${manual.instances}`));
        }
        if (s.last && s.last.explanation) this.autoEl.append(h('span', { class: 'explain' }, s.last.explanation));
      } else {
        this.autoEl.append(h('span', { class: 'tag' }, 'autoscaling off'));
        if (!supervised) {
          this.autoEl.append(h('span', { class: 'explain' }, `${app.desired} fixed server${app.desired === 1 ? '' : 's'} from the config (servers = [...]): herd checks them but does not start or scale them.`));
        } else if (app.last_scale) {
          this.autoEl.append(h('span', { class: 'explain' }, `Last scaled to ${app.last_scale.instances}: ${app.last_scale.reason}`));
        } else {
          this.autoEl.append(h('span', { class: 'explain' }, `Fixed at ${app.desired} instance${app.desired === 1 ? '' : 's'} unless scaled here or with \`herd scale\`.`));
        }
      }
      this.clearBtn.hidden = !manual;

      // Instances, in id order (web-2 before web-10).
      const sorted = [...insts].sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
      const seen = new Set();
      let prev = null;
      for (const inst of sorted) {
        // During a replacement two processes share an id (the new one, and the old one
        // draining): one row each, keyed by process.
        const key = `${inst.id}#${inst.pid ?? ''}`;
        seen.add(key);
        let row = this.rows.get(key);
        if (!row) {
          row = new Row(this, inst.id);
          this.rows.set(key, row);
        }
        row.update(inst, supervised);
        const want = prev ? prev.nextSibling : this.tbody.firstChild;
        if (want !== row.el) this.tbody.insertBefore(row.el, want);
        prev = row.el;
      }
      for (const [id, row] of this.rows) {
        if (!seen.has(id)) {
          row.el.remove();
          this.rows.delete(id);
        }
      }
      if (!sorted.length) {
        if (!this.emptyRow.isConnected) this.tbody.append(this.emptyRow);
      } else if (this.emptyRow.isConnected) {
        this.emptyRow.remove();
      }

      // Charts.
      const series = state.series.get(app.name) || [];
      const events = state.events.filter((e) => e.app === app.name);
      this.rps.update(series.map((p) => ({ t: p.t, v: p.rps })), events);
      const p95Empty = state.telemetry === false ? 'p95 needs GET /telemetry (a newer herd)' : 'no requests yet';
      this.p95.update(series.map((p) => ({ t: p.t, v: p.p95 })), events, p95Empty);

      // Events, newest first.
      const recent = events.slice(-MAX_EVENTS_PER_APP).reverse();
      const key = recent.map(eventKey).join(',');
      if (key !== this.eventsKey) {
        this.eventsKey = key;
        this.eventsList.replaceChildren(...recent.map(eventItem));
      } else {
        for (const li of this.eventsList.children) {
          const at = Number(li.dataset.at);
          const ago = li.querySelector('.ev-ago');
          if (ago) setText(ago, fmtAgo(at));
        }
      }
      this.eventsEmpty.hidden = recent.length > 0;
      if (!recent.length) {
        setText(this.eventsEmpty, sc && sc.enabled
          ? 'No scaling events yet: the autoscaler has kept the count.'
          : 'Autoscaling is off for this app ([app.scaling] not set): its count changes only when an operator scales it, and such changes are not recorded as events.');
      }
    }
  }

  function fmtAxis(v) {
    if (v >= 1000) return `${fmtNum(v / 1000)}k`;
    if (v === 0) return '0';
    return v < 10 ? String(Number(v.toFixed(2))) : String(Math.round(v));
  }

  function eventItem(e) {
    const d = e.decision || {};
    const kind = d.reason && d.reason.kind ? d.reason.kind : 'change';
    const up = e.to >= e.from;
    return h('li', { class: `event ${up ? 'ev-up' : 'ev-down'}`, dataset: { at: String(e.at_unix_ms) } },
      h('div', { class: 'ev-head' },
        h('span', { class: 'ev-change' }, `${e.from} → ${e.to}`),
        h('span', { class: 'tag tag-reason' }, kind.replace(/_/g, ' ')),
        d.panic ? h('span', { class: 'tag tag-panic' }, 'panic') : null,
        h('time', { class: 'ev-time', datetime: new Date(e.at_unix_ms).toISOString(), title: new Date(e.at_unix_ms).toString() },
          fmtClock(e.at_unix_ms), ' · ', h('span', { class: 'ev-ago' }, fmtAgo(e.at_unix_ms)))),
      h('p', { class: 'ev-explain' }, d.explanation || '(no explanation recorded)'));
  }

  class Row {
    constructor(card, id) {
      this.card = card;
      this.id = id;
      this.cells = {};
      const td = (k, cls) => (this.cells[k] = h('td', { class: cls }));
      this.badge = h('span', { class: 'badge' });
      this.rotation = h('span', { class: 'rotation', hidden: true }, 'out of rotation');
      this.drainBtn = h('button', { type: 'button', class: 'btn btn-small', onclick: () => doRotation(card, id, 'drain', this.drainBtn) }, 'Drain');
      this.readyBtn = h('button', { type: 'button', class: 'btn btn-small', onclick: () => doRotation(card, id, 'ready', this.readyBtn) }, 'Ready');
      this.el = h('tr', { dataset: { instance: id } },
        h('td', { class: 'id' }, id),
        h('td', {}, this.badge, this.rotation),
        td('pid', 'num'), td('port', 'num'), td('uptime', 'num'), td('restarts', 'num'), td('rss', 'num'),
        td('cpu', 'num'), td('inflight', 'num'), td('rps', 'num'),
        h('td', { class: 'actions' }, this.drainBtn, this.readyBtn));
    }

    update(i, supervised) {
      let label = i.state;
      if (i.state === 'restarting' && i.next_restart_in_ms != null) label = `restarting in ${fmtDuration(i.next_restart_in_ms / 1000)}`;
      setText(this.badge, label);
      this.badge.dataset.state = i.state;
      const backoff = i.state === 'restarting' ? `backoff ${i.restart_delay_ms} ms` : '';
      this.badge.title = [backoff, i.last_exit ? `last exit: ${i.last_exit}` : ''].filter(Boolean).join('\n');
      const out = i.drained === true || i.in_rotation === false || state.drained.has(i.id);
      this.rotation.hidden = !out && !i.passively_down;
      setText(this.rotation, out ? 'out of rotation' : 'passively down');
      this.rotation.title = out ? 'Taken out of rotation by an operator: it keeps running but gets no new requests' : `Skipped by the balancer after recent failures (${i.failures ?? '?'} failed attempts)`;
      setText(this.cells.pid, i.pid ?? (i.addr ? '' : '–'));
      setText(this.cells.port, i.port ?? i.addr ?? '–');
      setText(this.cells.uptime, ['ready', 'starting', 'down', 'draining', 'maint'].includes(i.state) ? fmtDuration(i.uptime_s) : '–');
      setText(this.cells.restarts, i.restarts ?? 0);
      this.cells.restarts.classList.toggle('warn', (i.restarts || 0) > 0);
      setText(this.cells.rss, supervised ? fmtBytes(i.rss_bytes) : '–');
      const maxMem = this.card.app && this.card.app.max_memory;
      this.cells.rss.title = maxMem ? `${Math.round((100 * i.rss_bytes) / maxMem)}% of max_memory (${fmtBytes(maxMem)})` : '';
      this.cells.rss.classList.toggle('warn', Boolean(maxMem && i.rss_bytes > 0.8 * maxMem));
      setText(this.cells.cpu, supervised ? `${fmtNum(i.cpu_percent)}%` : '–');
      setText(this.cells.inflight, i.in_flight ?? 0);
      setText(this.cells.rps, fmtNum(i.rps));
      const canAct = i.state === 'ready';
      this.drainBtn.hidden = out || !canAct;
      this.readyBtn.hidden = !out;
      this.drainBtn.title = `Take ${i.id} out of rotation (it keeps running)`;
      this.readyBtn.title = `Put ${i.id} back in rotation`;
    }
  }

  // ---------------------------------------------------------------- page render

  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      try {
        render();
      } catch (e) {
        showBanner(`Display error: ${e && e.message ? e.message : e}`);
      }
    });
  }

  function showBanner(text) {
    const b = $('banner');
    b.hidden = !text;
    setText(b, text || '');
  }

  function render() {
    const cluster = state.cluster;
    if (!cluster) return;
    const main = $('apps');
    const ph = $('placeholder');
    if (ph) ph.remove();
    const apps = cluster.apps || [];
    const seen = new Set();
    let prev = null;
    for (const app of apps) {
      seen.add(app.name);
      let card = cards.get(app.name);
      if (!card) {
        card = new Card(app.name);
        cards.set(app.name, card);
      }
      const want = prev ? prev.nextSibling : main.firstChild;
      if (want !== card.el) main.insertBefore(card.el, want);
      card.update(app);
      prev = card.el;
    }
    for (const [name, card] of cards) {
      if (!seen.has(name)) {
        card.el.remove();
        cards.delete(name);
      }
    }
    if (!apps.length) showBanner('This herd runs no apps.');
    renderSummary(apps);
    renderFooter();
    const ready = apps.reduce((n, a) => n + (a.ready || 0), 0);
    const desired = apps.reduce((n, a) => n + (a.desired || 0), 0);
    const title = `${ready < desired ? '⚠ ' : ''}${ready}/${desired} ready · herd ${location.host}`;
    if (document.title !== title) document.title = title;
  }

  function renderSummary(apps) {
    const total = apps.reduce((n, a) => n + (a.instances || []).length, 0);
    const ready = apps.reduce((n, a) => n + (a.ready || 0), 0);
    const desired = apps.reduce((n, a) => n + (a.desired || 0), 0);
    const rps = apps.reduce((n, a) => n + (a.instances || []).reduce((m, i) => m + (Number(i.rps) || 0), 0), 0);
    const inflight = apps.reduce((n, a) => n + (a.instances || []).reduce((m, i) => m + (Number(i.in_flight) || 0), 0), 0);
    const el = $('summary');
    const stat = (label, value, cls) => h('span', { class: `stat ${cls || ''}` }, h('b', {}, value), ` ${label}`);
    el.replaceChildren(
      stat(apps.length === 1 ? 'app' : 'apps', apps.length),
      stat('ready', `${ready}/${desired}`, ready < desired ? 'stat-warn' : 'stat-ok'),
      stat(total === 1 ? 'instance' : 'instances', total),
      stat('req/s', fmtNum(rps)),
      stat('in flight', inflight),
    );
  }

  function renderFooter() {
    const age = state.lastUpdate ? Math.round((Date.now() - state.lastUpdate) / 1000) : null;
    const parts = [];
    if (state.telemetry === false) parts.push('no telemetry endpoint on this herd: req/s from instance counters, no p95');
    if (age !== null) parts.push(age <= 1 ? 'updated just now' : `updated ${age}s ago`);
    setText($('footer-mode'), parts.join(' · '));
    document.body.classList.toggle('stale', age !== null && age > 5);
  }

  // ---------------------------------------------------------------- boot

  function boot() {
    $('host').textContent = location.host;
    setupLogin();
    for (const b of document.querySelectorAll('#range button')) b.addEventListener('click', () => setRange(b.dataset.range));
    setRange(state.range);
    window.addEventListener('resize', scheduleRender);
    setInterval(() => {
      renderFooter();
      scheduleRender(); // "x s ago", chart time axis moves even without data
    }, 1000);
    window.addEventListener('unhandledrejection', (ev) => {
      // Every promise above is handled; should one slip through, say so on the page too (the
      // browser still reports it: the test must see it).
      showBanner(`Unexpected error: ${ev.reason && ev.reason.message ? ev.reason.message : ev.reason}`);
    });
    start();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
