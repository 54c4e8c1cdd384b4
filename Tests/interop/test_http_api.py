"""The HTTP/1.1 side (issue #8): the JSON API mirroring DESIGN §2 over the same operations as
gRPC, the cached polling endpoint with ETags, Server-Sent Events with Last-Event-ID resume,
the /v1/ws WebSocket, and bad input of every kind answered for that client only."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time

import grpc
import pytest

import reel_interop as ri
import reel_web as web
from reel_interop import pb

TERMINAL = ("JOB_STATUS_FINAL_READY", "JOB_STATUS_CANCELLED")


@pytest.fixture(scope="module")
def srv(_session_factory):
    """Two workers, 60 ms simulated steps: a job runs for about a second."""
    return _session_factory("web", http=True, workers=2, sim_stage_ms=60,
                            extra_args=("--retry-base-ms", "20"))


@pytest.fixture(scope="module")
def slow(_session_factory):
    """One worker, 400 ms steps: a second job stays queued while the first runs."""
    return _session_factory("web-slow", http=True, workers=1, sim_stage_ms=400)


def job_count(s) -> int:
    return int(ri.psql_value(s.db_url, "SELECT count(*) FROM jobs"))


def event_count(s) -> int:
    return int(ri.psql_value(s.db_url, "SELECT count(*) FROM job_events"))


def assert_error(r: web.Reply, status: int, code: str, mentions: str | None = None):
    assert r.status == status, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    if mentions:
        assert mentions in body["message"], body


# --------------------------------------------------------------------------- JSON API


def test_create_get_list_and_grpc_see_the_same_job(srv):
    user = ri.unique("web")
    job = web.create_job(srv.http_url, user, text="A lighthouse at dusk", tier="TIER_PREMIUM",
                         config={"targetDurationSeconds": 8, "quality": "QUALITY_HIGH", "styleOverrides": {"tone": "warm"}})
    assert job["status"] == "JOB_STATUS_QUEUED" and job["stage"] == "STAGE_PENDING"
    assert job["userId"] == user and job["tier"] == "TIER_PREMIUM" and job["maxRetries"] == 3
    assert job["config"] == {"targetDurationSeconds": 8, "quality": "QUALITY_HIGH", "model": "",
                             "styleOverrides": {"tone": "warm"}}
    assert job["idempotencyKey"].startswith("idem_") and job["lastEventSeq"] == 1
    # The same request again is the same job (idempotency, as on gRPC).
    again = web.create_job(srv.http_url, user, text="A lighthouse at dusk")
    assert again["id"] == job["id"]

    done = web.wait_status(srv.http_url, job["id"])
    assert done["progress"] == 100 and done["stage"] == "STAGE_COMPLETED"
    assert done["result"]["videoUrl"] and done["artifacts"]["finalVideoUrl"]
    via_grpc = srv.stub.GetJob(pb.GetJobRequest(id=job["id"]), timeout=ri.DEFAULT_TIMEOUT)
    assert via_grpc.status == pb.JOB_STATUS_FINAL_READY and via_grpc.last_event_seq == done["lastEventSeq"]

    page = web.call(srv.http_url, "GET", f"/v1/jobs?user_id={user}").json
    assert [j["id"] for j in page["jobs"]] == [job["id"]] and page["nextPageToken"] == ""
    page = web.call(srv.http_url, "GET", f"/v1/jobs?userId={user}&status=JOB_STATUS_FINAL_READY").json
    assert [j["id"] for j in page["jobs"]] == [job["id"]]
    page = web.call(srv.http_url, "GET", f"/v1/jobs?user_id={user}&status=queued").json
    assert page["jobs"] == []


def test_list_pages_newest_first(srv):
    user = ri.unique("web-page")
    ids = [web.create_job(srv.http_url, user)["id"] for _ in range(5)]
    seen, token = [], ""
    while True:
        page = web.call(srv.http_url, "GET", f"/v1/jobs?user_id={user}&page_size=2&page_token={token}").json
        seen += [j["id"] for j in page["jobs"]]
        token = page["nextPageToken"]
        if not token:
            break
    assert seen == list(reversed(ids))


def test_polling_endpoint_answers_304_while_unchanged(srv):
    job = web.create_job(srv.http_url, ri.unique("web-etag"))
    first = web.call(srv.http_url, "GET", f"/v1/jobs/{job['id']}")
    etag = first.headers["etag"]
    assert etag.startswith('"') and first.status == 200
    done = web.wait_status(srv.http_url, job["id"])
    r = web.call(srv.http_url, "GET", f"/v1/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert r.status == 200 and r.headers["etag"] != etag, "the job changed, so its ETag did"
    final_tag = r.headers["etag"]
    for _ in range(3):
        r = web.call(srv.http_url, "GET", f"/v1/jobs/{job['id']}", headers={"If-None-Match": final_tag})
        assert r.status == 304 and r.body == b"" and r.headers["etag"] == final_tag
    r = web.call(srv.http_url, "GET", f"/v1/jobs/{job['id']}", headers={"If-None-Match": f'"x", W/{final_tag}'})
    assert r.status == 304
    assert r.headers["cache-control"] == "no-cache"
    assert done["lastEventSeq"] == web.call(srv.http_url, "GET", f"/v1/jobs/{job['id']}").json["lastEventSeq"]


def test_polling_a_hot_job_is_served_from_memory_until_its_next_event(srv):
    job = web.create_job(srv.http_url, ri.unique("web-cache"))
    web.wait_status(srv.http_url, job["id"])
    path = f"/v1/jobs/{job['id']}"
    web.call(srv.http_url, "GET", path)
    for _ in range(5):
        r = web.call(srv.http_url, "GET", path)
        assert r.status == 200 and r.headers["x-reel-cache"] == "hit", r.headers
    # gRPC GetJob reads the same copy.
    assert srv.stub.GetJob(pb.GetJobRequest(id=job["id"]), timeout=ri.DEFAULT_TIMEOUT).status == pb.JOB_STATUS_FINAL_READY
    # A change (here: a retry of a dead-lettered job; below: a cancel) drops the copy at once.
    other = web.create_job(srv.http_url, ri.unique("web-cache"), maxRetries=1, config={"model": "simulated-failure"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        dead = web.call(srv.http_url, "GET", f"/v1/jobs/{other['id']}").json
        if dead["deadLettered"]:
            break
        time.sleep(0.05)
    assert dead["deadLettered"], dead
    hot = web.call(srv.http_url, "GET", f"/v1/jobs/{other['id']}")
    assert hot.headers["x-reel-cache"] == "hit" and hot.json["status"] == "JOB_STATUS_FAILED"
    srv.stub.RetryJob(pb.RetryJobRequest(id=other["id"]), timeout=ri.DEFAULT_TIMEOUT)  # through gRPC
    after = web.call(srv.http_url, "GET", f"/v1/jobs/{other['id']}")
    assert after.headers["x-reel-cache"] == "miss", "the writer reads its own write"
    assert after.json["lastEventSeq"] > hot.json["lastEventSeq"] and not after.json["deadLettered"], after.json
    # Cancelling it (through HTTP) drops the copy too.
    web.call(srv.http_url, "GET", f"/v1/jobs/{other['id']}")
    r = web.call(srv.http_url, "POST", f"/v1/jobs/{other['id']}:cancel", {})
    if r.status == 200:
        after = web.call(srv.http_url, "GET", f"/v1/jobs/{other['id']}")
        assert after.headers["x-reel-cache"] == "miss" and after.json["status"] == "JOB_STATUS_CANCELLED", after.json


def test_hot_job_reflects_every_change(srv):
    """Served from memory while hot, yet never stale: each event drops the cached copy."""
    job = web.create_job(srv.http_url, ri.unique("web-hot"))
    seen = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        j = web.call(srv.http_url, "GET", f"/v1/jobs/{job['id']}").json
        seen.add(j["lastEventSeq"])
        if j["status"] == "JOB_STATUS_FINAL_READY":
            break
    stored = int(ri.psql_value(srv.db_url, f"SELECT max(seq) FROM job_events WHERE job_id = '{job['id']}'"))
    assert max(seen) == stored, "the last poll shows the last stored event"
    assert len(seen) > 2, f"polling saw the job move: {sorted(seen)}"


def test_errors_are_the_grpc_ones_as_http_statuses(srv):
    before = job_count(srv)
    cases = [
        ({"userId": "", "sceneId": "s", "type": "JOB_TYPE_SCENE_CREATION", "inputText": "x"}, "user_id"),
        ({"userId": "u", "sceneId": "s", "type": "JOB_TYPE_SCENE_CREATION", "inputText": ""}, "input_text"),
        ({"userId": "u", "sceneId": "s", "inputText": "x"}, "type"),
        ({"userId": "u:1", "sceneId": "s", "type": "JOB_TYPE_CONTINUATION", "inputText": "x"}, "user_id"),
        ({"userId": "u", "sceneId": "s", "type": "JOB_TYPE_CONTINUATION", "inputText": "x" * 10_001}, "input_text"),
    ]
    for body, field in cases:
        r = web.call(srv.http_url, "POST", "/v1/jobs", body)
        assert_error(r, 400, "INVALID_ARGUMENT", field)
        req = pb.CreateJobRequest(user_id=body["userId"], scene_id=body["sceneId"], input_text=body["inputText"],
                                  type=pb.JobType.Value(body.get("type", "JOB_TYPE_UNSPECIFIED")))
        err = ri.rpc_error(srv.stub.CreateJob, req, timeout=ri.DEFAULT_TIMEOUT)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details() == r.json["message"], \
            f"same message on both sides: {err.details()!r} vs {r.json['message']!r}"
    assert_error(web.call(srv.http_url, "GET", "/v1/jobs/not-a-uuid"), 400, "INVALID_ARGUMENT", "id")
    missing = "00000000-0000-4000-8000-000000000000"
    assert_error(web.call(srv.http_url, "GET", f"/v1/jobs/{missing}"), 404, "NOT_FOUND", missing)
    assert_error(web.call(srv.http_url, "POST", f"/v1/jobs/{missing}:cancel", {}), 404, "NOT_FOUND")
    assert_error(web.call(srv.http_url, "POST", f"/v1/jobs/{missing}:retry"), 404, "NOT_FOUND")
    assert_error(web.call(srv.http_url, "GET", "/v1/jobs?page_size=501"), 400, "INVALID_ARGUMENT", "page_size")
    assert_error(web.call(srv.http_url, "GET", "/v1/jobs?status=JOB_STATUS_BOGUS"), 400, "INVALID_ARGUMENT", "status")
    assert_error(web.call(srv.http_url, "GET", "/v1/jobs?user_id=a%20b"), 400, "INVALID_ARGUMENT", "user_id")
    assert_error(web.call(srv.http_url, "GET", "/v1/jobs?page_token=garbage!"), 400, "INVALID_ARGUMENT")
    assert job_count(srv) == before


def test_cancel_and_retry(slow, srv):
    user = ri.unique("web-cancel")
    running = web.create_job(slow.http_url, user)
    queued = web.create_job(slow.http_url, user)
    web.wait_status(slow.http_url, running["id"], want=("JOB_STATUS_PROCESSING", "JOB_STATUS_SCRIPT_READY"))
    r = web.call(slow.http_url, "POST", f"/v1/jobs/{queued['id']}:cancel", {"reason": "changed my mind"})
    assert r.status == 200 and r.json["status"] == "JOB_STATUS_CANCELLED", r
    assert r.json["message"] == "cancelled: changed my mind"
    # A colon sent percent-encoded is the same route.
    r = web.call(slow.http_url, "POST", f"/v1/jobs/{running['id']}%3Acancel")
    assert r.status == 200 and r.json["status"] == "JOB_STATUS_CANCELLED", r
    assert_error(web.call(slow.http_url, "POST", f"/v1/jobs/{queued['id']}:cancel", {}), 409, "FAILED_PRECONDITION", "cancelled")
    assert_error(web.call(slow.http_url, "POST", f"/v1/jobs/{queued['id']}:retry", {}), 409, "FAILED_PRECONDITION", "failed")
    assert_error(web.call(slow.http_url, "POST", f"/v1/jobs/{queued['id']}:cancel", {"reason": "x" * 1025}), 400,
                 "INVALID_ARGUMENT", "reason")

    # A job that fails at the provider on every attempt is dead-lettered; retry queues it again.
    failing = web.create_job(srv.http_url, user, maxRetries=1, config={"model": "simulated-failure"})
    dead = web.wait_status(srv.http_url, failing["id"], want=("JOB_STATUS_FAILED",), timeout=60)
    deadline = time.monotonic() + 30
    while not dead["deadLettered"] and time.monotonic() < deadline:
        time.sleep(0.1)
        dead = web.call(srv.http_url, "GET", f"/v1/jobs/{failing['id']}").json
    assert dead["deadLettered"] and dead["error"]["code"], dead
    r = web.call(srv.http_url, "POST", f"/v1/jobs/{failing['id']}:retry")
    assert r.status == 200 and r.json["status"] == "JOB_STATUS_QUEUED" and not r.json["deadLettered"], r


# --------------------------------------------------------------------------- bad input


def test_malformed_json_and_wrong_types_store_nothing(reeld_factory):
    srv = reeld_factory("web-bad", http=True, workers=1, sim_stage_ms=10)
    before, events = job_count(srv), event_count(srv)
    bodies = [
        (b"{not json", "not valid JSON"),
        (b'{"userId": "u", "sceneId": "s", "type": "JOB_TYPE_SCENE_CREATION", "inputText": "x"} trailing', "not valid JSON"),
        (b"[1, 2, 3]", "JSON object"),
        (b'"just a string"', "JSON object"),
        (b'{"userId": 5, "sceneId": "s", "type": "JOB_TYPE_SCENE_CREATION", "inputText": "x"}', "user_id"),
        (b'{"userId": "u", "sceneId": "s", "type": true, "inputText": "x"}', "type"),
        (b'{"userId": "u", "sceneId": "s", "type": "JOB_TYPE_NOPE", "inputText": "x"}', "type"),
        (b'{"userId": "u", "sceneId": "s", "type": 1, "inputText": "x", "maxRetries": "lots"}', "max_retries"),
        (b'{"userId": "u", "sceneId": "s", "type": 1, "inputText": "x", "maxRetries": 1.5}', "max_retries"),
        (b'{"userId": "u", "sceneId": "s", "type": 1, "inputText": "x", "config": []}', "config"),
        (b'{"userId": "u", "sceneId": "s", "type": 1, "inputText": "x", "config": {"styleOverrides": {"a": 1}}}', "style_overrides"),
        (b'{"userId": "u", "sceneId": "s", "type": 1, "inputText": "x", "surprise": 1}', "surprise"),
        (b'{"userId": "u", "userId": "v", "sceneId": "s", "type": 1, "inputText": "x"}', "duplicate"),
        (b'{"userId": "\\ud800", "sceneId": "s", "type": 1, "inputText": "x"}', "not valid JSON"),
        (b"[" * 10_000 + b"]" * 10_000, "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"", "JSON object"),
    ]
    for raw, mentions in bodies:
        r = web.call(srv.http_url, "POST", "/v1/jobs", raw=raw, headers={"Content-Type": "application/json"})
        assert_error(r, 400, "INVALID_ARGUMENT", mentions)
    # Cancel with a body that is not an object, too.
    job = web.create_job(srv.http_url, ri.unique("web-bad"))
    assert_error(web.call(srv.http_url, "POST", f"/v1/jobs/{job['id']}:cancel", raw=b"{oops"), 400, "INVALID_ARGUMENT")
    assert_error(web.call(srv.http_url, "POST", f"/v1/jobs/{job['id']}:cancel", raw=b'{"reason": 7}'), 400,
                 "INVALID_ARGUMENT", "reason")
    assert job_count(srv) == before + 1
    web.wait_status(srv.http_url, job["id"])
    # Only the good job wrote events.
    stored = int(ri.psql_value(srv.db_url, f"SELECT count(*) FROM job_events WHERE job_id = '{job['id']}'"))
    assert event_count(srv) == events + stored


def test_oversized_bodies_get_413(srv):
    before = job_count(srv)
    big = b'{"userId": "u", "sceneId": "s", "type": 1, "inputText": "' + b"x" * (300 * 1024) + b'"}'
    assert_error(web.call(srv.http_url, "POST", "/v1/jobs", raw=big, headers={"Content-Type": "application/json"}),
                 413, "PAYLOAD_TOO_LARGE")
    # Without a Content-Length (chunked), the limit holds while reading.
    conn = __import__("http.client").client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
    conn.request("POST", "/v1/jobs", body=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                 headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}, encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 413, (r.status, r.read())
    conn.close()
    assert job_count(srv) == before
    # The server goes on serving.
    assert web.call(srv.http_url, "GET", "/v1/jobs?page_size=1").status == 200


def test_unknown_routes_and_methods_are_json_errors(srv):
    assert_error(web.call(srv.http_url, "GET", "/v1/nope"), 404, "NOT_FOUND", "/v1/nope")
    assert_error(web.call(srv.http_url, "GET", "/definitely/not/here"), 404, "NOT_FOUND")
    job = web.create_job(srv.http_url, ri.unique("web-404"))
    assert_error(web.call(srv.http_url, "POST", f"/v1/jobs/{job['id']}:explode"), 404, "NOT_FOUND", "cancel")
    assert_error(web.call(srv.http_url, "POST", f"/v1/jobs/{job['id']}"), 404, "NOT_FOUND")
    r = web.call(srv.http_url, "DELETE", f"/v1/jobs/{job['id']}")
    assert r.status in (404, 405) and r.json["code"] in ("NOT_FOUND", "METHOD_NOT_ALLOWED"), r
    assert_error(web.call(srv.http_url, "GET", "/v1/ws"), 426, "UPGRADE_REQUIRED")
    # /metrics and /healthz are still there, as on --metrics-listen.
    assert web.call(srv.http_url, "GET", "/healthz").body == b"SERVING\n"
    assert b"reel_jobs_created_total" in web.call(srv.http_url, "GET", "/metrics").body
    m = web.call(f"http://127.0.0.1:{srv.metrics_port}", "GET", "/metrics")
    assert m.status == 200 and b"reel_jobs_created_total" in m.body


# --------------------------------------------------------------------------- the dashboard's files

DASHBOARD = ri.REPO_ROOT / "Sources" / "ReelWeb" / "Dashboard"
DASHBOARD_ROUTES = {  # route → (its file in Sources/ReelWeb/Dashboard, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),
}


def test_dashboard_routes_serve_its_files(srv):
    """Each route serves its file from Sources/ReelWeb/Dashboard (shipped in reeld's resource
    bundle) byte for byte, with its content type and `Cache-Control: no-cache`; no file there
    goes unserved."""
    for route, (name, ctype) in DASHBOARD_ROUTES.items():
        r = web.call(srv.http_url, "GET", route)
        assert r.status == 200, (route, r)
        assert r.headers["content-type"] == ctype, (route, r.headers)
        assert r.headers["cache-control"] == "no-cache", (route, r.headers)
        assert r.body == (DASHBOARD / name).read_bytes(), f"{route} is not {name}"
    assert {p.name for p in DASHBOARD.iterdir()} == {name for name, _ in DASHBOARD_ROUTES.values()}


def test_reeld_without_its_dashboard_files_says_so_at_start(bin_dir, tmp_path):
    """A reeld copied without the Reel_ReelWeb.resources directory next to it stops at start,
    before it touches the database, with an error naming the missing directory. With
    `--http-listen ''` (no dashboard) it doesn't need the files."""
    shutil.copy2(bin_dir / "reeld", tmp_path / "reeld")
    bundle = tmp_path / "Reel_ReelWeb.resources"

    def start(http_listen: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(tmp_path / "reeld"), "--listen", "127.0.0.1:0", "--http-listen", http_listen,
                               "--database-url", "postgresql://nobody@127.0.0.1:1/none"],
                              capture_output=True, text=True, timeout=60)

    r = start("127.0.0.1:0")
    assert r.returncode == 1, r
    assert f"dashboard's files are missing: no {bundle} " in r.stderr and "cannot use database" not in r.stderr, r.stderr
    r = start("")
    assert r.returncode == 1 and "cannot use database" in r.stderr and "dashboard" not in r.stderr, r.stderr
    shutil.copytree(bin_dir / "Reel_ReelWeb.resources", bundle)
    r = start("127.0.0.1:0")
    assert r.returncode == 1 and "cannot use database" in r.stderr and "dashboard" not in r.stderr, r.stderr
    (bundle / "Dashboard" / "dashboard.js").unlink()
    r = start("127.0.0.1:0")
    assert r.returncode == 1 and f"Dashboard/dashboard.js is missing from {bundle}" in r.stderr, r.stderr


# --------------------------------------------------------------------------- Server-Sent Events


def test_sse_streams_to_the_terminal_event_and_resumes_with_last_event_id(srv):
    job = web.create_job(srv.http_url, ri.unique("web-sse"))
    status, events = web.sse_events(srv.http_url, f"/v1/jobs/{job['id']}/events")
    assert status == 200, events
    first = events[0]["data"]
    assert first["snapshot"]["id"] == job["id"] and int(events[0]["id"]) == first["seq"] == first["snapshot"]["lastEventSeq"]
    seqs = [int(e["id"]) for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"consecutive seqs: {seqs}"
    assert all(int(e["id"]) == e["data"]["seq"] for e in events)
    assert events[-1]["data"]["status"] == "JOB_STATUS_FINAL_READY" and events[-1]["data"]["progress"] == 100
    last = seqs[-1]

    history = web.call(srv.http_url, "GET", f"/v1/jobs/{job['id']}/events?format=json").json["events"]
    assert [e["seq"] for e in history] == list(range(1, last + 1))

    # A client that saw up to seq k reconnects with Last-Event-ID: k and gets exactly k+1 … last.
    for k in (1, last // 2, last - 1):
        status, resumed = web.sse_events(srv.http_url, f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": str(k)})
        assert status == 200
        assert [int(e["id"]) for e in resumed] == list(range(k + 1, last + 1))
        assert [e["data"] for e in resumed] == history[k:]
    # Nothing left after the terminal event: 204 tells EventSource to stop reconnecting.
    status, _ = web.sse_events(srv.http_url, f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": str(last)})
    assert status == 204


def test_sse_resume_while_running_misses_nothing(slow):
    job = web.create_job(slow.http_url, ri.unique("web-sse-live"))
    status, head = web.sse_events(slow.http_url, f"/v1/jobs/{job['id']}/events", limit=3)
    assert status == 200 and len(head) == 3
    k = int(head[-1]["id"])
    status, rest = web.sse_events(slow.http_url, f"/v1/jobs/{job['id']}/events?after_seq={k}", timeout=60)
    assert status == 200
    assert [int(e["id"]) for e in rest] == list(range(k + 1, k + 1 + len(rest)))
    assert rest[-1]["data"]["status"] == "JOB_STATUS_FINAL_READY"


def test_sse_keeps_a_quiet_stream_alive_and_still_delivers(reeld_factory):
    """A queued job says nothing for a while: comments keep the stream open, and the next
    event (a cancel) still arrives and ends it."""
    import http.client
    import urllib.parse
    s = reeld_factory("sse-keepalive", http=True, workers=0, extra_args=("--sse-keepalive-seconds", "0.3"))
    job = web.create_job(s.http_url, ri.unique("web-sse-quiet"))
    u = urllib.parse.urlsplit(s.http_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("GET", f"/v1/jobs/{job['id']}/events", headers={"Accept": "text/event-stream"})
        r = conn.getresponse()
        assert r.status == 200
        lines, started = [], time.monotonic()
        canceller = threading.Timer(2.0, lambda: web.call(s.http_url, "POST", f"/v1/jobs/{job['id']}:cancel", body={}))
        canceller.start()
        while True:
            line = r.readline()
            if not line:
                break
            lines.append((time.monotonic() - started, line.decode().rstrip("\r\n")))
        canceller.join()
    finally:
        conn.close()
    quiet = [t for t, l in lines if l == ": keep-alive" and t < 2.0]
    assert len(quiet) >= 3, lines  # every 0.3 s: about 6 in 2 s, fewer on a busy machine
    data = [l for _, l in lines if l.startswith("data:")]
    assert "JOB_STATUS_QUEUED" in data[0] and "JOB_STATUS_CANCELLED" in data[-1], data


def test_sse_errors_are_http_statuses(srv):
    assert web.sse_events(srv.http_url, "/v1/jobs/nope/events")[0] == 400
    assert web.sse_events(srv.http_url, "/v1/jobs/00000000-0000-4000-8000-000000000000/events")[0] == 404
    job = web.create_job(srv.http_url, ri.unique("web-sse-bad"))
    assert web.sse_events(srv.http_url, f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "-3"})[0] == 400
    assert web.sse_events(srv.http_url, f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "abc"})[0] == 400


# --------------------------------------------------------------------------- WebSocket


def test_websocket_pushes_job_updates_and_ends_at_the_terminal_state(srv):
    user = ri.unique("web-ws")
    a, b = web.create_job(srv.http_url, user), web.create_job(srv.http_url, user)
    ws = web.WebSocket(srv.http_url)
    try:
        ws.send_json({"type": "subscribe", "jobId": a["id"]})
        ws.send_json({"type": "subscribe", "jobId": b["id"]})
        updates = {a["id"]: [], b["id"]: []}
        ended = set()
        while ended != {a["id"], b["id"]}:
            m = ws.recv_json(timeout=30)
            assert m is not None, "connection stays open"
            if m["type"] == "job_update":
                assert not m["jobId"] in ended
                updates[m["jobId"]].append(m)
            elif m["type"] == "unsubscribed":
                assert m["reason"] == "terminal"
                ended.add(m["jobId"])
            else:
                raise AssertionError(m)
        for jid, ups in updates.items():
            assert ups[0]["job"]["id"] == jid, "the first update carries the whole job"
            assert [u["seq"] for u in ups] == sorted(u["seq"] for u in ups)
            assert ups[-1]["status"] == "final_ready" and ups[-1]["progress"] == 100 and ups[-1]["terminal"]
            assert {"jobId", "seq", "status", "stage", "progress", "message", "atUnixMs"} <= set(ups[-1])
        # Subscribing to a finished job: its final state, then unsubscribed at once.
        ws.send_json({"type": "subscribe", "jobId": a["id"]})
        m = ws.recv_json()
        assert m["type"] == "job_update" and m["status"] == "final_ready" and m["job"]["id"] == a["id"]
        assert ws.recv_json() == {"type": "unsubscribed", "jobId": a["id"], "reason": "terminal"}
        ws.send_json({"type": "ping"})
        assert ws.recv_json() == {"type": "pong"}
    finally:
        ws.close()


def test_websocket_unsubscribe_stops_updates(slow):
    job = web.create_job(slow.http_url, ri.unique("web-ws-unsub"))
    ws = web.WebSocket(slow.http_url)
    try:
        ws.send_json({"type": "subscribe", "jobId": job["id"]})
        assert ws.recv_json()["type"] == "job_update"
        ws.send_json({"type": "unsubscribe", "jobId": job["id"]})
        while True:
            m = ws.recv_json()
            if m["type"] == "unsubscribed":
                assert m["reason"] == "requested"
                break
        ws.send_json({"type": "ping"})
        assert ws.recv_json(timeout=10) == {"type": "pong"}, "no more updates for that job"
    finally:
        ws.close()
        srv_cancel(slow, job["id"])


def srv_cancel(s, job_id):
    web.call(s.http_url, "POST", f"/v1/jobs/{job_id}:cancel", {})


def test_websocket_garbage_gets_errors_and_changes_nothing(srv):
    before, events = job_count(srv), event_count(srv)
    ws = web.WebSocket(srv.http_url)
    try:
        garbage = [
            ("text", "this is not json", "JSON object"),
            ("text", "[1,2]", "JSON object"),
            ("text", '{"type": 7}', "type"),
            ("text", '{"type": "explode", "jobId": "x"}', "type"),
            ("text", '{"type": "subscribe"}', "jobId"),
            ("text", '{"type": "subscribe", "jobId": "not-a-uuid"}', "jobId"),
            ("binary", b"\x00\x01\x02", "binary"),
        ]
        for kind, payload, mentions in garbage:
            if kind == "binary":
                ws.send_frame(0x2, payload)
            else:
                ws.send_text(payload)
            m = ws.recv_json()
            assert m["type"] == "error" and m["code"] == "INVALID_ARGUMENT" and mentions in m["message"], (payload, m)
        ws.send_json({"type": "subscribe", "jobId": "00000000-0000-4000-8000-000000000000"})
        m = ws.recv_json()
        assert m["type"] == "error" and m["code"] == "NOT_FOUND", m
        # Still a working connection.
        job = web.create_job(srv.http_url, ri.unique("web-ws-after"))
        ws.send_json({"type": "subscribe", "jobId": job["id"]})
        while (m := ws.recv_json(timeout=30))["type"] != "unsubscribed":
            assert m["type"] == "job_update"
    finally:
        ws.close()
    assert job_count(srv) == before + 1
    # A message over the size limit closes that connection with "message too big" (1009).
    ws = web.WebSocket(srv.http_url)
    try:
        ws.send_text('{"type":"ping","pad":"' + "x" * 100_000 + '"}')
        while (m := ws.recv_json(timeout=15)) is not None:
            assert m["type"] == "error"
        assert ws.close_code in (1009, 1002, 1008), ws.close_code
    except (EOFError, ConnectionError, OSError):
        pass  # closed without a close frame: also dropped
    finally:
        ws.close()
    assert web.call(srv.http_url, "GET", "/v1/jobs?page_size=1").status == 200


def test_websocket_client_that_never_reads_is_dropped_and_others_carry_on(srv):
    """A client that floods requests and never reads the replies: its replies pile up, the
    server drops it; memory stays bounded and other clients are unaffected."""
    rss_before = _rss_kb(srv)
    bad = web.WebSocket(srv.http_url, rcvbuf=4096)
    good = web.WebSocket(srv.http_url)
    try:
        bad.sock.settimeout(2)
        sent, dropped = 0, False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                for _ in range(500):
                    bad.send_text("garbage that gets an error reply " * 4)
                    sent += 1
            except (OSError, socket.timeout):
                dropped = True  # the server stopped reading us: it closed the connection
                break
            # Meanwhile a well-behaved client is served.
            good.send_json({"type": "ping"})
            assert good.recv_json(timeout=10) == {"type": "pong"}
        assert dropped, f"sent {sent} messages without being dropped"
        job = web.create_job(srv.http_url, ri.unique("web-ws-good"))
        good.send_json({"type": "subscribe", "jobId": job["id"]})
        while (m := good.recv_json(timeout=30))["type"] != "unsubscribed":
            assert m["type"] == "job_update"
    finally:
        bad.sock.close()
        good.close()
    assert _rss_kb(srv) - rss_before < 200_000, "memory stayed bounded"


def _rss_kb(s) -> int:
    with open(f"/proc/{s.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------- auth and tenancy


def test_auth_and_tenancy_match_grpc(_session_factory):
    import test_auth
    ADMIN = test_auth.ADMIN
    s = _session_factory("web-auth", http=True, workers=1, sim_stage_ms=20,
                         extra_args=("--auth", "--admin-key", ADMIN))
    a = test_auth.new_key(s, "acme")["secret"]
    b = test_auth.new_key(s, "globex")["secret"]
    body = {"userId": "u1", "sceneId": "s", "type": "JOB_TYPE_SCENE_CREATION", "inputText": "acme's"}
    for headers in ({}, web.auth("reel_wrong"), {"Authorization": "Basic eDp5"}):
        assert_error(web.call(s.http_url, "POST", "/v1/jobs", body, headers=headers), 401, "UNAUTHENTICATED")
    assert_error(web.call(s.http_url, "GET", "/v1/jobs"), 401, "UNAUTHENTICATED")
    assert job_count(s) == 0
    job = web.call(s.http_url, "POST", "/v1/jobs", body, headers=web.auth(a)).json
    # Another tenant: the job does not exist for them, on every route.
    assert_error(web.call(s.http_url, "GET", f"/v1/jobs/{job['id']}", headers=web.auth(b)), 404, "NOT_FOUND")
    assert_error(web.call(s.http_url, "POST", f"/v1/jobs/{job['id']}:cancel", {}, headers=web.auth(b)), 404, "NOT_FOUND")
    assert web.call(s.http_url, "GET", "/v1/jobs", headers=web.auth(b)).json["jobs"] == []
    assert web.sse_events(s.http_url, f"/v1/jobs/{job['id']}/events?access_token={b}")[0] == 404
    # Its own tenant and the admin see it; gRPC agrees.
    assert web.call(s.http_url, "GET", f"/v1/jobs/{job['id']}", headers=web.auth(ADMIN)).status == 200
    grpc_job = s.stub.GetJob(pb.GetJobRequest(id=job["id"]), metadata=(("authorization", f"Bearer {a}"),), timeout=10)
    assert grpc_job.id == job["id"]
    # EventSource can't send headers: ?access_token= works on the SSE route (and only there).
    assert web.sse_events(s.http_url, f"/v1/jobs/{job['id']}/events")[0] == 401
    status, events = web.sse_events(s.http_url, f"/v1/jobs/{job['id']}/events?access_token={a}")
    assert status == 200 and events[-1]["data"]["status"] == "JOB_STATUS_FINAL_READY"
    assert_error(web.call(s.http_url, "GET", f"/v1/jobs/{job['id']}?access_token={a}"), 401, "UNAUTHENTICATED")
    # The WebSocket: no key → an error message and a policy-violation close.
    ws = web.WebSocket(s.http_url)
    m = ws.recv_json()
    assert m["type"] == "error" and m["code"] == "UNAUTHENTICATED", m
    assert ws.recv_json() is None and ws.close_code == 1008
    ws.close()
    ws = web.WebSocket(s.http_url, path=f"/v1/ws?access_token={b}")
    ws.send_json({"type": "subscribe", "jobId": job["id"]})
    m = ws.recv_json()
    assert m["type"] == "error" and m["code"] == "NOT_FOUND", m
    ws.close()
    ws = web.WebSocket(s.http_url, headers=web.auth(a))
    ws.send_json({"type": "subscribe", "jobId": job["id"]})
    m = ws.recv_json()
    assert m["type"] == "job_update" and m["status"] == "final_ready", m
    ws.close()


# --------------------------------------------------------------------------- media


def test_media_serves_a_jobs_artifacts_and_nothing_else(reeld_factory, fake_kling, tmp_path):
    """`/v1/media?url=` lets the page play `file://` artifacts: only files under
    --artifacts-dir, only to callers who may see the job; `sim://` gets a rendered test clip."""
    import urllib.parse
    from pathlib import Path
    art = tmp_path / "artifacts"
    fake_kling.control(queued_ms=50, processing_ms=200)
    media = ri.kling_reeld(reeld_factory, "web-media", fake_kling.url, art)
    base = media.http_url
    job = web.create_job(base, ri.unique("web-media"))
    done = web.wait_status(base, job["id"], timeout=120)
    q = lambda u: "/v1/media?url=" + urllib.parse.quote(u, safe="")
    for url, ctype in ((done["artifacts"]["finalVideoUrl"], "video/mp4"), (done["artifacts"]["thumbnailUrl"], "image/jpeg")):
        assert url.startswith("file://"), url
        r = web.call(base, "GET", q(url))
        assert r.status == 200 and r.headers["content-type"] == ctype, r
        assert r.body == Path(urllib.parse.urlsplit(url).path).read_bytes()
    video = done["artifacts"]["finalVideoUrl"]
    for bad in ("file:///etc/passwd", video.rsplit("/", 1)[0] + "/../../../../../../etc/passwd",
                f"file://{art}/00000000-0000-4000-8000-000000000000/final.mp4", "http://example.invalid/x.mp4",
                "sim://videos/x.exe", "javascript:alert(1)"):
        r = web.call(base, "GET", q(bad))
        assert r.status == 404 and r.json["code"] == "NOT_FOUND", (bad, r)
        assert b"root:" not in r.body
    assert_error(web.call(base, "GET", "/v1/media"), 400, "INVALID_ARGUMENT", "url")
    # The simulated provider's URLs get a short test-pattern clip (rendered once with ffmpeg).
    r = web.call(base, "GET", q("sim://videos/abc.mp4"), timeout=60)
    assert r.status == 200 and r.headers["content-type"] == "video/mp4" and len(r.body) > 1000, r
    assert r.body[4:8] == b"ftyp"
    r = web.call(base, "GET", q("sim://videos/abc.jpg"), timeout=60)
    assert r.status == 200 and r.body[:2] == b"\xff\xd8", r
