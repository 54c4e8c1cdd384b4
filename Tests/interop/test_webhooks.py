"""Completion webhooks (issue #17 item 6, DESIGN §8): when a job with a webhook_url ends, Reel
POSTs its JSON (the HTTP API's shape) from a durable outbox, signed `Reel-Signature:
t=UNIX,v1=HEX` (HMAC-SHA256 over `<t>.` + body), with a `Reel-Delivery-Id` that stays the same
across retries. The receiver below is a real HTTP server on loopback that checks signatures
itself with the secret it was given."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest

import reel_interop as ri
import reel_web as web
from reel_interop import pb

SECRET = "whsec_interop_global_secret"
ADMIN = "reel_admin_key_for_tests_0123456789"


class Receiver:
    """Records every POST. Paths: /ok/TAG → 200; /flaky/TAG → 500 for the first request of
    TAG, then 200; /down/TAG → 503 while `down` is set, then 200."""

    def __init__(self):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.down = True
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    seen = [r for r in receiver.requests if r["path"] == self.path]
                    receiver.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                              "body": body, "at": time.time()})
                kind = self.path.split("/")[1]
                status = 200
                if kind == "flaky" and not seen:
                    status = 500
                if kind == "down" and receiver.down:
                    status = 503
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, kind: str, tag: str | None = None, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{kind}/{tag or uuid.uuid4().hex[:10]}"

    def for_path(self, url: str) -> list[dict]:
        path = "/" + url.split("/", 3)[3]
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def wait(self, url: str, n: int = 1, timeout: float = 30.0) -> list[dict]:
        return ri.wait_for(f"{n} request(s) at {url}", lambda: (lambda got: got if len(got) >= n else None)(self.for_path(url)),
                           timeout=timeout)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def verify(req: dict, secret: str) -> bool:
    """What a receiver does: recompute HMAC-SHA256(secret, "<t>." + body) and compare."""
    header = req["headers"].get("reel-signature", "")
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if "t" not in parts or "v1" not in parts:
        return False
    if abs(time.time() - int(parts["t"])) > 300:
        return False
    mac = hmac.new(secret.encode(), parts["t"].encode() + b"." + req["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, parts["v1"])


def deliveries(srv, job_id: str, key: str | None = None) -> list[dict]:
    r = web.call(srv.http_url, "GET", f"/v1/jobs/{job_id}/webhooks", headers=web.auth(key))
    assert r.status == 200, r
    return r.json["deliveries"]


def wait_delivery_state(srv, job_id: str, state: str, key: str | None = None, timeout: float = 30.0) -> dict:
    def done():
        d = deliveries(srv, job_id, key)
        return d[0] if d and d[0]["state"] == state else None
    return ri.wait_for(f"delivery of {job_id} {state}", done, timeout=timeout)


def history(srv, job_id: str) -> list[dict]:
    """The job's stored events (the HTTP API's JSON history)."""
    r = web.call(srv.http_url, "GET", f"/v1/jobs/{job_id}/events", headers={"Accept": "application/json"})
    assert r.status == 200, r
    return r.json["events"]


def job_at_last_event(srv, job_id: str) -> pb.Job:
    """GetJob once it reflects the job's newest stored event (a read just after a commit may be
    answered from memory until the event reaches this process's hub)."""
    last = history(srv, job_id)[-1]["seq"]
    return ri.wait_for(f"{job_id} at seq {last}", lambda: (lambda j: j if j.last_event_seq == last else None)(
        srv.stub.GetJob(pb.GetJobRequest(id=job_id), timeout=ri.DEFAULT_TIMEOUT)), timeout=10)


def hook_reeld(factory, name, *extra, env=None, **kw):
    kw.setdefault("sim_stage_ms", 30)
    srv = factory(name, start=False, http=True, workers=kw.pop("workers", 4),
                  extra_args=("--retry-base-ms", "100", *extra), **kw)
    if env:
        ri.set_env(srv, env)
    srv.start()
    return srv


def test_final_failed_and_cancelled_jobs_are_delivered_signed_with_the_api_json(reeld_factory, receiver):
    srv = hook_reeld(reeld_factory, "hooks-ends", "--webhook-secret", SECRET, "--webhook-allow-private", sim_stage_ms=150)
    user = ri.unique("hook")
    final = srv.stub.CreateJob(ri.create_request(user, webhook_url=receiver.url("ok")), timeout=ri.DEFAULT_TIMEOUT)
    failing = srv.stub.CreateJob(ri.create_request(user, webhook_url=receiver.url("ok"), max_retries=1,
                                                   config=pb.JobConfig(model="simulated-failure")), timeout=ri.DEFAULT_TIMEOUT)
    cancelled = srv.stub.CreateJob(ri.create_request(user, webhook_url=receiver.url("ok")), timeout=ri.DEFAULT_TIMEOUT)
    plain = srv.stub.CreateJob(ri.create_request(user), timeout=ri.DEFAULT_TIMEOUT)
    # A cancel racing the job's claim can meet a deadlock on main (jobs vs job_queue lock order),
    # answered UNAVAILABLE "retry": do as the status says.
    for attempt in range(5):
        try:
            srv.stub.CancelJob(pb.CancelJobRequest(id=cancelled.id, reason="test"), timeout=ri.DEFAULT_TIMEOUT)
            break
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == 4:
                raise

    ri.wait_for_job(srv.stub, final.id)
    ri.wait_for_job(srv.stub, plain.id)
    ri.wait_for_job(srv.stub, failing.id, want=(pb.JOB_STATUS_FAILED,), timeout=60)
    ended = {j.id: ri.wait_for(f"{j.id} terminal", lambda j=j: (lambda g: g if ri.is_terminal(g) else None)(
        srv.stub.GetJob(pb.GetJobRequest(id=j.id), timeout=ri.DEFAULT_TIMEOUT))) for j in (final, failing, cancelled)}
    assert ended[failing.id].dead_lettered and ended[cancelled.id].status == pb.JOB_STATUS_CANCELLED

    for job, want in ((final, "JOB_STATUS_FINAL_READY"), (failing, "JOB_STATUS_FAILED"), (cancelled, "JOB_STATUS_CANCELLED")):
        (req,) = receiver.wait(job.webhook_url)
        h = req["headers"]
        assert h["content-type"] == "application/json"
        assert str(uuid.UUID(h["reel-delivery-id"])) == h["reel-delivery-id"]
        assert verify(req, SECRET), f"signature of {want} does not verify: {h.get('reel-signature')}"
        assert not verify(req, SECRET + "x")
        body = json.loads(req["body"])
        assert body["id"] == job.id and body["status"] == want
        d = wait_delivery_state(srv, job.id, "DELIVERED")
        assert d["id"] == h["reel-delivery-id"] and d["attempts"] == 1 and d["lastStatus"] == 200
        assert d["jobStatus"] == want and d["url"] == job.webhook_url
        # The body is the HTTP API's JSON of the job as it ended: since then the delivery's
        # event (the job's next seq) is all that changed.
        last = job_at_last_event(srv, job.id).last_event_seq
        api = ri.wait_for("GET /v1/jobs at the last event", lambda: (lambda a: a if a["lastEventSeq"] == last else None)(
            web.call(srv.http_url, "GET", f"/v1/jobs/{job.id}").json), timeout=10)
        assert api["lastEventSeq"] == body["lastEventSeq"] + 1
        assert {**body, "lastEventSeq": api["lastEventSeq"]} == api, \
            f"webhook body differs from GET /v1/jobs/{job.id}:\n{body}\n{api}"
        # A watch from the start gets the snapshot, the terminal one, alone.
        events = ri.watch(srv.stub, job.id, after_seq=0)
        assert len(events) == 1 and ri.is_terminal(events[0])
        # One event made the job terminal; the one after it tells the delivery, in the same status.
        stored = ri.psql_value(srv.db_url, "SELECT string_agg(status || ':' || dead_lettered || ':' || "
                                           "(message LIKE 'webhook delivered to %'), ',' ORDER BY seq) "
                                           f"FROM job_events WHERE job_id = '{job.id}'").split(",")
        end = stored[-1].split(":")[0] + ":" + stored[-1].split(":")[1]
        assert stored[-1] == end + ":true" and stored[-2] == end + ":false", stored
        assert sum(1 for e in stored if e.startswith(end)) == 2, stored
    # A job without a webhook_url makes no delivery; the failed attempts that were retried made none.
    assert deliveries(srv, plain.id) == []
    assert ri.psql_value(srv.db_url, f"SELECT count(*) FROM webhook_deliveries WHERE job_id = '{failing.id}'") == "1"
    m = ri.scrape(srv)
    assert m.get(("reel_webhook_deliveries_total", frozenset({("outcome", "delivered")})), 0) >= 3
    ri.wait_for("pending gauge at 0", lambda: ri.scrape(srv).get(("reel_webhook_deliveries_pending", frozenset())) == 0,
                timeout=15)


def test_a_failed_attempt_is_retried_with_the_same_delivery_id(reeld_factory, receiver):
    srv = hook_reeld(reeld_factory, "hooks-retry", "--webhook-secret", SECRET, "--webhook-allow-private")
    job = srv.stub.CreateJob(ri.create_request(ri.unique("hook-retry"), webhook_url=receiver.url("flaky")),
                             timeout=ri.DEFAULT_TIMEOUT)
    first, second = receiver.wait(job.webhook_url, n=2)
    assert first["headers"]["reel-delivery-id"] == second["headers"]["reel-delivery-id"]
    assert first["body"] == second["body"]
    assert verify(first, SECRET) and verify(second, SECRET)
    # --retry-base-ms 100: the retry waits 50–100 ms (jitter), not the default seconds.
    assert 0.04 <= second["at"] - first["at"] < 5
    d = wait_delivery_state(srv, job.id, "DELIVERED")
    assert d["attempts"] == 2 and d["lastStatus"] == 200
    time.sleep(0.5)
    assert len(receiver.for_path(job.webhook_url)) == 2, "delivered once, then never again"
    m = ri.scrape(srv)
    assert m.get(("reel_webhook_deliveries_total", frozenset({("outcome", "retry")})), 0) >= 1


def test_a_tenant_signs_with_its_own_secret_under_auth(reeld_factory, receiver):
    srv = hook_reeld(reeld_factory, "hooks-auth", "--auth", "--admin-key", ADMIN, "--webhook-secret", SECRET,
                     "--webhook-allow-private")
    from test_auth import bearer, new_key
    first = new_key(srv, "acme")
    tenant_secret = first.get("webhookSecret")
    assert tenant_secret and tenant_secret != SECRET, f"the tenant's first key shows its webhook secret: {first}"
    again = new_key(srv, "acme")
    assert "webhookSecret" not in again, "the webhook secret is shown once"
    stored = ri.psql_value(srv.db_url, "SELECT webhook_secret FROM tenants WHERE tenant_id = 'acme'")
    assert stored == tenant_secret

    job = srv.stub.CreateJob(ri.create_request("u1", webhook_url=receiver.url("ok")), metadata=bearer(first["secret"]),
                             timeout=ri.DEFAULT_TIMEOUT)
    (req,) = receiver.wait(job.webhook_url)
    assert verify(req, tenant_secret) and not verify(req, SECRET)
    assert json.loads(req["body"])["id"] == job.id
    assert wait_delivery_state(srv, job.id, "DELIVERED", key=first["secret"])["attempts"] == 1
    # Another tenant can't see the deliveries of acme's job.
    other = new_key(srv, "globex")
    assert web.call(srv.http_url, "GET", f"/v1/jobs/{job.id}/webhooks", headers=web.auth(other["secret"])).status == 404

    # The admin tenant has no secret of its own: --webhook-secret signs.
    job = srv.stub.CreateJob(ri.create_request("u2", webhook_url=receiver.url("ok")), metadata=bearer(ADMIN),
                             timeout=ri.DEFAULT_TIMEOUT)
    (req,) = receiver.wait(job.webhook_url)
    assert verify(req, SECRET) and not verify(req, tenant_secret)


def test_bad_webhook_urls_are_invalid_and_a_name_resolving_to_loopback_is_refused_at_delivery(reeld_factory, receiver):
    host = "hooks.example.test"
    srv = hook_reeld(reeld_factory, "hooks-private", "--webhook-secret", SECRET,
                     env={"REEL_TEST_WEBHOOK_RESOLVE": f"{host}:{receiver.port}:127.0.0.1"})
    user = ri.unique("hook-bad")
    for url in ("ftp://example.com/x", "example.com/hook", "http://127.0.0.1:9/x", "http://10.1.2.3/x", "http://[::1]/x",
                "http://localhost./x", "http://169.254.169.254/latest"):
        err = ri.rpc_error(srv.stub.CreateJob, ri.create_request(user, webhook_url=url), timeout=ri.DEFAULT_TIMEOUT)
        ri.assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, mentions="webhook_url", what=url)
    r = web.call(srv.http_url, "POST", "/v1/jobs", {"userId": user, "sceneId": "s", "type": "JOB_TYPE_SCENE_CREATION",
                                                    "inputText": "x", "webhookUrl": "http://192.168.1.1/x"})
    assert r.status == 400 and "webhook_url" in r.body.decode()

    # A host name passes create; it resolves to 127.0.0.1, which is refused on the address
    # connected to, before anything is sent, and that delivery fails for good.
    job = srv.stub.CreateJob(ri.create_request(user, webhook_url=receiver.url("ok", host=host)), timeout=ri.DEFAULT_TIMEOUT)
    ri.wait_for_job(srv.stub, job.id)
    d = wait_delivery_state(srv, job.id, "FAILED")
    assert d["attempts"] == 1 and "127.0.0.1" in d["lastError"], d
    time.sleep(0.5)
    assert receiver.for_path(job.webhook_url) == [], "nothing reaches a refused address"
    m = ri.scrape(srv)
    assert m.get(("reel_webhook_deliveries_total", frozenset({("outcome", "failed")})), 0) == 1
    # One event tells it, failed for good, after the terminal one (a replay after it).
    ended = job_at_last_event(srv, job.id)
    (ev,) = ri.watch(srv.stub, job.id, after_seq=ended.last_event_seq - 1)
    assert ev.seq == ended.last_event_seq and ev.status == pb.JOB_STATUS_FINAL_READY
    path = job.webhook_url.split("?")[0]
    assert ev.message.startswith(f"webhook delivery to {path} failed for good: ") and "127.0.0.1" in ev.message, ev.message
    assert ev.message.endswith(f"(attempt 1, delivery {d['id']})"), ev.message
    events = history(srv, job.id)
    assert [e["seq"] for e in events] == list(range(1, ended.last_event_seq + 1))
    assert [e["message"] for e in events if e["message"].startswith("webhook ")] == [ev.message]


def test_a_delivery_survives_a_sigkill_after_the_job_ended(reeld_factory, receiver):
    srv = hook_reeld(reeld_factory, "hooks-crash", "--webhook-secret", SECRET, "--webhook-allow-private")
    job = srv.stub.CreateJob(ri.create_request(ri.unique("hook-crash"), webhook_url=receiver.url("down")),
                             timeout=ri.DEFAULT_TIMEOUT)
    ri.wait_for_job(srv.stub, job.id)
    # The receiver is down: the job has ended, its delivery is committed but not delivered.
    refused = receiver.wait(job.webhook_url)
    srv.kill()
    delivery_id = refused[0]["headers"]["reel-delivery-id"]
    assert ri.psql_value(srv.db_url, f"SELECT state FROM webhook_deliveries WHERE job_id = '{job.id}'") == "pending"
    receiver.down = False
    srv.start()
    wait_delivery_state(srv, job.id, "DELIVERED")
    ok = receiver.for_path(job.webhook_url)[-1]
    assert ok["headers"]["reel-delivery-id"] == delivery_id, "the same delivery, not a new one"
    assert verify(ok, SECRET)
    assert json.loads(ok["body"])["status"] == "JOB_STATUS_FINAL_READY"
    assert ri.psql_value(srv.db_url, f"SELECT count(*) FROM webhook_deliveries WHERE job_id = '{job.id}'") == "1"


def test_each_delivery_outcome_is_an_event_of_the_job_after_its_end(reeld_factory, receiver):
    """A first attempt answered 500, then a 200: two events after the terminal one, dense seq,
    the job's status kept — seen by a replay after the terminal event (gRPC and HTTP SSE), in
    the HTTP history, and by `reelctl get`; a replay from before the end still ends at it."""
    srv = hook_reeld(reeld_factory, "hooks-events", "--webhook-secret", SECRET, "--webhook-allow-private")
    job = srv.stub.CreateJob(ri.create_request(ri.unique("hook-ev"), webhook_url=receiver.url("flaky")),
                             timeout=ri.DEFAULT_TIMEOUT)
    d = wait_delivery_state(srv, job.id, "DELIVERED")
    assert d["attempts"] == 2
    got = job_at_last_event(srv, job.id)
    assert got.status == pb.JOB_STATUS_FINAL_READY
    events = history(srv, job.id)
    assert [e["seq"] for e in events] == list(range(1, got.last_event_seq + 1)), "seq stays dense"
    end = next(e["seq"] for e in events if e["status"] == "JOB_STATUS_FINAL_READY")
    assert got.last_event_seq == end + 2

    failed, delivered = ri.watch(srv.stub, job.id, after_seq=end)
    assert (failed.seq, delivered.seq) == (end + 1, end + 2)
    for e in (failed, delivered):
        assert e.status == pb.JOB_STATUS_FINAL_READY and e.stage == got.stage and e.progress == 100
    assert failed.message.startswith(f"webhook delivery to {job.webhook_url} failed: HTTP 500")
    assert f"(attempt 1, delivery {d['id']}); next attempt at 20" in failed.message, failed.message
    assert failed.message.endswith("Z")
    assert delivered.message == f"webhook delivered to {job.webhook_url}: HTTP 200 (attempt 2, delivery {d['id']})"
    assert [e["message"] for e in events[end:]] == [failed.message, delivered.message]
    # A replay from before the end stops at the terminal event, as ever (DESIGN §2).
    before = ri.watch(srv.stub, job.id, after_seq=end - 1)
    assert [e.seq for e in before] == [end]
    # Past the last event of a finished job: OK at once.
    assert ri.watch(srv.stub, job.id, after_seq=got.last_event_seq) == []
    # The HTTP events view (SSE) after the terminal event sends the same two, then ends.
    status, sse = web.sse_events(srv.http_url, f"/v1/jobs/{job.id}/events?after_seq={end}")
    assert status == 200, sse
    assert [e["data"]["message"] for e in sse if "data" in e] == [failed.message, delivered.message]

    # The outcomes count once each.
    m = ri.scrape(srv)
    assert m.get(("reel_webhook_deliveries_total", frozenset({("outcome", "retry")})), 0) == 1
    assert m.get(("reel_webhook_deliveries_total", frozenset({("outcome", "delivered")})), 0) == 1

    # reelctl get shows them, in text and in JSON.
    import os
    import subprocess
    reelctl = os.path.join(os.environ["REEL_BIN_DIR"], "reelctl")
    text = subprocess.run([reelctl, "--address", srv.target, "get", job.id], capture_output=True, text=True, timeout=30)
    assert text.returncode == 0, text.stderr
    assert f"webhook: {job.webhook_url}" in " ".join(text.stdout.split()), text.stdout
    lines = [l for l in text.stdout.splitlines() if l.startswith("delivery:")]
    assert len(lines) == 2 and lines[0].endswith(failed.message) and lines[1].endswith(delivered.message), text.stdout
    assert f"#{end + 1} " in lines[0] and f"#{end + 2} " in lines[1]
    out = subprocess.run([reelctl, "--address", srv.target, "--json", "get", job.id], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["id"] == job.id and doc["lastEventSeq"] == got.last_event_seq
    assert [(e["seq"], e["message"]) for e in doc["webhookEvents"]] == [(end + 1, failed.message), (end + 2, delivered.message)]


def test_a_delivery_of_an_end_that_retryjob_undid_is_a_live_event_in_the_jobs_new_state(reeld_factory, receiver):
    """A job fails for good; its delivery keeps failing (503); RetryJob queues it again on a reeld
    without workers (so it stays queued). Each later attempt is an event of the queued job that a
    live watcher gets, in order, without its stream ending; the watch ends at the job's next end."""
    first = hook_reeld(reeld_factory, "hooks-undone-a", "--webhook-secret", SECRET, "--webhook-allow-private")
    job = first.stub.CreateJob(ri.create_request(ri.unique("hook-undone"), webhook_url=receiver.url("down"), max_retries=1,
                                                 config=pb.JobConfig(model="simulated-failure")), timeout=ri.DEFAULT_TIMEOUT)
    ri.wait_for_job(first.stub, job.id, want=(pb.JOB_STATUS_FAILED,), timeout=60)
    ri.wait_for(f"{job.id} dead-lettered", lambda: first.stub.GetJob(pb.GetJobRequest(id=job.id),
                                                                     timeout=ri.DEFAULT_TIMEOUT).dead_lettered)
    receiver.wait(job.webhook_url)
    first.kill()
    # The killed reeld's claim (if it was mid-attempt) lapses: made due at once here.
    ri.psql_value(first.db_url, "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE state = 'pending' RETURNING 1")
    srv = hook_reeld(reeld_factory, "hooks-undone-b", "--webhook-secret", SECRET, "--webhook-allow-private",
                     db_url=first.db_url, workers=0)
    retried = srv.stub.RetryJob(pb.RetryJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    assert retried.status == pb.JOB_STATUS_QUEUED and not retried.dead_lettered
    watcher = ri.Watcher(srv.stub, job.id)
    watcher.start()
    assert watcher.first_event.wait(10)

    def seen(prefix: str):
        return next((e for e in watcher.events if e.message.startswith(prefix)), None)
    failing = ri.wait_for("a failed attempt seen live", lambda: seen("webhook delivery to "), timeout=30)
    assert failing.status == pb.JOB_STATUS_QUEUED and not failing.dead_lettered, failing
    assert "HTTP 503" in failing.message and "next attempt at" in failing.message
    receiver.down = False
    delivered = ri.wait_for("the delivery seen live", lambda: seen("webhook delivered to "), timeout=30)
    assert delivered.status == pb.JOB_STATUS_QUEUED and delivered.message.startswith(f"webhook delivered to {job.webhook_url}: HTTP 200")
    assert watcher.is_alive(), "an event of a delivery ends no watch"
    # Still the queued job it was made: claimable, one delivery (of the end RetryJob undid).
    got = srv.stub.GetJob(pb.GetJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    assert got.status == pb.JOB_STATUS_QUEUED and not got.dead_lettered
    assert ri.psql_value(srv.db_url, f"SELECT count(*) FROM job_queue WHERE job_id = '{job.id}'") == "1"
    assert len(deliveries(srv, job.id)) == 1

    srv.stub.CancelJob(pb.CancelJobRequest(id=job.id, reason="test"), timeout=ri.DEFAULT_TIMEOUT)
    events = watcher.finish()
    assert watcher.error is None, watcher.error
    seqs = [e.seq for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"dense and in order: {seqs}"
    assert events[-1].status == pb.JOB_STATUS_CANCELLED and not events[-1].message.startswith("webhook")
    # The cancel is an end of its own: a second delivery, told after it.
    ri.wait_for("the cancel delivered", lambda: (lambda d: len(d) == 2 and d[1]["state"] == "DELIVERED")(deliveries(srv, job.id)))
    (after,) = ri.watch(srv.stub, job.id, after_seq=events[-1].seq)
    assert after.status == pb.JOB_STATUS_CANCELLED and after.message.startswith("webhook delivered to ")
