'use strict';
(() => {
const STATUSES = ['queued', 'processing', 'script_ready', 'continuity_checked', 'preview_ready', 'final_ready', 'failed', 'cancelled'];
const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
};
const norm = (s) => String(s || '').replace(/^(JOB_STATUS_|STAGE_|JOB_TYPE_|TIER_|QUALITY_)/, '').toLowerCase();
const words = (s) => norm(s).replace(/_/g, ' ');
const num = (v) => Number(v || 0);
const isEnded = (j) => j.status === 'final_ready' || j.status === 'cancelled' || (j.status === 'failed' && j.deadLettered);
const fmtTime = (ms) => ms ? new Date(num(ms)).toLocaleTimeString() : '—';
const fmtDate = (ms) => ms ? new Date(num(ms)).toLocaleString() : '—';

const params = new URLSearchParams(location.search);
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get('key')) { localStorage.setItem('reel.key', hash.get('key')); history.replaceState(null, '', location.pathname + location.search); }
// A #key=… pasted into an open page: take it and start over with it.
window.addEventListener('hashchange', () => {
  const k = new URLSearchParams(location.hash.slice(1)).get('key');
  if (k) { localStorage.setItem('reel.key', k); history.replaceState(null, '', location.pathname + location.search); location.reload(); }
});
const state = {
  key: localStorage.getItem('reel.key') || '',
  jobs: new Map(), order: [], filter: '', user: '', nextPageToken: '',
  selected: null, timeline: [], mode: 'connecting',
};

// ---------------------------------------------------------------- API
class ApiError extends Error { constructor(status, code, message) { super(message); this.status = status; this.code = code; } }
async function api(path, opts = {}) {
  const headers = Object.assign({ 'Accept': 'application/json' }, opts.body ? { 'Content-Type': 'application/json' } : {});
  if (state.key) headers['Authorization'] = 'Bearer ' + state.key;
  const r = await fetch(path, { method: opts.method || 'GET', headers, body: opts.body ? JSON.stringify(opts.body) : undefined, cache: 'no-cache' });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  if (!r.ok) {
    if (r.status === 401) banner('This server needs an API key: paste one in the box at the top right.');
    throw new ApiError(r.status, data && data.code, (data && data.message) || r.statusText);
  }
  return data;
}
const tokenQuery = () => state.key ? 'access_token=' + encodeURIComponent(state.key) : '';

function normJob(j) {
  return Object.assign({}, j, {
    status: norm(j.status), stage: norm(j.stage), type: norm(j.type), tier: norm(j.tier),
    progress: num(j.progress), lastEventSeq: num(j.lastEventSeq), createdAtUnixMs: num(j.createdAtUnixMs),
    etaUnixMs: num(j.etaUnixMs), deadlineUnixMs: num(j.deadlineUnixMs),
    atRisk: num(j.deadlineUnixMs) > 0 && num(j.etaUnixMs) > num(j.deadlineUnixMs),
  });
}

// A cost in weighted provider units, as people write it: 2, 1.5.
const fmtUnits = (v) => String(Math.round(num(v) * 1e6) / 1e6);
// The ETA (when the job is expected to be final) as "ETA 14:03:07 (in 2m05s)", flagged when past the deadline.
function etaText(j) {
  if (!j.etaUnixMs || isEnded(j)) return '';
  const s = Math.max(0, Math.round((j.etaUnixMs - Date.now()) / 1000));
  const left = s < 60 ? s + 's' : s < 3600 ? Math.floor(s / 60) + 'm' + String(s % 60).padStart(2, '0') + 's' : Math.floor(s / 3600) + 'h' + String(Math.floor(s % 3600 / 60)).padStart(2, '0') + 'm';
  return 'ETA ' + fmtTime(j.etaUnixMs) + ' (in ' + left + ')';
}
function etaBox(j) {
  const risk = j.atRisk && !isEnded(j);
  return el('span', { class: 'eta' + (risk ? ' at-risk' : ''), 'data-eta': String(j.etaUnixMs || 0), title: j.deadlineUnixMs ? 'deadline ' + fmtDate(j.deadlineUnixMs) : '' },
    etaText(j), risk ? el('span', { class: 'risk-badge', text: 'at risk' }) : null);
}

function banner(text) { const b = $('#banner'); b.textContent = text || ''; b.hidden = !text; }

// ---------------------------------------------------------------- list
async function loadJobs({ more = false } = {}) {
  const q = new URLSearchParams({ page_size: '50' });
  if (state.filter) q.set('status', 'JOB_STATUS_' + state.filter.toUpperCase());
  if (state.user) q.set('user_id', state.user);
  if (more && state.nextPageToken) q.set('page_token', state.nextPageToken);
  try {
    const page = await api('/v1/jobs?' + q);
    banner('');
    if (!more) state.order = [];
    for (const raw of page.jobs || []) {
      const j = normJob(raw);
      const have = state.jobs.get(j.id);
      // A live update may be newer than the list we just read.
      state.jobs.set(j.id, have && have.lastEventSeq > j.lastEventSeq ? Object.assign(j, pickLive(have)) : j);
      if (!state.order.includes(j.id)) state.order.push(j.id);
    }
    state.nextPageToken = page.nextPageToken || '';
    render();
    for (const id of state.order) { const j = state.jobs.get(id); if (!isEnded(j)) live.track(id); }
  } catch (e) {
    if (e.status !== 401) banner('Could not load jobs: ' + e.message);
  }
}
const pickLive = (j) => ({ status: j.status, stage: j.stage, progress: j.progress, message: j.message, lastEventSeq: j.lastEventSeq, deadLettered: j.deadLettered, etaUnixMs: j.etaUnixMs, atRisk: j.atRisk });

function render() {
  const rows = $('#job-rows');
  const visible = state.order.map((id) => state.jobs.get(id)).filter((j) => j && (!state.filter || j.status === state.filter));
  rows.replaceChildren(...visible.map(row));
  $('#empty').hidden = visible.length > 0;
  $('#job-count').textContent = visible.length ? `(${visible.length}${state.nextPageToken ? '+' : ''})` : '';
  $('#more').hidden = !state.nextPageToken;
}

function progressBar(j) {
  return el('div', { class: 'progress' },
    el('div', { class: 'bar ' + j.status, role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(j.progress), 'data-progress': String(j.progress) },
      el('span', { style: `width:${Math.max(0, Math.min(100, j.progress))}%` })),
    el('div', { class: 'bar-label' },
      el('span', { class: 'what' }, el('span', { class: 'stage', text: words(j.stage) }), el('span', { class: 'msg', title: j.message || '', text: j.message || '' })),
      el('span', { class: 'pct', text: j.progress + '%' })),
    etaBox(j));
}

function actions(j) {
  const box = el('div', { class: 'actions' });
  if (!isEnded(j) && j.status !== 'failed') box.append(el('button', { class: 'small danger cancel', 'data-action': 'cancel', onclick: (ev) => { ev.stopPropagation(); act(j.id, 'cancel'); } }, 'Cancel'));
  if (j.status === 'failed') box.append(el('button', { class: 'small secondary retry', 'data-action': 'retry', onclick: (ev) => { ev.stopPropagation(); act(j.id, 'retry'); } }, 'Retry'));
  return box;
}

function row(j) {
  return el('tr', { class: 'job' + (state.selected === j.id ? ' selected' : '') + (j.atRisk && !isEnded(j) ? ' at-risk' : ''), 'data-job-id': j.id, 'data-status': j.status, onclick: () => openDetail(j.id) },
    el('td', {}, el('div', { class: 'jid', text: j.id.slice(0, 8) }), el('div', { class: 'who', text: `${j.userId} · ${j.sceneId} · ${words(j.type)}` }), el('div', { class: 'text', title: j.inputText, text: j.inputText })),
    el('td', {}, el('span', { class: 'badge ' + j.status, text: words(j.status) + (j.deadLettered ? ' (dead-lettered)' : '') })),
    el('td', {}, progressBar(j)),
    el('td', { class: 'when', title: fmtDate(j.createdAtUnixMs), text: fmtTime(j.createdAtUnixMs) }),
    el('td', {}, actions(j)));
}

function updateRow(j) {
  const old = document.querySelector(`tr.job[data-job-id="${j.id}"]`);
  if (!old) return;
  // Update the bar in place so that its width animates.
  const bar = $('.bar', old);
  if (bar && old.dataset.status === j.status) {
    bar.setAttribute('data-progress', String(j.progress));
    bar.setAttribute('aria-valuenow', String(j.progress));
    $('span', bar).style.width = Math.max(0, Math.min(100, j.progress)) + '%';
    $('.bar-label .stage', old).textContent = words(j.stage);
    $('.bar-label .msg', old).textContent = j.message || '';
    $('.bar-label .pct', old).textContent = j.progress + '%';
    const eta = $('.eta', old);
    if (eta) eta.replaceWith(etaBox(j));
    old.classList.toggle('at-risk', !!j.atRisk && !isEnded(j));
  } else {
    old.replaceWith(row(j));
  }
}

async function act(id, verb) {
  try {
    const j = normJob(await api(`/v1/jobs/${id}:${verb}`, { method: 'POST', body: {} }));
    state.jobs.set(j.id, j);
    updateRow(j);
    if (!isEnded(j)) live.track(j.id);
    if (state.selected === id) openDetail(id);
  } catch (e) {
    banner(`${verb} failed: ${e.message}`);
  }
}

// ---------------------------------------------------------------- live updates
function applyEvent(u) {
  const j = state.jobs.get(u.jobId);
  if (!j) return;
  const seq = num(u.seq);
  if (u.job || u.snapshot) Object.assign(j, normJob(u.job || u.snapshot));
  if (seq && seq < j.lastEventSeq) return;
  Object.assign(j, { status: norm(u.status), stage: norm(u.stage), progress: num(u.progress), message: u.message, deadLettered: !!u.deadLettered, lastEventSeq: Math.max(seq, j.lastEventSeq) });
  if (u.etaUnixMs !== undefined) Object.assign(j, { etaUnixMs: num(u.etaUnixMs), atRisk: !!u.atRisk });
  updateRow(j);
  if (state.selected === j.id) {
    if (seq && !state.timeline.some((e) => e.seq === seq)) { state.timeline.push(Object.assign({}, u, { seq })); renderTimeline(); }
    renderSummary(j);
    if (isEnded(j) || j.status === 'failed') refreshJob(j.id);
  }
  if (isEnded(j)) live.untrack(j.id);
}

async function refreshJob(id) {
  try {
    const j = normJob(await api('/v1/jobs/' + id));
    state.jobs.set(id, j);
    updateRow(j);
    if (state.selected === id) renderDetail(j);
    return j;
  } catch (_) { return null; }
}

const live = {
  mode: params.get('live') || 'ws', ws: null, wsOpen: false, wsFailures: 0,
  tracked: new Set(), sources: new Map(), pollTimer: null,
  setMode(m) { this.mode = m; document.body.dataset.live = m; $('#live-text').textContent = { ws: 'live (WebSocket)', sse: 'live (Server-Sent Events)', poll: 'polling every 2 s', connecting: 'connecting…', off: 'no live updates (API key needed)' }[m] || m; },
  start() {
    if (this.mode === 'ws' && 'WebSocket' in window) this.connectWS();
    else if (this.mode !== 'poll' && 'EventSource' in window) { this.setMode('sse'); this.resubscribe(); }
    else { this.setMode('poll'); this.startPolling(); }
  },
  connectWS() {
    this.setMode('connecting');
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/v1/ws' + (state.key ? '?' + tokenQuery() : '');
    let ws;
    try { ws = new WebSocket(url); } catch (_) { return this.fallback(); }
    this.ws = ws;
    ws.onopen = () => { this.wsOpen = true; this.wsFailures = 0; this.setMode('ws'); for (const id of this.tracked) this.send({ type: 'subscribe', jobId: id }); };
    ws.onmessage = (m) => {
      let msg; try { msg = JSON.parse(m.data); } catch (_) { return; }
      if (msg.type === 'job_update') applyEvent(msg);
      else if (msg.type === 'unsubscribed') this.tracked.delete(msg.jobId);
      else if (msg.type === 'error') {
        // Without a valid key every reconnect would fail the same way: stop trying.
        if (msg.code === 'UNAUTHENTICATED') { this.stopped = true; banner('This server needs an API key: paste one in the box at the top right.'); }
        console.warn('reel ws:', msg);
      }
    };
    ws.onclose = () => {
      const wasOpen = this.wsOpen;
      this.ws = null; this.wsOpen = false;
      if (this.stopped) return this.setMode('off');
      if (this.mode !== 'ws' && this.mode !== 'connecting') return;
      if (!wasOpen && ++this.wsFailures >= 2) return this.fallback();
      this.setMode('connecting');
      setTimeout(() => this.connectWS(), 1500);
    };
  },
  fallback() {
    if ('EventSource' in window && params.get('live') !== 'poll') { this.setMode('sse'); this.resubscribe(); }
    else { this.setMode('poll'); this.startPolling(); }
  },
  send(m) { if (this.ws && this.wsOpen) this.ws.send(JSON.stringify(m)); },
  resubscribe() { for (const id of this.tracked) this.openSource(id); },
  track(id) {
    if (this.tracked.has(id) && (this.mode !== 'sse' || this.sources.has(id))) return;
    this.tracked.add(id);
    if (this.mode === 'ws') this.send({ type: 'subscribe', jobId: id });
    else if (this.mode === 'sse') this.openSource(id);
  },
  untrack(id) {
    this.tracked.delete(id);
    const s = this.sources.get(id); if (s) { s.close(); this.sources.delete(id); }
  },
  openSource(id) {
    if (this.sources.has(id)) return;
    const j = state.jobs.get(id);
    const q = [tokenQuery(), j && j.lastEventSeq ? 'after_seq=' + j.lastEventSeq : ''].filter(Boolean).join('&');
    const src = new EventSource(`/v1/jobs/${id}/events` + (q ? '?' + q : ''));
    let got = false;
    this.sources.set(id, src);
    src.onmessage = (m) => { got = true; try { applyEvent(JSON.parse(m.data)); } catch (_) { /* ignore */ } };
    src.onerror = () => {
      if (src.readyState === EventSource.CLOSED) {
        this.sources.delete(id);
        // Never connected: this browser or a proxy can't do SSE; poll instead.
        if (!got && this.mode === 'sse') { this.setMode('poll'); for (const s of this.sources.values()) s.close(); this.sources.clear(); this.startPolling(); }
      }
    };
  },
  startPolling() {
    if (this.pollTimer) return;
    this.pollTimer = setInterval(() => {
      for (const id of this.tracked) {
        refreshJob(id).then((j) => { if (j && isEnded(j)) this.untrack(id); });
      }
    }, 2000);
  },
};

// ---------------------------------------------------------------- detail view
async function openDetail(id) {
  state.selected = id;
  for (const tr of document.querySelectorAll('tr.job')) tr.classList.toggle('selected', tr.dataset.jobId === id);
  $('#detail').hidden = false;
  $('#detail-title').textContent = 'Job ' + id.slice(0, 8);
  $('#detail-body').replaceChildren(el('p', { class: 'note', text: 'Loading…' }));
  try {
    const [job, hist] = await Promise.all([api('/v1/jobs/' + id), api(`/v1/jobs/${id}/events?format=json`)]);
    if (state.selected !== id) return;
    const j = normJob(job);
    state.jobs.set(id, Object.assign(state.jobs.get(id) || {}, j));
    state.timeline = (hist.events || []).map((e) => Object.assign({}, e, { seq: num(e.seq) }));
    renderDetail(j);
    if (!isEnded(j)) live.track(id);
  } catch (e) {
    $('#detail-body').replaceChildren(el('p', { class: 'error-box', text: e.message }));
  }
}

function mediaURL(u) { return /^(https?:)?\//.test(u) ? u : '/v1/media?url=' + encodeURIComponent(u) + (state.key ? '&' + tokenQuery() : ''); }

function renderDetail(j) {
  const body = $('#detail-body');
  const a = j.artifacts || {}, r = j.result || {};
  const video = r.videoUrl || a.finalVideoUrl || a.previewVideoUrl;
  const thumb = r.thumbnailUrl || a.thumbnailUrl;
  const media = el('div', { class: 'media' });
  if (video) media.append(el('video', { src: mediaURL(video), controls: true, preload: 'metadata', class: 'final-video', poster: thumb ? mediaURL(thumb) : null, onerror: (ev) => ev.target.replaceWith(el('p', { class: 'note', text: 'video: ' + video })) }));
  if (thumb) media.append(el('figure', { class: 'thumb-box' }, el('img', { src: mediaURL(thumb), alt: 'thumbnail', class: 'thumb', onerror: (ev) => ev.target.replaceWith(el('p', { class: 'note', text: 'thumbnail: ' + thumb })) }),
    el('figcaption', {}, el('b', { text: 'Thumbnail' }), el('br'), el('a', { href: mediaURL(video || thumb), target: '_blank', text: 'open video' }))));
  body.replaceChildren(...[
    el('div', { id: 'detail-summary' }),
    j.error ? el('div', { class: 'error-box', id: 'detail-error' }, el('b', { text: j.error.code + (j.error.stage ? ' at ' + words(j.error.stage) : '') }), j.error.message, j.error.details ? el('div', { class: 'note', text: j.error.details }) : null) : null,
    media.childElementCount ? media : null,
    el('h2', { text: 'Timeline' }), el('ul', { class: 'timeline', id: 'timeline' }),
    el('dl', {},
      el('dt', { text: 'id' }), el('dd', { class: 'jid', text: j.id }),
      el('dt', { text: 'user / scene' }), el('dd', { text: `${j.userId} / ${j.sceneId}` }),
      el('dt', { text: 'type / tier' }), el('dd', { text: `${words(j.type)} / ${words(j.tier)}` }),
      el('dt', { text: 'attempts' }), el('dd', { text: `${j.retryCount} of ${j.maxRetries} retries` }),
      el('dt', { text: 'provider / cost' }), el('dd', { class: 'cost', text: `${j.provider || '–'} / ${fmtUnits(j.costUnits)} units` }),
      el('dt', { text: 'created' }), el('dd', { text: fmtDate(j.createdAtUnixMs) }),
      j.deadlineUnixMs ? el('dt', { text: 'deadline' }) : null, j.deadlineUnixMs ? el('dd', { class: j.atRisk && !isEnded(j) ? 'at-risk' : '', text: fmtDate(j.deadlineUnixMs) + (j.atRisk && !isEnded(j) ? ' — at risk' : '') }) : null,
      el('dt', { text: 'completed' }), el('dd', { text: fmtDate(j.completedAtUnixMs) }),
      el('dt', { text: 'idempotency key' }), el('dd', { class: 'jid', text: j.idempotencyKey })),
    el('details', {}, el('summary', { text: 'Input text' }), el('pre', { text: j.inputText })),
    a.expandedScript ? el('details', {}, el('summary', { text: 'Expanded script' }), el('pre', { text: a.expandedScript })) : null,
  ].filter(Boolean));
  renderSummary(j);
  renderTimeline();
}

function renderSummary(j) {
  const box = $('#detail-summary');
  if (!box) return;
  box.replaceChildren(el('p', {}, el('span', { class: 'badge ' + j.status, text: words(j.status) + (j.deadLettered ? ' (dead-lettered)' : '') })), progressBar(j), actions(j));
}

function renderTimeline() {
  const ul = $('#timeline');
  if (!ul) return;
  const items = [...state.timeline].sort((x, y) => x.seq - y.seq);
  ul.replaceChildren(...items.map((e) => el('li', { class: ['final_ready', 'cancelled'].includes(norm(e.status)) ? 'terminal' : '' },
    el('span', { class: 'seq', text: '#' + e.seq }), el('span', { class: 't', text: fmtTime(e.atUnixMs) }),
    el('b', { text: words(e.status) }), ' · ' + words(e.stage) + ' · ' + num(e.progress) + '%', e.message ? ' — ' + e.message : '')));
}

// ---------------------------------------------------------------- wiring
function setupFilters() {
  const box = $('#filters');
  const chips = [['', 'All'], ...STATUSES.map((s) => [s, words(s)])];
  box.replaceChildren(...chips.map(([v, label]) => el('button', { class: 'chip' + (v === state.filter ? ' on' : ''), 'data-status': v || 'all', role: 'tab', onclick: () => {
    state.filter = v; state.nextPageToken = '';
    for (const c of box.children) c.classList.toggle('on', c.dataset.status === (v || 'all'));
    loadJobs();
  } }, label)));
}

$('#create-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const bodyJSON = { userId: f.get('userId'), sceneId: f.get('sceneId'), type: f.get('type'), tier: f.get('tier'), inputText: f.get('inputText') };
  $('#create-error').textContent = '';
  $('#create-button').disabled = true;
  try {
    const j = normJob(await api('/v1/jobs', { method: 'POST', body: bodyJSON }));
    state.jobs.set(j.id, j);
    state.order = [j.id, ...state.order.filter((x) => x !== j.id)];
    render();
    live.track(j.id);
    ev.target.elements.inputText.value = '';
  } catch (e) {
    $('#create-error').textContent = e.message;
  } finally {
    $('#create-button').disabled = false;
  }
});
$('#key-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  state.key = $('#key-input').value.trim();
  localStorage.setItem('reel.key', state.key);
  $('#key-input').value = '';
  location.reload();
});
let userTimer = null;
$('#user-filter').addEventListener('input', (ev) => { clearTimeout(userTimer); userTimer = setTimeout(() => { state.user = ev.target.value.trim(); loadJobs(); }, 300); });
$('#more').addEventListener('click', () => loadJobs({ more: true }));
$('#detail-close').addEventListener('click', () => { state.selected = null; $('#detail').hidden = true; render(); });
if (state.key) $('#key-input').placeholder = 'API key set (paste to replace)';

// ---------------------------------------------------------------- providers
// Each real provider's state (GET /v1/providers): up, parked (out of credit…), failing
// (circuit open after server errors) or unhealthy (credentials refused), with its live tasks.
async function loadProviders() {
  let data;
  try { data = await api('/v1/providers'); } catch (_) { return; }
  const box = $('#providers');
  const list = (data && data.providers) || [];
  box.hidden = list.length === 0;
  box.replaceChildren(...list.map((p) => el('span', {
    class: 'provider ' + p.state, 'data-provider': p.name,
    title: p.state + (p.parkedReason ? ': ' + p.parkedReason : '') + ` · ${num(p.liveTasks)} of ${num(p.concurrency)} slots in use`,
    text: `${p.name} ${p.state} ${num(p.liveTasks)}/${num(p.concurrency)}`,
  })));
}

setupFilters();
live.start();
loadJobs();
loadProviders();
setInterval(() => { if (!document.hidden) loadProviders(); }, 5000);
// New jobs (made elsewhere) show up within a few seconds.
setInterval(() => { if (!document.hidden) loadJobs(); }, 4000);
window.reelDashboard = { state, live };
})();