"""External workers over reel.v1.WorkerService (issue 9; DESIGN §3–§5).

A worker connects (`Connect`, a server stream of assignments), heartbeats its leases, reports
progress through the transition table and ends each job with `CompleteJob` or `FailJob`.
These tests run `reeld --workers 0` (a pure coordinator) or `--workers 1` next to workers
written three ways: the SDK in sdk/python/reel_worker (in this process), the example worker
sdk/python/examples/pipeline_worker.py (a subprocess speaking Kling's published API to the
strict fake in Tests/fake_kling, so that it can be SIGKILLed), and `RawWorker` below on the
bare stubs, which records exactly when each assignment arrives and sends precisely the calls
a check needs.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid

import grpc
import pytest

import reel_interop as ri
from reel_interop import pb

sys.path.insert(0, str(ri.REPO_ROOT / "sdk" / "python"))
import reel_worker  # noqa: E402  (generates reel.v1.worker_pb2 next to the suite's jobs_pb2)
from reel_worker import wpb, wpb_grpc  # noqa: E402

EXAMPLE = ri.REPO_ROOT / "sdk" / "python" / "examples" / "pipeline_worker.py"
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT
T = ri.DEFAULT_TIMEOUT
S = pb

WALK = [(S.JOB_STATUS_SCRIPT_READY, S.STAGE_SCRIPT_EXPANSION, 25),
        (S.JOB_STATUS_CONTINUITY_CHECKED, S.STAGE_CONTINUITY_VALIDATION, 35),
        (S.JOB_STATUS_PREVIEW_READY, S.STAGE_VIDEO_GENERATION, 85)]


# --------------------------------------------------------------------------- helpers


class RawWorker:
    """A worker on the bare generated stubs. A thread reads the Connect stream; every
    assignment is recorded with its arrival time and handed to `on_assignment` (if given)
    or queued for `next()`."""

    def __init__(self, srv, worker_id: str, slots: int = 1, job_types=(), on_assignment=None):
        self.worker_id, self.slots = worker_id, slots
        self.stub = wpb_grpc.WorkerServiceStub(srv.channel)
        self.received: list[tuple[float, object]] = []  # (monotonic time, WorkerAssignment)
        self.queue: queue.Queue = queue.Queue()
        self.error: grpc.RpcError | None = None
        self.on_assignment = on_assignment
        self.call = self.stub.Connect(wpb.ConnectRequest(
            worker_id=worker_id, job_types=list(job_types), providers=["test"], slots=slots))
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for a in self.call:
                self.received.append((time.monotonic(), a))
                if self.on_assignment is not None:
                    self.on_assignment(self, a)
                else:
                    self.queue.put(a)
        except grpc.RpcError as e:
            self.error = e

    def next(self, timeout: float = 15.0):
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            err = f"; stream ended {self.error.code().name}: {self.error.details()}" if self.error else ""
            raise AssertionError(f"worker {self.worker_id}: no assignment within {timeout}s{err}")

    def assert_nothing(self, seconds: float):
        try:
            a = self.queue.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError(f"worker {self.worker_id} got an unexpected assignment: "
                             f"{ri.describe_job(a.job)}")

    def close(self):
        self.call.cancel()
        self.thread.join(5)

    # -- calls

    def report(self, job_id, status, stage, progress, message="", **artifacts):
        return self.stub.ReportProgress(wpb.ReportProgressRequest(
            worker_id=self.worker_id, job_id=job_id, status=status, stage=stage,
            progress=progress, message=message,
            artifacts=pb.Artifacts(**artifacts) if artifacts else None), timeout=T)

    def walk_to_preview(self, job_id):
        job = None
        for status, stage, progress in WALK:
            job = self.report(job_id, status, stage, progress, f"{self.worker_id}: {ri.status_name(status)}")
        return job

    def complete(self, job_id, video_url=None, duration=3.5):
        return self.stub.CompleteJob(wpb.CompleteJobRequest(
            worker_id=self.worker_id, job_id=job_id,
            video_url=video_url or f"https://cdn.example/{job_id}.mp4",
            thumbnail_url=f"https://cdn.example/{job_id}.jpg", duration_seconds=duration), timeout=T)

    def fail(self, job_id, code="TEST_FAILURE", message="boom", retryable=True):
        return self.stub.FailJob(wpb.FailJobRequest(
            worker_id=self.worker_id, job_id=job_id, code=code, message=message,
            retryable=retryable), timeout=T)

    def heartbeat(self, *job_ids):
        return self.stub.Heartbeat(wpb.HeartbeatRequest(worker_id=self.worker_id,
                                                        job_ids=list(job_ids)), timeout=T)


def coordinator(reeld_factory, name, workers=0, lease_seconds=3, sim_stage_ms=50):
    """reeld with --workers 0 (or N): fast retries, so requeued jobs come back at once."""
    return reeld_factory(name, workers=workers, sim_stage_ms=sim_stage_ms,
                         lease_seconds=lease_seconds, extra_args=("--retry-base-ms", "50"))


def create(srv, user, n=1, **fields):
    return [srv.stub.CreateJob(ri.create_request(user, text=f"scene {i} {uuid.uuid4().hex[:6]}",
                                                 **fields), timeout=T) for i in range(n)]


def get(srv, job_id):
    return srv.stub.GetJob(pb.GetJobRequest(id=job_id), timeout=T)


def state(job):
    """What a refused call must not change."""
    return (job.status, job.stage, job.progress, job.message, job.last_event_seq, job.worker_id,
            job.retry_count, job.artifacts.SerializeToString(), job.result.SerializeToString())


def history(srv, job_id):
    return ri.watch(srv.stub, job_id, after_seq=1, timeout=30)


def final_ready_events(srv, job_id) -> int:
    return int(ri.psql_value(srv.db_url, f"SELECT count(*) FROM job_events WHERE job_id = '{job_id}' "
                                         "AND status = 'final_ready'"))


def segments(srv, job_id) -> int:
    return int(ri.psql_value(srv.db_url, f"SELECT count(*) FROM segments WHERE job_id = '{job_id}'"))


def quick_handler(hold: float = 0.0, seen=None):
    """An SDK handler walking the statuses with recognisable messages."""
    def handle(job, ctx):
        if seen is not None:
            seen.append(job.id)
        ctx.report("SCRIPT_READY", "SCRIPT_EXPANSION", 25, f"{ctx.worker.worker_id} wrote the script",
                   expanded_script=f"script for {job.id}")
        ctx.report("CONTINUITY_CHECKED", "CONTINUITY_VALIDATION", 35, f"{ctx.worker.worker_id} checked")
        if hold and ctx.wait(hold):
            return None
        ctx.report("PREVIEW_READY", "VIDEO_GENERATION", 85, f"{ctx.worker.worker_id} has a preview",
                   preview_video_url=f"https://cdn.example/{job.id}-preview.mp4")
        return reel_worker.Result(f"https://cdn.example/{job.id}.mp4",
                                  f"https://cdn.example/{job.id}.jpg", 4.5)
    return handle


@pytest.fixture
def workers():
    """SDK workers and worker subprocesses started by a test, stopped at its end."""
    started = []
    yield started
    for w in started:
        if isinstance(w, subprocess.Popen):
            if w.poll() is None:
                w.kill()
            w.wait()
        elif isinstance(w, RawWorker):
            w.close()
        else:
            w.stop(drain=False, timeout=10)


def sdk_worker(workers, srv, worker_id, handler, **kw):
    w = reel_worker.Worker(srv.target, worker_id, **kw)
    w.handler()(handler)
    workers.append(w.start())
    return w


def example_worker(workers, srv, fake_kling, worker_id, logdir, slots=1, key_args=None):
    """The example worker against the fake Kling. Its keys come from the environment
    (KLING_ACCESS_KEY, KLING_SECRET_KEY) unless `key_args` gives --access-key/--secret-key."""
    log = open(logdir / f"worker-{worker_id}.log", "ab")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    if key_args is None:
        env.update(KLING_ACCESS_KEY=fake_kling.access_key, KLING_SECRET_KEY=fake_kling.secret_key)
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--address", srv.target, "--provider-url", fake_kling.url,
         "--worker-id", worker_id, "--slots", str(slots), "--poll-interval", "0.05",
         "--retry-base", "0.05", *(key_args or ())],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    proc.log_path = logdir / f"worker-{worker_id}.log"
    workers.append(proc)
    return proc


def kling_stats(fake_kling) -> dict:
    """The fake's stats without the bulky per-task prompts: for failure messages."""
    st = fake_kling.stats()
    st["tasks"] = [{k: t[k] for k in ("task_id", "external_task_id", "status")} for t in st["tasks"]]
    return st


# --------------------------------------------------------------------------- end to end


def test_sdk_worker_completes_jobs_end_to_end(reeld_factory, workers):
    srv = coordinator(reeld_factory, "ext-e2e")
    user = ri.unique("ext")
    jobs = create(srv, user, 3)
    watchers = [ri.Watcher(srv.stub, j.id, timeout=60) for j in jobs]
    for w in watchers:
        w.start()
        assert w.first_event.wait(10)
    time.sleep(0.5)
    for j in jobs:  # a pure coordinator runs nothing by itself
        assert get(srv, j.id).status == S.JOB_STATUS_QUEUED, ri.describe_job(get(srv, j.id))

    sdk_worker(workers, srv, "py-e2e", quick_handler(), slots=2)
    for j, w in zip(jobs, watchers):
        final = ri.wait_for_job(srv.stub, j.id, timeout=30)
        events = w.finish(10)
        assert w.error is None, f"{w.error.code().name}: {w.error.details()}"
        said = [(e.status, e.message) for e in events]
        for status, message in [(S.JOB_STATUS_SCRIPT_READY, "py-e2e wrote the script"),
                                (S.JOB_STATUS_CONTINUITY_CHECKED, "py-e2e checked"),
                                (S.JOB_STATUS_PREVIEW_READY, "py-e2e has a preview")]:
            assert (status, message) in said, [ri.describe_event(e) for e in events]
        assert events[-1].status == S.JOB_STATUS_FINAL_READY
        assert [e.seq for e in events[1:]] == list(range(events[0].seq + 1, events[-1].seq + 1))
        assert final.worker_id == "py-e2e", ri.describe_job(final)
        assert final.result.video_url == f"https://cdn.example/{j.id}.mp4"
        assert final.result.thumbnail_url == f"https://cdn.example/{j.id}.jpg"
        assert final.result.duration_seconds == pytest.approx(4.5)
        assert final.result.segment_id, ri.describe_job(final)
        assert final.artifacts.expanded_script == f"script for {j.id}", "checkpoint not saved"
        assert final.artifacts.preview_video_url == f"https://cdn.example/{j.id}-preview.mp4"
        assert final.progress == 100 and final.stage == S.STAGE_COMPLETED
        assert segments(srv, j.id) == 1 and final_ready_events(srv, j.id) == 1


def test_example_pipeline_worker_runs_the_stages_against_the_fake_kling(
        reeld_factory, workers, fake_kling, tmp_path):
    srv = coordinator(reeld_factory, "ext-example")
    jobs = create(srv, ri.unique("example"), 2, config=pb.JobConfig(target_duration_seconds=4))
    proc = example_worker(workers, srv, fake_kling, "example-1", tmp_path, slots=2)
    by_task, request_ids = {}, {}
    for j in jobs:
        try:
            final = ri.wait_for_job(srv.stub, j.id, timeout=60)
        except AssertionError:
            raise AssertionError(f"{ri.stored_history(srv.db_url, j.id)}\nworker log:\n"
                                 f"{proc.log_path.read_text()[-3000:]}")
        events = history(srv, j.id)
        d = f"{[ri.describe_event(e) for e in events]}\n{kling_stats(fake_kling)}"
        statuses = [e.status for e in events]
        for s in (S.JOB_STATUS_SCRIPT_READY, S.JOB_STATUS_CONTINUITY_CHECKED,
                  S.JOB_STATUS_PREVIEW_READY, S.JOB_STATUS_FINAL_READY):
            assert s in statuses, d
        progress = [e.progress for e in events]
        assert progress == sorted(progress), f"progress went backwards: {progress}"
        assert any(e.stage == S.STAGE_VIDEO_GENERATION and 40 < e.progress < 85 for e in events), d
        assert any(e.stage == S.STAGE_UPLOAD and e.progress == 95 for e in events), d
        task = final.artifacts.provider_job_id
        assert task.isdigit(), f"Kling's task ids are numeric: {ri.describe_job(final)}"
        said = [e.message for e in events if e.message.startswith(f"submitted to kling: task {task} (request_id ")]
        assert len(said) == 1, d
        request_ids[j.id] = (said[0][len(f"submitted to kling: task {task} (request_id "):-1],
                             final.artifacts.provider_request_id)
        assert final.worker_id == "example-1"
        assert final.result.video_url == f"{fake_kling.url}/results/{task}.mp4", ri.describe_job(final)
        assert final.result.duration_seconds == pytest.approx(5.1), (
            f"the duration Kling reported (the fake's \"5.1\" for a 5 s task): {ri.describe_job(final)}")
        assert final.artifacts.expanded_script and final.artifacts.validation_result
        assert final.artifacts.hls_playlist_url.endswith(".m3u8")
        by_task[task] = j
    stats = fake_kling.stats()
    d = f"{kling_stats(fake_kling)}\nworker log:\n{proc.log_path.read_text()[-2000:]}"
    assert stats["creates_ok"] == 2, d
    assert stats["creates_by_external_id"] == {f"reel-{j.id}-1": 1 for j in jobs}, d
    assert stats["auth_failures"] == {} and stats["tokens_seen"] >= 1, d
    assert stats["refused"] == {}, d
    for t in stats["tasks"]:
        j = by_task.get(t["task_id"])
        assert j is not None, f"a task no job names: {t}\n{d}"
        assert t["external_task_id"] == f"reel-{j.id}-1", d
        assert t["endpoint"] == "text2video" and t["status"] == "succeed", d
        # DESIGN §5's fields: the model always sent, duration a string, std for standard quality.
        assert (t["model_name"], t["model_name_sent"], t["duration"], t["mode"], t["aspect_ratio"]) == (
            "kling-v2-5-turbo", True, "5", "std", "16:9"), t
        assert j.input_text.strip() in t["prompt"] and len(t["prompt"]) <= 2500, t

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, proc.log_path.read_text()[-2000:]
    # Last, so that the behaviour above is checked whatever this says: the request_id of the
    # submit's answer, reported with provider_job_id, is kept in the job's artifacts.
    for job_id, (said, saved) in request_ids.items():
        assert said and saved == said, (
            f"job {job_id}: the worker reported provider_request_id {said!r}, the job has {saved!r}")


def test_example_pipeline_worker_classifies_klings_answers(reeld_factory, workers, fake_kling, tmp_path):
    """Kling's codes, as DESIGN §5 reads them, in the example worker: content policy (1301)
    dead-letters at once with Kling's message; rate limit (1302), concurrency (1303) and a
    server error (5000) are waited out in the same attempt; a wrong secret key (1002, after
    one renewal) is PROVIDER_AUTH, not retried. Keys here come from --access-key/--secret-key."""
    srv = coordinator(reeld_factory, "ext-example-codes")
    user = ri.unique("codes")
    proc = example_worker(workers, srv, fake_kling, "codes-1", tmp_path, slots=1,
                          key_args=("--access-key", fake_kling.access_key,
                                    "--secret-key", fake_kling.secret_key))
    log = lambda: proc.log_path.read_text()[-3000:]  # noqa: E731

    bad = srv.stub.CreateJob(ri.create_request(user, text="FORBIDDEN_CONTENT at the harbour", max_retries=2),
                             timeout=T)
    dead = ri.wait_for_job(srv.stub, bad.id, want=(S.JOB_STATUS_FAILED,), timeout=30)
    d = f"{ri.stored_history(srv.db_url, bad.id)}\n{kling_stats(fake_kling)}\n{log()}"
    assert dead.dead_lettered and dead.retry_count == 0, d
    assert (dead.error.code, dead.error.message) == ("CONTENT_POLICY", "Failure to pass the risk control system"), d
    assert fake_kling.stats()["refused"] == {"1301": 1} and fake_kling.stats()["creates_ok"] == 0, d

    fake_kling.control(error_next=[1302, 5000, 1303])
    ok, = create(srv, user, max_retries=2)
    final = ri.wait_for_job(srv.stub, ok.id, timeout=60)
    st = fake_kling.stats()
    d = f"{ri.stored_history(srv.db_url, ok.id)}\n{kling_stats(fake_kling)}\n{log()}"
    assert final.retry_count == 0, f"a throttle or one server error cost an attempt\n{d}"
    assert st["refused"] == {"1301": 1, "1302": 1, "5000": 1, "1303": 1}, d
    assert st["creates_ok"] == 1 and st["creates_by_external_id"] == {
        f"reel-{bad.id}-1": 1, f"reel-{ok.id}-1": 4}, d
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, log()

    wrong = example_worker(workers, srv, fake_kling, "codes-2", tmp_path, slots=1,
                           key_args=("--access-key", fake_kling.access_key, "--secret-key", "not-the-secret"))
    denied, = create(srv, user, max_retries=2)
    dead = ri.wait_for_job(srv.stub, denied.id, want=(S.JOB_STATUS_FAILED,), timeout=30)
    st = fake_kling.stats()
    d = f"{ri.stored_history(srv.db_url, denied.id)}\n{kling_stats(fake_kling)}\n{wrong.log_path.read_text()[-3000:]}"
    assert dead.dead_lettered and dead.retry_count == 0 and dead.error.code == "PROVIDER_AUTH", d
    assert st["auth_failures"] == {"1002": 2}, f"want one renewal, then no retry\n{d}"
    assert st["creates_ok"] == 1, d


def test_sdk_handler_sees_a_cancelled_job_as_lost_and_reports_nothing_more(reeld_factory, workers):
    srv = coordinator(reeld_factory, "ext-cancel", lease_seconds=3)
    job, = create(srv, ri.unique("cancel"))
    seen = {}

    def handler(job, ctx):
        ctx.report("SCRIPT_READY", "SCRIPT_EXPANSION", 25, "working")
        seen["running"] = time.monotonic()
        seen["cancelled"] = ctx.wait(20)  # True once a heartbeat says the lease is gone
        seen["noticed"] = time.monotonic()
        return reel_worker.Result("https://cdn.example/never.mp4")

    sdk_worker(workers, srv, "py-cancel", handler)
    ri.wait_for("the handler to start", lambda: "running" in seen, 15)
    cancelled = srv.stub.CancelJob(pb.CancelJobRequest(id=job.id, reason="test"), timeout=T)
    assert cancelled.status == S.JOB_STATUS_CANCELLED, ri.describe_job(cancelled)
    ri.wait_for("the handler to notice", lambda: "noticed" in seen, 10)
    assert seen["cancelled"], "ctx.wait returned without the job being reported lost"
    time.sleep(0.5)
    after = get(srv, job.id)
    assert state(after) == state(cancelled), (
        f"the worker changed a cancelled job: {ri.describe_job(after)}")


def test_sdk_maps_handler_outcomes_to_fail_job(reeld_factory, workers):
    srv = coordinator(reeld_factory, "ext-outcomes")
    user = ri.unique("outcomes")
    done = quick_handler()

    def handler(job, ctx):
        kind = job.input_text
        if kind == "fatal":
            raise reel_worker.FatalError("the script breaks the bible", "CONTINUITY_VIOLATION")
        if kind == "crash":
            raise ValueError("oops")
        if kind == "skip":  # completes without ever reporting PREVIEW_READY
            return reel_worker.Result("https://cdn.example/skip.mp4")
        if kind == "retry-once" and job.retry_count == 0:
            raise reel_worker.RetryableError("provider busy", "PROVIDER_UNAVAILABLE")
        return done(job, ctx)

    jobs = {kind: srv.stub.CreateJob(ri.create_request(user, text=kind, max_retries=1), timeout=T)
            for kind in ("fatal", "crash", "skip", "retry-once")}
    sdk_worker(workers, srv, "py-outcomes", handler, slots=2)
    dead = pb.JOB_STATUS_FAILED
    fatal = ri.wait_for_job(srv.stub, jobs["fatal"].id, want=(dead,), timeout=30)
    assert fatal.dead_lettered and fatal.retry_count == 0, ri.describe_job(fatal)
    assert (fatal.error.code, fatal.error.message) == ("CONTINUITY_VIOLATION", "the script breaks the bible")

    def dead_lettered(job_id):
        return ri.wait_for(f"{job_id} dead-lettered",
                        lambda: (lambda j: j if j.dead_lettered else None)(get(srv, job_id)), 30)
    crash = dead_lettered(jobs["crash"].id)
    assert crash.retry_count == 1 and crash.error.code == "WORKER_ERROR", ri.describe_job(crash)
    assert "ValueError: oops" in crash.error.message
    skip = dead_lettered(jobs["skip"].id)
    assert skip.retry_count == 0 and skip.error.code == "INVALID_REPORT", ri.describe_job(skip)
    assert segments(srv, jobs["skip"].id) == 0
    again = ri.wait_for_job(srv.stub, jobs["retry-once"].id, timeout=30)
    assert again.retry_count == 1 and again.worker_id == "py-outcomes", ri.describe_job(again)


# --------------------------------------------------------------------------- slots and priority


def test_two_workers_get_assignments_in_priority_order_never_above_their_slots(reeld_factory):
    srv = coordinator(reeld_factory, "ext-slots")
    user = ri.unique("prio")
    # Worst first: each later batch outranks the ones before it (DESIGN §4: premium first,
    # then scene_creation before continuation). One user, so fairness doesn't reorder them.
    classes = [(S.TIER_STANDARD, S.JOB_TYPE_CONTINUATION), (S.TIER_STANDARD, S.JOB_TYPE_SCENE_CREATION),
               (S.TIER_PREMIUM, S.JOB_TYPE_CONTINUATION), (S.TIER_PREMIUM, S.JOB_TYPE_SCENE_CREATION)]
    rank = {}
    for r, (tier, jtype) in enumerate(classes):
        for j in create(srv, user, 4, tier=tier, type=jtype):
            rank[j.id] = len(classes) - 1 - r  # 0 = runs first
    hold = 0.4
    lock = threading.Lock()
    in_flight: dict[str, int] = {}
    peak: dict[str, int] = {}
    over: list[str] = []
    arrivals: dict[str, tuple[float, str]] = {}
    errors: list[str] = []

    def run(w, a):
        try:
            w.walk_to_preview(a.job.id)
            time.sleep(hold)
            with lock:  # the server can't know before CompleteJob is sent: count down first
                in_flight[w.worker_id] -= 1
            w.complete(a.job.id)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{w.worker_id} {a.job.id}: {e!r}")

    def on_assignment(w, a):
        with lock:
            n = in_flight[w.worker_id] = in_flight.get(w.worker_id, 0) + 1
            peak[w.worker_id] = max(peak.get(w.worker_id, 0), n)
            if n > w.slots:
                over.append(f"{w.worker_id} holds {n} jobs with {w.slots} slots")
            if a.job.id in arrivals:
                errors.append(f"job {a.job.id} assigned twice ({arrivals[a.job.id][1]}, {w.worker_id})")
            # When the scheduler claimed it (server clock, immune to this process's jitter).
            arrivals[a.job.id] = (a.job.started_at_unix_ms / 1000.0, w.worker_id)
        if a.job.status != S.JOB_STATUS_PROCESSING or a.job.worker_id != w.worker_id:
            errors.append(f"{w.worker_id} was assigned {ri.describe_job(a.job)} (worker {a.job.worker_id!r})")
        if not a.job.started_at_unix_ms:
            errors.append(f"assignment of {a.job.id} has no started_at_unix_ms")
        if a.lease_seconds != 3 or a.lease_expires_at_unix_ms <= time.time() * 1000:
            errors.append(f"lease of {a.job.id}: {a.lease_seconds} s, expires {a.lease_expires_at_unix_ms}")
        threading.Thread(target=run, args=(w, a), daemon=True).start()

    a = RawWorker(srv, "slots-1", slots=1, on_assignment=on_assignment)
    b = RawWorker(srv, "slots-3", slots=3, on_assignment=on_assignment)
    try:
        for job_id in rank:
            final = ri.wait_for_job(srv.stub, job_id, timeout=60)
            assert final.worker_id == arrivals[job_id][1], ri.describe_job(final)
    finally:
        a.close()
        b.close()
    assert not errors, errors
    assert not over, over
    assert peak == {"slots-1": 1, "slots-3": 3}, f"slots never filled: {peak}"
    # Priority: no job may be claimed clearly after one that ranks below it (the slack covers
    # two workers' claims in one scheduling pass; a job is held for `hold` seconds).
    order = sorted(rank, key=lambda j: arrivals[j][0])
    t0 = arrivals[order[0]][0]
    late = [(rank[k], round(arrivals[k][0] - t0, 2), rank[j], round(arrivals[j][0] - t0, 2))
            for j in rank for k in rank
            if rank[k] < rank[j] and arrivals[k][0] > arrivals[j][0] + hold / 2]
    assert not late, ("better-ranked jobs assigned after worse ones (rank, t) vs (rank, t): "
                      f"{late[:8]}; arrival ranks: {[rank[j] for j in order]}")


# --------------------------------------------------------------------------- leases


def test_sigkilled_worker_job_is_reassigned_after_the_lease_and_completes_once(
        reeld_factory, workers, fake_kling, tmp_path):
    srv = coordinator(reeld_factory, "ext-kill", lease_seconds=2)
    fake_kling.control(stuck=True)  # the Kling task won't finish until we say so
    job, = create(srv, ri.unique("kill"))
    doomed = example_worker(workers, srv, fake_kling, "doomed", tmp_path)

    def submitted():
        j = get(srv, job.id)
        return j if j.artifacts.provider_job_id and j.stage == S.STAGE_VIDEO_GENERATION else None
    mid = ri.wait_for("the Kling task id to be saved", submitted, 30)
    assert mid.worker_id == "doomed" and mid.status == S.JOB_STATUS_CONTINUITY_CHECKED, ri.describe_job(mid)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    killed_at = time.monotonic()
    fake_kling.control(stuck=False)
    assert get(srv, job.id).status not in ri.TERMINAL

    heir = example_worker(workers, srv, fake_kling, "heir", tmp_path)
    final = ri.wait_for_job(srv.stub, job.id, timeout=60)
    took = time.monotonic() - killed_at
    assert final.worker_id == "heir", f"{ri.describe_job(final)}\n{ri.stored_history(srv.db_url, job.id)}"
    assert final.retry_count == 1, f"the lost lease counts as an attempt: {ri.describe_job(final)}"
    task = mid.artifacts.provider_job_id
    assert final.artifacts.provider_job_id == task
    assert final.result.video_url == f"{fake_kling.url}/results/{task}.mp4", ri.describe_job(final)
    assert took < 30, f"re-assignment took {took:.1f}s with a 2 s lease"
    assert final_ready_events(srv, job.id) == 1, ri.stored_history(srv.db_url, job.id)
    assert segments(srv, job.id) == 1
    stats = fake_kling.stats()
    assert stats["creates_ok"] == 1 and stats["creates_by_external_id"] == {f"reel-{job.id}-1": 1}, (
        f"the heir submitted again instead of resuming the saved Kling task: {kling_stats(fake_kling)}\n"
        f"{heir.log_path.read_text()[-2000:]}")
    events = history(srv, job.id)
    claims = [e for e in events if e.status == S.JOB_STATUS_PROCESSING and "claimed by" in e.message]
    assert claims and "heir" in claims[-1].message, [ri.describe_event(e) for e in events]
    assert any(e.status == S.JOB_STATUS_QUEUED for e in events), "no requeue event after the lease"
    assert any(e.message == f"resuming kling task {task}" for e in events), [ri.describe_event(e) for e in events]


def test_stale_worker_is_refused_and_changes_nothing(reeld_factory):
    srv = coordinator(reeld_factory, "ext-stale", lease_seconds=2)
    job, = create(srv, ri.unique("stale"))
    stale = RawWorker(srv, "stale", slots=1)
    a = stale.next()
    assert a.job.id == job.id
    stale.report(job.id, S.JOB_STATUS_SCRIPT_READY, S.STAGE_SCRIPT_EXPANSION, 25, "stale's script",
                 expanded_script="stale script")
    stale.close()  # gone: no more heartbeats; the lease runs out and the job is requeued

    fresh = RawWorker(srv, "fresh", slots=1)
    b = fresh.next(timeout=20)
    assert b.job.id == job.id and b.job.retry_count == 1, ri.describe_job(b.job)
    assert b.job.artifacts.expanded_script == "stale script", "the checkpoint went missing"
    fresh.report(job.id, S.JOB_STATUS_SCRIPT_READY, S.STAGE_SCRIPT_EXPANSION, 25, "fresh's script")
    before = get(srv, job.id)

    refused = [
        ("ReportProgress", lambda: stale.report(job.id, S.JOB_STATUS_CONTINUITY_CHECKED,
                                                S.STAGE_CONTINUITY_VALIDATION, 35, "late",
                                                validation_result='{"stale":true}')),
        ("ReportProgress same status", lambda: stale.report(job.id, S.JOB_STATUS_SCRIPT_READY,
                                                            S.STAGE_SCRIPT_EXPANSION, 30, "late")),
        ("CompleteJob", lambda: stale.complete(job.id, "https://stale.example/x.mp4")),
        ("FailJob", lambda: stale.fail(job.id, retryable=False)),
    ]
    for what, call in refused:
        ri.assert_code(ri.rpc_error(call), PRECONDITION, what=f"stale worker's {what}")
        assert state(get(srv, job.id)) == state(before), f"stale {what} changed the job"
    hb = stale.heartbeat(job.id)
    assert list(hb.lost_job_ids) == [job.id] and not hb.renewed_job_ids, hb
    assert list(fresh.heartbeat(job.id).renewed_job_ids) == [job.id]

    # Still refused once the stale worker is on the preview too (the job is at PREVIEW_READY).
    fresh.report(job.id, S.JOB_STATUS_CONTINUITY_CHECKED, S.STAGE_CONTINUITY_VALIDATION, 35)
    fresh.report(job.id, S.JOB_STATUS_PREVIEW_READY, S.STAGE_UPLOAD, 95)
    before = get(srv, job.id)
    ri.assert_code(ri.rpc_error(stale.complete, job.id), PRECONDITION, what="stale CompleteJob at PREVIEW_READY")
    assert state(get(srv, job.id)) == state(before)

    final = fresh.complete(job.id)
    assert final.status == S.JOB_STATUS_FINAL_READY and final.worker_id == "fresh", ri.describe_job(final)
    assert final.artifacts.validation_result == "", "a refused report's artifacts were saved"
    ri.assert_code(ri.rpc_error(stale.complete, job.id), PRECONDITION, what="stale CompleteJob after final")
    assert final_ready_events(srv, job.id) == 1 and segments(srv, job.id) == 1
    assert state(get(srv, job.id)) == state(final)
    fresh.close()


def test_complete_twice_and_report_rules(reeld_factory):
    srv = coordinator(reeld_factory, "ext-rules")
    job, other = create(srv, ri.unique("rules"), 2)
    w = RawWorker(srv, "rules", slots=2)
    ids = {w.next().job.id, w.next().job.id}
    assert ids == {job.id, other.id}
    start = get(srv, job.id)

    def refused(code, what, call):
        ri.assert_code(ri.rpc_error(call), code, what=what)
        assert state(get(srv, job.id)) == state(start), f"{what} changed the job"

    refused(PRECONDITION, "skipping SCRIPT_READY", lambda: w.report(
        job.id, S.JOB_STATUS_CONTINUITY_CHECKED, S.STAGE_CONTINUITY_VALIDATION, 35))
    refused(PRECONDITION, "CompleteJob while PROCESSING", lambda: w.complete(job.id))
    refused(INVALID, "progress 101", lambda: w.report(job.id, S.JOB_STATUS_PROCESSING,
                                                      S.STAGE_SCRIPT_EXPANSION, 101))
    refused(INVALID, "progress -1", lambda: w.report(job.id, S.JOB_STATUS_PROCESSING,
                                                     S.STAGE_SCRIPT_EXPANSION, -1))
    refused(PRECONDITION, "report by a worker that holds no lease", lambda: w.stub.ReportProgress(
        wpb.ReportProgressRequest(worker_id="intruder", job_id=job.id, status=S.JOB_STATUS_SCRIPT_READY,
                                  stage=S.STAGE_SCRIPT_EXPANSION, progress=25), timeout=T))
    refused(PRECONDITION, "CompleteJob by a worker that holds no lease", lambda: w.stub.CompleteJob(
        wpb.CompleteJobRequest(worker_id="intruder", job_id=job.id, video_url="https://x.example/v.mp4"),
        timeout=T))
    unknown = str(uuid.uuid4())
    ri.assert_code(ri.rpc_error(w.report, unknown, S.JOB_STATUS_SCRIPT_READY, S.STAGE_SCRIPT_EXPANSION, 25),
                   grpc.StatusCode.NOT_FOUND, what="ReportProgress of an unknown job")
    ri.assert_code(ri.rpc_error(w.complete, unknown), grpc.StatusCode.NOT_FOUND,
                   what="CompleteJob of an unknown job")

    same = w.report(job.id, S.JOB_STATUS_PROCESSING, S.STAGE_SCRIPT_EXPANSION, 10, "same status, more progress")
    assert same.progress == 10 and same.last_event_seq == start.last_event_seq + 1, ri.describe_job(same)
    w.walk_to_preview(job.id)
    first = w.complete(job.id)
    assert first.status == S.JOB_STATUS_FINAL_READY and first.result.segment_id, ri.describe_job(first)
    err = ri.rpc_error(w.complete, job.id, "https://cdn.example/second.mp4", 9.0)
    ri.assert_code(err, PRECONDITION, what="second CompleteJob")
    ri.assert_code(ri.rpc_error(w.fail, job.id), PRECONDITION, what="FailJob after FINAL_READY")
    ri.assert_code(ri.rpc_error(w.report, job.id, S.JOB_STATUS_PREVIEW_READY, S.STAGE_UPLOAD, 95),
                   PRECONDITION, what="ReportProgress after FINAL_READY")
    after = get(srv, job.id)
    assert state(after) == state(first), "a refused call after FINAL_READY changed the job"
    assert final_ready_events(srv, job.id) == 1 and segments(srv, job.id) == 1
    w.close()


def test_fail_job_retries_when_retryable_and_dead_letters_when_not(reeld_factory):
    srv = coordinator(reeld_factory, "ext-fail")
    job, = create(srv, ri.unique("fail"), max_retries=3)
    w = RawWorker(srv, "failer", slots=1)
    assert w.next().job.id == job.id
    w.report(job.id, S.JOB_STATUS_SCRIPT_READY, S.STAGE_SCRIPT_EXPANSION, 25, expanded_script="kept")
    failed = w.fail(job.id, code="PROVIDER_FAILED", message="try again", retryable=True)
    # The answer is the job after the failure was recorded: FAILED, or already QUEUED for the
    # retry (FAILED then QUEUED are two events written together).
    assert failed.status in (S.JOB_STATUS_FAILED, S.JOB_STATUS_QUEUED) and not failed.dead_lettered, (
        ri.describe_job(failed))
    assert failed.error.code == "PROVIDER_FAILED" and failed.error.message == "try again"
    assert failed.retry_count == 1, ri.describe_job(failed)

    again = w.next(timeout=20)  # retried (50 ms backoff here) and assigned to the free slot
    assert again.job.id == job.id and again.job.retry_count == 1, ri.describe_job(again.job)
    assert again.job.artifacts.expanded_script == "kept"
    dead = w.fail(job.id, code="CONTINUITY_VIOLATION", message="no way", retryable=False)
    assert dead.status == S.JOB_STATUS_FAILED and dead.dead_lettered, ri.describe_job(dead)
    assert dead.error.code == "CONTINUITY_VIOLATION"
    w.assert_nothing(1.5)
    got = get(srv, job.id)
    assert got.status == S.JOB_STATUS_FAILED and got.dead_lettered, ri.describe_job(got)
    listed = srv.stub.ListJobs(pb.ListJobsRequest(user_id=job.user_id, dead_lettered_only=True), timeout=T)
    assert [j.id for j in listed.jobs] == [job.id]
    ri.assert_code(ri.rpc_error(w.fail, job.id), PRECONDITION, what="FailJob of a dead-lettered job")
    events = history(srv, job.id)
    seen = [(e.status, e.dead_lettered) for e in events if e.status in (S.JOB_STATUS_FAILED, S.JOB_STATUS_QUEUED)]
    assert seen == [(S.JOB_STATUS_FAILED, False), (S.JOB_STATUS_QUEUED, False), (S.JOB_STATUS_FAILED, True)], (
        [ri.describe_event(e) for e in events])
    assert events[-1].status == S.JOB_STATUS_FAILED and events[-1].dead_lettered

    # RetryJob brings it back; the connected worker gets it again.
    srv.stub.RetryJob(pb.RetryJobRequest(id=job.id), timeout=T)
    assert w.next(timeout=20).job.id == job.id
    w.close()


# --------------------------------------------------------------------------- connect rules


def test_connect_validation_and_one_stream_per_worker_id(reeld_factory):
    srv = coordinator(reeld_factory, "ext-connect")
    stub = wpb_grpc.WorkerServiceStub(srv.channel)

    def connect(**kw):
        kw.setdefault("worker_id", ri.unique("w"))
        kw.setdefault("slots", 1)
        return stub.Connect(wpb.ConnectRequest(**kw), timeout=3)

    for slots in (0, -1, 257):
        ri.assert_code(ri.rpc_error(connect, slots=slots), INVALID, what=f"slots={slots}")
    for worker_id in ("", "has space", "x" * 129, "colon:no"):
        ri.assert_code(ri.rpc_error(connect, worker_id=worker_id), INVALID,
                       what=f"worker_id={worker_id!r}")
    with pytest.raises(grpc.RpcError) as bad:  # the SDK gives up on a bad configuration
        reel_worker.Worker(srv.target, "sdk-bad", slots=0).run()
    assert bad.value.code() == INVALID

    first = RawWorker(srv, "dup", slots=1)
    time.sleep(0.3)
    err = ri.rpc_error(connect, worker_id="dup")
    ri.assert_code(err, PRECONDITION, mentions="already connected", what="second Connect as 'dup'")
    assert first.error is None, "the first stream was closed by the refused duplicate"
    job, = create(srv, ri.unique("dup"))
    assert first.next().job.id == job.id, "the first stream stopped receiving"
    first.walk_to_preview(job.id)
    first.complete(job.id)

    # Once the stream is gone the id is free again (a restarted worker reconnects).
    first.close()
    again = None
    deadline = time.monotonic() + 10
    while again is None:
        w = RawWorker(srv, "dup", slots=1)
        w.thread.join(0.5)
        if w.error is None:
            again = w
        elif time.monotonic() > deadline:
            raise AssertionError(f"'dup' can't reconnect 10 s after closing its stream: "
                                 f"{w.error.code().name} {w.error.details()}")
    job2, = create(srv, ri.unique("dup"))
    assert again.next().job.id == job2.id
    again.close()


def test_in_process_and_external_workers_share_the_queue(reeld_factory, workers):
    srv = coordinator(reeld_factory, "ext-mixed", workers=1, sim_stage_ms=100)
    sdk_worker(workers, srv, "py-mixed", quick_handler(hold=0.3), slots=1)
    time.sleep(0.5)  # connected before the jobs exist: both kinds of worker compete for them
    jobs = create(srv, ri.unique("mixed"), 8)
    finals = [ri.wait_for_job(srv.stub, j.id, timeout=60) for j in jobs]
    by = {}
    for f in finals:
        by.setdefault(f.worker_id, []).append(f.id)
        assert segments(srv, f.id) == 1 and final_ready_events(srv, f.id) == 1
    assert "py-mixed" in by, f"the external worker got nothing: {by}"
    assert set(by) - {"py-mixed"}, f"the in-process worker got nothing: {by}"
    assert all(by.values())


def test_a_worker_only_gets_the_job_types_it_serves(reeld_factory):
    srv = coordinator(reeld_factory, "ext-types")
    user = ri.unique("types")
    scene, = create(srv, user, type=S.JOB_TYPE_SCENE_CREATION, tier=S.TIER_PREMIUM)
    w = RawWorker(srv, "continuations", slots=2, job_types=[S.JOB_TYPE_CONTINUATION])
    w.assert_nothing(1.5)
    cont, = create(srv, user, type=S.JOB_TYPE_CONTINUATION)
    got = w.next()
    assert got.job.id == cont.id, ri.describe_job(got.job)
    w.assert_nothing(1.0)
    assert get(srv, scene.id).status == S.JOB_STATUS_QUEUED
    w.close()


def test_one_users_flood_does_not_starve_another_users_job(reeld_factory):
    srv = coordinator(reeld_factory, "ext-fair")
    flood = create(srv, ri.unique("flood"), 6)
    single, = create(srv, ri.unique("single"))
    w = RawWorker(srv, "fair", slots=1)
    order = []
    for _ in range(3):
        a = w.next()
        order.append(a.job.id)
        w.walk_to_preview(a.job.id)
        w.complete(a.job.id)
    assert single.id in order[:2], (
        f"the single user's job was not among the first two assignments: "
        f"{['single' if j == single.id else 'flood' for j in order]}")
    w.close()
    ri.cancel_quietly(srv.stub, [j.id for j in flood])


def test_a_reconnected_workers_held_jobs_still_count_against_its_slots(reeld_factory):
    srv = coordinator(reeld_factory, "ext-reconnect")
    user = ri.unique("reconnect")
    held, = create(srv, user)
    w = RawWorker(srv, "rc", slots=1)
    assert w.next().job.id == held.id
    w.report(held.id, S.JOB_STATUS_SCRIPT_READY, S.STAGE_SCRIPT_EXPANSION, 25)
    w.close()  # the stream drops; the worker keeps working on `held` and heartbeats it

    again = None
    deadline = time.monotonic() + 10
    while again is None:
        again = RawWorker(srv, "rc", slots=1)
        again.thread.join(0.5)
        if again.error is not None:
            assert time.monotonic() < deadline, f"can't reconnect: {again.error.details()}"
            again = None
    waiting, = create(srv, user)
    for _ in range(3):  # 1.5 s, heartbeating `held` (lease 3 s)
        assert list(again.heartbeat(held.id).renewed_job_ids) == [held.id]
        try:
            extra = again.queue.get(timeout=0.5)
        except queue.Empty:
            continue
        raise AssertionError(f"worker 'rc' (1 slot) still holds {held.id} after reconnecting, yet was "
                             f"assigned {extra.job.id} as well")
    again.walk_to_preview(held.id)  # finished from the new connection: that frees the slot
    assert again.complete(held.id).status == S.JOB_STATUS_FINAL_READY
    assert again.next().job.id == waiting.id
    again.close()


def test_sdk_worker_reconnects_after_reeld_restarts(reeld_factory, workers):
    srv = coordinator(reeld_factory, "ext-restart")
    user = ri.unique("restart")
    sdk_worker(workers, srv, "py-restart", quick_handler(), slots=1,
               reconnect_backoff=(0.1, 1.0))
    first, = create(srv, user)
    ri.wait_for_job(srv.stub, first.id, timeout=30)
    rc = srv.stop(timeout=15)
    assert rc == 0, f"reeld exited {rc} on SIGTERM with a worker stream open\n{srv.log_tail(30)}"
    time.sleep(1.0)
    srv.start()
    second, = create(srv, user)
    final = ri.wait_for_job(srv.stub, second.id, timeout=30)
    assert final.worker_id == "py-restart"


def test_a_cancelled_job_stops_counting_against_the_workers_slots(reeld_factory):
    srv = coordinator(reeld_factory, "ext-cancel-slot", lease_seconds=2)
    user = ri.unique("cslot")
    first, = create(srv, user)
    w = RawWorker(srv, "cslot", slots=1)
    assert w.next().job.id == first.id
    srv.stub.CancelJob(pb.CancelJobRequest(id=first.id, reason="test"), timeout=T)
    # The worker finds out the way any worker might (its next report is refused) and drops
    # the job without another heartbeat: the lease of a cancelled job is gone all the same.
    ri.assert_code(ri.rpc_error(w.report, first.id, S.JOB_STATUS_SCRIPT_READY, S.STAGE_SCRIPT_EXPANSION, 25),
                   PRECONDITION, what="report on a cancelled job")
    second, = create(srv, user)
    got = w.next(timeout=8)  # well past the 2 s lease the cancelled job had
    assert got.job.id == second.id
    w.close()


def test_with_auth_on_workers_need_an_admin_key(reeld_factory):
    """With --auth, WorkerService calls need an admin key; the SDK sends it (api_key / $REEL_API_KEY)."""
    from reel_worker import Worker, Result
    admin = "reel_admin_key_for_worker_tests_42"
    srv = reeld_factory("ext-auth", workers=0, lease_seconds=3, extra_args=("--auth", "--admin-key", admin))
    md = (("authorization", f"Bearer {admin}"),)
    job = srv.stub.CreateJob(ri.create_request(ri.unique("extauth")), metadata=md, timeout=T)
    raw = wpb_grpc.WorkerServiceStub(srv.channel)
    for bad in ((), (("authorization", "Bearer reel_not_a_key"),)):
        try:
            raw.Heartbeat(wpb.HeartbeatRequest(worker_id="keyless"), metadata=bad, timeout=T)
            raise AssertionError("a worker without a valid key was let in")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
    w = Worker(srv.target, "keyed", slots=1, api_key=admin)

    @w.handler()
    def run(j, ctx):
        ctx.report("SCRIPT_READY", "SCRIPT_EXPANSION", 25, "script")
        ctx.report("CONTINUITY_CHECKED", "CONTINUITY_VALIDATION", 35, "checked")
        ctx.report("PREVIEW_READY", "VIDEO_GENERATION", 85, "preview")
        return Result(video_url="http://example.invalid/v.mp4", thumbnail_url="", duration_seconds=1.0)

    w.start()
    try:
        deadline = time.monotonic() + 30
        done = None
        while time.monotonic() < deadline:
            done = srv.stub.GetJob(pb.GetJobRequest(id=job.id), metadata=md, timeout=T)
            if done.status == pb.JOB_STATUS_FINAL_READY:
                break
            time.sleep(0.1)
        assert done.status == pb.JOB_STATUS_FINAL_READY and done.worker_id == "keyed", ri.describe_job(done)
    finally:
        w.stop(drain=False, wait=True)
