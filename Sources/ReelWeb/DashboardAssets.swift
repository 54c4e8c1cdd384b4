/// The dashboard's files, embedded so that the page needs nothing but this server.
enum DashboardAssets {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Reel · jobs</title>
<link rel="icon" href="/favicon.ico">
<link rel="stylesheet" href="/dashboard.css">
</head>
<body data-live="connecting">
<header class="top">
  <div class="brand"><span class="logo">▶</span> Reel <span class="sub">jobs</span></div>
  <div class="live" id="live" title="how this page gets live updates"><span class="dot"></span><span id="live-text">connecting…</span></div>
  <form class="key" id="key-form" autocomplete="off">
    <input id="key-input" type="password" placeholder="API key (when --auth is on)" aria-label="API key">
    <button type="submit" class="ghost">Use key</button>
  </form>
</header>
<main>
  <section class="panel create">
    <h2>New job</h2>
    <form id="create-form" autocomplete="off">
      <div class="row">
        <label>User <input name="userId" value="web-user" required pattern="[A-Za-z0-9_.\-]{1,128}"></label>
        <label>Scene <input name="sceneId" value="scene-1" required pattern="[A-Za-z0-9_.\-]{1,128}"></label>
        <label>Type <select name="type"><option value="JOB_TYPE_SCENE_CREATION">scene creation</option><option value="JOB_TYPE_CONTINUATION">continuation</option></select></label>
        <label>Tier <select name="tier"><option value="TIER_STANDARD">standard</option><option value="TIER_PREMIUM">premium</option></select></label>
      </div>
      <label class="wide">Text <textarea name="inputText" rows="2" required maxlength="10000" placeholder="A lighthouse keeper finds a message in a bottle"></textarea></label>
      <div class="row end"><span class="form-error" id="create-error" role="alert"></span><button type="submit" id="create-button">Create job</button></div>
    </form>
  </section>
  <section class="panel jobs">
    <div class="jobs-head">
      <h2>Jobs <span class="count" id="job-count"></span></h2>
      <div class="filters" id="filters" role="tablist"></div>
      <input id="user-filter" placeholder="filter by user id" aria-label="user id filter">
    </div>
    <div class="banner" id="banner" hidden></div>
    <table>
      <thead><tr><th>Job</th><th>Status</th><th class="prog">Progress</th><th>Created</th><th></th></tr></thead>
      <tbody id="job-rows"></tbody>
    </table>
    <div class="empty" id="empty" hidden>No jobs yet. Create one above.</div>
    <div class="more"><button class="ghost" id="more" hidden>Older jobs</button></div>
  </section>
</main>
<aside class="detail" id="detail" hidden aria-label="job details">
  <div class="detail-head">
    <h2 id="detail-title">Job</h2>
    <button class="ghost" id="detail-close" aria-label="close">✕</button>
  </div>
  <div id="detail-body"></div>
</aside>
<script src="/dashboard.js"></script>
</body>
</html>
"""#

    static let css = #"""
:root {
  --bg: #f5f6f8; --panel: #fff; --ink: #1d2330; --muted: #6b7385; --line: #e3e6ec;
  --accent: #4f46e5; --accent-soft: #eef0ff; --ok: #15803d; --ok-soft: #dcfce7; --bad: #b91c1c;
  --bad-soft: #fee2e2; --warn: #a16207; --warn-soft: #fef3c7; --run: #1d4ed8; --run-soft: #dbeafe;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); font-size: 14px; }
.top { display: flex; align-items: center; gap: 18px; padding: 12px 24px; background: #111827; color: #fff; }
.brand { font-weight: 700; font-size: 18px; letter-spacing: .3px; }
.brand .logo { color: #a5b4fc; }
.brand .sub { font-weight: 400; color: #9ca3af; margin-left: 4px; }
.live { display: flex; align-items: center; gap: 6px; font-size: 12px; color: #d1d5db; margin-right: auto; }
.live .dot { width: 8px; height: 8px; border-radius: 50%; background: #9ca3af; }
body[data-live="ws"] .live .dot, body[data-live="sse"] .live .dot { background: #22c55e; box-shadow: 0 0 6px #22c55e; }
body[data-live="poll"] .live .dot { background: #f59e0b; }
.key { display: flex; gap: 6px; }
.key input { width: 230px; background: #1f2937; border: 1px solid #374151; color: #fff; }
main { max-width: 1180px; margin: 20px auto; padding: 0 20px; display: grid; gap: 18px; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; padding: 16px 18px; }
h2 { font-size: 15px; margin: 0 0 12px; }
label { display: flex; flex-direction: column; gap: 4px; font-size: 12px; color: var(--muted); flex: 1; }
label.wide { margin-top: 10px; }
input, select, textarea { font: inherit; color: var(--ink); padding: 7px 9px; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
textarea { resize: vertical; }
.row { display: flex; gap: 12px; align-items: flex-end; flex-wrap: wrap; }
.row.end { justify-content: flex-end; margin-top: 10px; }
button { font: inherit; border: 0; border-radius: 6px; padding: 7px 14px; background: var(--accent); color: #fff; cursor: pointer; }
button:hover { filter: brightness(1.08); }
button:disabled { opacity: .5; cursor: default; }
button.ghost { background: transparent; color: inherit; border: 1px solid currentColor; opacity: .8; }
button.small { padding: 3px 10px; font-size: 12px; }
button.danger { background: var(--bad); }
button.secondary { background: #374151; }
.form-error { color: var(--bad); margin-right: auto; }
.jobs-head { display: flex; align-items: center; gap: 14px; flex-wrap: wrap; margin-bottom: 8px; }
.jobs-head h2 { margin: 0; }
.count { color: var(--muted); font-weight: 400; }
.filters { display: flex; gap: 6px; flex-wrap: wrap; }
.chip { background: #f1f3f7; color: var(--ink); border: 1px solid var(--line); padding: 4px 10px; border-radius: 999px; font-size: 12px; }
.chip.on { background: var(--accent); color: #fff; border-color: var(--accent); }
#user-filter { margin-left: auto; width: 170px; }
table { width: 100%; border-collapse: collapse; }
th { text-align: left; font-size: 11px; text-transform: uppercase; letter-spacing: .5px; color: var(--muted); font-weight: 600; padding: 8px 8px; border-bottom: 1px solid var(--line); }
td { padding: 10px 8px; border-bottom: 1px solid var(--line); vertical-align: middle; }
tr.job { cursor: pointer; }
tr.job:hover { background: #fafbff; }
tr.job.selected { background: var(--accent-soft); }
th.prog { width: 38%; }
td.when { white-space: nowrap; color: var(--muted); font-variant-numeric: tabular-nums; }
.jid { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
.who { color: var(--muted); font-size: 12px; margin-top: 2px; }
.text { color: var(--muted); font-size: 12px; max-width: 260px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.badge { display: inline-block; padding: 2px 8px; border-radius: 999px; font-size: 11px; font-weight: 600; background: var(--run-soft); color: var(--run); white-space: nowrap; }
.badge.queued { background: #f1f3f7; color: var(--muted); }
.badge.final_ready { background: var(--ok-soft); color: var(--ok); }
.badge.failed { background: var(--bad-soft); color: var(--bad); }
.badge.cancelled { background: var(--warn-soft); color: var(--warn); }
.bar { height: 8px; background: #eceef3; border-radius: 999px; overflow: hidden; }
.bar > span { display: block; height: 100%; width: 0; background: linear-gradient(90deg, #6366f1, #8b5cf6); transition: width .35s ease; }
.bar.final_ready > span { background: #22c55e; }
.bar.failed > span { background: #ef4444; }
.bar.cancelled > span { background: #f59e0b; }
.bar-label { display: flex; justify-content: space-between; gap: 8px; font-size: 12px; margin-top: 4px; color: var(--muted); }
.bar-label .stage { color: var(--ink); font-weight: 500; }
.bar-label .what { display: flex; gap: 6px; min-width: 0; }
.bar-label .msg { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.bar-label .msg:not(:empty)::before { content: "· "; }
.bar-label .pct { font-variant-numeric: tabular-nums; color: var(--ink); }
.actions { white-space: nowrap; text-align: right; }
.empty { color: var(--muted); text-align: center; padding: 30px; }
.more { text-align: center; margin-top: 10px; }
.banner { background: var(--warn-soft); color: var(--warn); padding: 8px 12px; border-radius: 6px; margin-bottom: 10px; }
.detail { position: fixed; top: 0; right: 0; bottom: 0; width: min(520px, 100vw); background: #fff; border-left: 1px solid var(--line); box-shadow: -8px 0 24px rgba(17,24,39,.08); overflow-y: auto; padding: 16px 20px; }
.detail-head { display: flex; align-items: center; justify-content: space-between; }
.detail-head button { color: var(--muted); }
dl { display: grid; grid-template-columns: 130px 1fr; gap: 6px 10px; margin: 12px 0; font-size: 13px; }
dt { color: var(--muted); }
dd { margin: 0; word-break: break-all; }
.media { display: grid; gap: 10px; margin: 12px 0; }
.media video { width: 100%; border-radius: 8px; background: #111827; }
.thumb-box { display: flex; gap: 12px; align-items: center; margin: 0; font-size: 12px; color: var(--muted); }
.thumb-box img { width: 128px; border-radius: 6px; border: 1px solid var(--line); }
.error-box { background: var(--bad-soft); color: var(--bad); border-radius: 8px; padding: 10px 12px; margin: 12px 0; }
.error-box b { display: block; margin-bottom: 2px; }
.timeline { list-style: none; margin: 8px 0; padding: 0 0 0 14px; border-left: 2px solid var(--line); }
.timeline li { position: relative; padding: 4px 0 8px 10px; font-size: 12px; }
.timeline li::before { content: ""; position: absolute; left: -20px; top: 8px; width: 10px; height: 10px; border-radius: 50%; background: #c7d2fe; border: 2px solid #fff; }
.timeline li.terminal::before { background: #22c55e; }
.timeline .t { color: var(--muted); font-variant-numeric: tabular-nums; margin-right: 6px; }
.timeline .seq { color: var(--muted); margin-right: 6px; }
details pre { white-space: pre-wrap; font-size: 12px; background: #f8fafc; padding: 10px; border-radius: 6px; }
.note { color: var(--muted); font-size: 12px; }
"""#

    static let favicon = #"""
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#111827"/><path d="M5 3.5v9l7-4.5z" fill="#a5b4fc"/></svg>
"""#
}
