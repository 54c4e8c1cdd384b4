"""reeld with `--provider kling` against the strict fake of Kling's API (issue 4, "Bad input
and faults"; DESIGN §5 "Providers").

A provider that is down, slow or never finishing, and a job cancelled while its task runs at
Kling: the job completes, or retries and fails with a clear code, while the service and every
other job go on, and no task is paid for twice. Each test runs a private reeld
(`ri.kling_reeld`) on a database of its own against the shared fake Kling, whose knobs and
stats are reset per test (`fake_kling` fixture). Kling's own error codes (content policy,
auth, parking, throttling), callbacks, the account's concurrency and continuations are
Tests/interop/test_kling.py's subject. A failing assertion prints the job's event history.
"""

from __future__ import annotations

import concurrent.futures as cf
import time

import grpc

import reel_interop as ri
from reel_interop import pb

S = pb  # enum values live on the module: S.JOB_STATUS_FAILED, S.STAGE_UPLOAD, ...

# Kling's server errors (HTTP 500, 503, 504): an outage, for as many submits as it lasts.
OUTAGE = [5000, 5001, 5002] * 200


# --------------------------------------------------------------------------- helpers


def start(reeld_factory, fake, tmp_path, name, **kw):
    art = tmp_path / "artifacts"
    srv = ri.kling_reeld(reeld_factory, name, fake.url, art, **kw)
    return srv, art


def create(srv, user_prefix, **fields):
    return srv.stub.CreateJob(ri.create_request(ri.unique(user_prefix), **fields),
                              timeout=ri.DEFAULT_TIMEOUT)


def get(srv, job_id):
    return srv.stub.GetJob(pb.GetJobRequest(id=job_id), timeout=ri.DEFAULT_TIMEOUT)


def watch_to_end(srv, job_id, timeout=60.0):
    """The live WatchJob stream (after_seq=0) until it ends; it must end with OK."""
    try:
        return ri.watch(srv.stub, job_id, after_seq=0, timeout=timeout)
    except grpc.RpcError as e:
        raise AssertionError(f"watch of {job_id} ended with {e.code().name}: {e.details()}\n"
                             f"{ri.stored_history(srv.db_url, job_id)}") from None


def history(srv, job_id):
    """Every stored event after seq 1 (a replay; the job must be terminal)."""
    return ri.watch(srv.stub, job_id, after_seq=1, timeout=15)


def server_errors(stats: dict) -> int:
    return sum(stats["refused"].get(str(c), 0) for c in (5000, 5001, 5002))


def diag(srv, job_id, fake=None) -> str:
    """What went on: the job, its stored events, and what the fake Kling saw."""
    return ri.job_diag(srv, job_id, *([f"fake Kling stats: {ri.kling_stats(fake)}"] if fake is not None else []))


# --------------------------------------------------------------------------- tests


def test_kling_job_reaches_final_ready_with_stored_artifacts(reeld_factory, fake_kling, tmp_path):
    srv, art = start(reeld_factory, fake_kling, tmp_path, "kling-happy")
    job = create(srv, "happy")
    events = watch_to_end(srv, job.id)
    done = get(srv, job.id)
    d = diag(srv, job.id, fake_kling)
    assert events[-1].status == S.JOB_STATUS_FINAL_READY, d
    assert done.status == S.JOB_STATUS_FINAL_READY and done.progress == 100, d

    # The stage/status/progress contract, in order.
    progress = [e.progress for e in events]
    assert progress == sorted(progress), f"progress went backwards {progress}\n{d}"
    milestones = [(e.status, e.progress) for e in events]
    for want in [(S.JOB_STATUS_SCRIPT_READY, 25), (S.JOB_STATUS_CONTINUITY_CHECKED, 35),
                 (S.JOB_STATUS_PREVIEW_READY, 85), (S.JOB_STATUS_FINAL_READY, 100)]:
        assert want in milestones, f"no {ri.status_name(want[0])} at {want[1]}%:\n{d}"
    stages = []
    for e in events:
        if e.stage not in stages:
            stages.append(e.stage)
    want_stages = [S.STAGE_SCRIPT_EXPANSION, S.STAGE_CONTINUITY_VALIDATION,
                   S.STAGE_VIDEO_GENERATION, S.STAGE_UPLOAD, S.STAGE_FINALIZATION,
                   S.STAGE_COMPLETED]
    assert [s for s in stages if s in want_stages] == want_stages, (
        f"stages {[ri.stage_name(s) for s in stages]}\n{d}")
    assert all(e.progress <= 84 for e in events
               if e.stage == S.STAGE_VIDEO_GENERATION and e.status != S.JOB_STATUS_PREVIEW_READY), (
        f"video generation went past 84% before the result was in\n{d}")

    # The files, where the job says they are: copied out of Kling at once.
    job_dir = art / job.id
    final, thumb = job_dir / "final.mp4", job_dir / "thumb.jpg"
    playlist, preview = job_dir / "hls" / "index.m3u8", job_dir / "preview.mp4"
    for p in (final, thumb, playlist, preview):
        assert p.is_file() and p.stat().st_size > 0, f"{p} missing or empty\n{d}"
    assert final.read_bytes()[4:8] == b"ftyp", f"{final} is not an MP4"
    assert thumb.read_bytes()[:3] == b"\xff\xd8\xff", f"{thumb} is not a JPEG"
    lines = playlist.read_text().splitlines()
    assert lines and lines[0].strip() == "#EXTM3U", f"{playlist}: {lines[:5]}"
    segments = [ln.strip() for ln in lines if ln.strip().endswith(".ts")]
    assert segments, f"{playlist} lists no .ts segments: {lines}"
    for seg in segments:
        sp = playlist.parent / seg
        assert sp.is_file() and sp.stat().st_size > 0, f"HLS segment {sp} missing or empty"

    assert ri.file_path(done.result.video_url) == final, d
    assert ri.file_path(done.result.thumbnail_url) == thumb, d
    assert ri.file_path(done.artifacts.final_video_url) == final, d
    assert ri.file_path(done.artifacts.thumbnail_url) == thumb, d
    assert ri.file_path(done.artifacts.hls_playlist_url) == playlist, d
    assert done.result.segment_id, d
    assert abs(done.result.duration_seconds - 2.0) < 0.3, (
        f"duration_seconds {done.result.duration_seconds}, the fake's video lasts 2 s\n{d}")

    st = fake_kling.stats()
    assert st["creates_ok"] == 1 and st["creates_by_external_id"] == {f"reel-{job.id}-1": 1}, d
    (task,) = st["tasks"]
    assert done.artifacts.provider_job_id == task["task_id"] and task["task_id"].isdigit(), d
    assert task["status"] == "succeed", d
    assert st["result_downloads"] >= 1, d
    submitted = [e for e in events if e.message.startswith(f"submitted to kling: task {task['task_id']} "
                                                           "(request_id ")]
    assert submitted and submitted[0].stage == S.STAGE_VIDEO_GENERATION, d
    assert done.retry_count == 0, d


def test_kling_down_dead_letters_with_unavailable_while_service_answers_then_retry_completes(
        reeld_factory, fake_kling, tmp_path):
    # 200 ms backoff base: each run's submits are spread over ~1.4 s, so the outage lasts a
    # few seconds of calls to the service.
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-down", retry_base_ms=200)
    fake_kling.control(error_next=OUTAGE)
    user = ri.unique("down")
    job = srv.stub.CreateJob(ri.create_request(user, max_retries=1), timeout=ri.DEFAULT_TIMEOUT)
    watcher = ri.Watcher(srv.stub, job.id, after_seq=0, timeout=60)
    watcher.start()

    # While the job fights Kling's outage, the service keeps answering promptly.
    answered, slowest = 0, 0.0
    deadline = time.monotonic() + 45
    while True:
        t0 = time.monotonic()
        h = srv.health.Check(ri.health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert h.status == ri.health_pb2.HealthCheckResponse.SERVING
        cur = get(srv, job.id)
        lst = srv.stub.ListJobs(pb.ListJobsRequest(user_id=user), timeout=5)
        assert [j.id for j in lst.jobs] == [job.id]
        slowest = max(slowest, time.monotonic() - t0)
        answered += 1
        if ri.is_terminal(cur):
            break
        assert time.monotonic() < deadline, f"not dead-lettered after 45 s:\n{diag(srv, job.id, fake_kling)}"
        time.sleep(0.1)
    assert slowest < 2.0, f"Health+GetJob+ListJobs took {slowest:.2f}s while Kling was down"
    assert answered >= 5, f"only {answered} rounds of calls during the failure"

    events = watcher.finish(15)
    d = diag(srv, job.id, fake_kling)
    failed = get(srv, job.id)
    ri.assert_dead_lettered(failed, "PROVIDER_UNAVAILABLE", d)
    failed_d = d
    assert failed.retry_count == 1, d
    assert watcher.error is None, f"watch ended with {watcher.error.code().name}\n{d}"
    assert ri.is_terminal(events[-1]) and events[-1].dead_lettered, d
    assert len(ri.retry_pairs(events)) == 1, f"want one FAILED→QUEUED retry before dead-lettering\n{d}"
    st = fake_kling.stats()
    assert st["creates_ok"] == 0, d
    assert server_errors(st) > 2, (
        f"two runs of the job, and each submit is retried after a server error: want more than "
        f"2 server errors from Kling\n{d}")
    dlq = srv.stub.ListJobs(pb.ListJobsRequest(user_id=user, dead_lettered_only=True),
                            timeout=ri.DEFAULT_TIMEOUT)
    assert [j.id for j in dlq.jobs] == [job.id], d

    fake_kling.control(error_next=[])  # Kling is back
    again = srv.stub.RetryJob(pb.RetryJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    assert again.status == S.JOB_STATUS_QUEUED, ri.describe_job(again)
    done = ri.wait_for_job(srv.stub, job.id, timeout=30)
    d = diag(srv, job.id, fake_kling)
    assert done.progress == 100 and not done.dead_lettered and done.result.video_url, d
    st = fake_kling.stats()
    assert st["creates_ok"] == 1 and len(ri.kling_tasks_of(st, job.id)) == 1, d
    assert done.artifacts.provider_job_id == ri.kling_tasks_of(st, job.id)[0]["task_id"], d
    # Last, so that the behaviour above is checked whatever this says: the submit belongs to
    # video generation (DESIGN §5 stage 3), so that is the stage its error names.
    assert failed.error.stage == S.STAGE_VIDEO_GENERATION, (
        f"a failed submit names stage {ri.stage_name(failed.error.stage)}\n{failed_d}")


def test_kling_outage_under_load_dead_letters_every_job_then_retry_completes_each_once(
        reeld_factory, fake_kling, tmp_path):
    """A Kling outage (server errors on every submit) while jobs keep coming: each job backs
    off, retries and is dead-lettered with PROVIDER_UNAVAILABLE (none lost, none stuck); once
    Kling is back, RetryJob brings every one to FINAL_READY with exactly one Kling task each.
    The account's concurrency is not the subject: it is set high on both sides."""
    fake_kling.control(error_next=OUTAGE, concurrency_limit=100)
    srv, art = start(reeld_factory, fake_kling, tmp_path, "kling-outage", retry_base_ms=50, workers=4,
                     concurrency=100)
    user = ri.unique("outage")
    n = 12
    with cf.ThreadPoolExecutor(6) as ex:
        jobs = list(ex.map(lambda i: srv.stub.CreateJob(ri.create_request(user, text=f"outage {i}", max_retries=1),
                                                        timeout=ri.DEFAULT_TIMEOUT), range(n)))
    ids = [j.id for j in jobs]
    deadline = time.monotonic() + 90
    while True:
        dead = srv.stub.ListJobs(pb.ListJobsRequest(user_id=user, dead_lettered_only=True, page_size=100),
                                 timeout=ri.DEFAULT_TIMEOUT)
        if len(dead.jobs) == n:
            break
        assert time.monotonic() < deadline, (
            f"{len(dead.jobs)} of {n} dead-lettered after 90 s\n{diag(srv, ids[0], fake_kling)}")
        time.sleep(0.2)
    for j in dead.jobs:
        ri.assert_dead_lettered(j, "PROVIDER_UNAVAILABLE", diag(srv, j.id, fake_kling))
        assert j.retry_count == 1, diag(srv, j.id, fake_kling)
    st = fake_kling.stats()
    assert st["creates_ok"] == 0, ri.kling_stats(fake_kling)
    assert server_errors(st) >= 2 * n, f"each job's two runs met the outage: {st['refused']}"

    fake_kling.control(error_next=[])  # Kling is back
    for job_id in ids:
        srv.stub.RetryJob(pb.RetryJobRequest(id=job_id), timeout=ri.DEFAULT_TIMEOUT)
    for job_id in ids:
        ri.wait_for_job(srv.stub, job_id, timeout=90)
    st = fake_kling.stats()
    assert st["creates_ok"] == n, ri.kling_stats(fake_kling)
    wrong = {}
    for job_id in ids:
        mine = ri.kling_tasks_of(st, job_id)
        pid = get(srv, job_id).artifacts.provider_job_id
        if len(mine) != 1 or mine[0]["task_id"] != pid:
            wrong[job_id] = (pid, [(t["task_id"], t["external_task_id"]) for t in mine])
    assert not wrong, f"jobs without exactly one Kling task of their own (provider_job_id, tasks): {wrong}"
    r = ri.fault_report("Kling outage under load, then RetryJob", srv.db_url, ids)
    assert (r["lost"], r["duplicated"], r["completed"]) == (0, 0, n), r


def test_stuck_kling_task_times_out_resumes_the_same_task_once_then_dead_letters(
        reeld_factory, fake_kling, tmp_path):
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-stuck", retry_base_ms=50,
                   extra_args=("--video-timeout-seconds", "2"))
    fake_kling.control(stuck=True)
    job = create(srv, "stuck", max_retries=1)
    t0 = time.monotonic()
    events = watch_to_end(srv, job.id, timeout=40)
    took = time.monotonic() - t0
    d = diag(srv, job.id, fake_kling)
    failed = get(srv, job.id)
    ri.assert_dead_lettered(failed, "STAGE_TIMEOUT", d)
    assert failed.error.stage == S.STAGE_VIDEO_GENERATION, d
    assert failed.retry_count == 1, d
    assert len(ri.retry_pairs(events)) == 1, d
    assert took >= 3.5, f"two 2 s video timeouts passed in {took:.1f}s\n{d}"
    st = fake_kling.stats()
    assert st["creates_ok"] == 1, f"the retry must follow the same task, not submit again\n{d}"
    assert st["creates_by_external_id"] == {f"reel-{job.id}-1": 1}, d
    (task,) = st["tasks"]
    assert failed.artifacts.provider_job_id == task["task_id"], d
    resumed = [e for e in events if e.message == f"resuming kling task {task['task_id']}"
               and e.stage == S.STAGE_VIDEO_GENERATION]
    assert resumed, f"no 'resuming kling task <id>' event on the retry\n{d}"


def test_slow_kling_parks_worker_slot_so_other_jobs_run(reeld_factory, fake_kling, tmp_path):
    """A job waiting at Kling gives its worker slot back: with one worker, a second job is
    claimed (and its task submitted) while the first one's task is still processing."""
    fake_kling.control(queued_ms=200, processing_ms=2000, concurrency_limit=100)
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-slow", workers=1, concurrency=100)
    jobs = [create(srv, f"slow{i}") for i in range(3)]  # three users: no priority quirks
    done = [ri.wait_for_job(srv.stub, j.id, timeout=60) for j in jobs]
    d = "\n".join(diag(srv, j.id) for j in jobs) + f"\nfake Kling stats: {ri.kling_stats(fake_kling)}"
    assert all(j.progress == 100 for j in done), d
    st = fake_kling.stats()
    assert st["creates_ok"] == 3, d
    assert st["max_live"] >= 2, f"with 1 worker, Kling never had two of its tasks at once\n{d}"

    spans = []
    for j in jobs:
        hist = history(srv, j.id)
        first = next(e for e in hist if e.status == S.JOB_STATUS_PROCESSING)
        final = next(e for e in hist if e.status == S.JOB_STATUS_FINAL_READY)
        spans.append((first.at_unix_ms, final.at_unix_ms, j.id))
    spans.sort()
    (a_start, a_end, a_id), (b_start, _, b_id) = spans[0], spans[1]
    assert b_start < a_end, (
        f"with 1 worker, job {b_id} was first claimed {b_start - a_end} ms after job {a_id} "
        f"finished: a job waiting at Kling held the only worker slot\n{d}")


def test_cancel_while_waiting_at_kling_cancels_the_job_and_the_task_runs_on(
        reeld_factory, fake_kling, tmp_path):
    """Kling has no cancel call: CancelJob ends the job at once (CANCELLED, nothing written
    after it, the result never fetched or stored), while the task keeps running at Kling."""
    srv, art = start(reeld_factory, fake_kling, tmp_path, "kling-cancel")
    fake_kling.control(stuck=True)
    job = create(srv, "cancel")
    watcher = ri.Watcher(srv.stub, job.id, after_seq=0, timeout=60)
    watcher.start()
    deadline = time.monotonic() + 20
    while True:
        cur = get(srv, job.id)
        st = fake_kling.stats()
        if (cur.artifacts.provider_job_id and st["tasks"]
                and st["tasks"][0]["status"] == "processing" and st["queries"] + len(st["callbacks"]) > 0):
            break  # submitted, saved, and followed: waiting at Kling
        assert not ri.is_terminal(cur), diag(srv, job.id, fake_kling)
        assert time.monotonic() < deadline, f"never reached Kling:\n{diag(srv, job.id, fake_kling)}"
        time.sleep(0.05)
    task_id = cur.artifacts.provider_job_id
    assert st["tasks"][0]["task_id"] == task_id, diag(srv, job.id, fake_kling)

    resp = srv.stub.CancelJob(pb.CancelJobRequest(id=job.id, reason="no longer needed"),
                              timeout=ri.DEFAULT_TIMEOUT)
    assert resp.status == S.JOB_STATUS_CANCELLED, ri.describe_job(resp)
    events = watcher.finish(15)
    d = diag(srv, job.id, fake_kling)
    assert watcher.error is None, f"watch ended with {watcher.error.code().name}\n{d}"
    assert events[-1].status == S.JOB_STATUS_CANCELLED, d
    seq = get(srv, job.id).last_event_seq

    # The task runs on at Kling (there is nothing to cancel it with)...
    time.sleep(0.5)
    st = fake_kling.stats()
    assert [(t["task_id"], t["status"]) for t in st["tasks"]] == [(task_id, "processing")], d
    # ...and ends there on its own; the job hears of it (poll or callback) and changes nothing.
    fake_kling.control(stuck=False)
    deadline = time.monotonic() + 10
    while fake_kling.stats()["tasks"][0]["status"] != "succeed":
        assert time.monotonic() < deadline, f"the fake's task never ended\n{d}"
        time.sleep(0.05)
    deadline = time.monotonic() + 5
    while not any(c["status"] == "succeed" for c in fake_kling.stats()["callbacks"]):
        assert time.monotonic() < deadline, f"the fake sent no callback for the task's end\n{d}"
        time.sleep(0.05)
    time.sleep(0.5)  # a poll or two (100 ms) as well
    after = get(srv, job.id)
    d = diag(srv, job.id, fake_kling)
    assert after.status == S.JOB_STATUS_CANCELLED and after.last_event_seq == seq, (
        f"something was written after CANCELLED:\n{d}")
    assert not after.artifacts.final_video_url and not after.result.video_url, d
    st = fake_kling.stats()
    assert st["result_downloads"] == 0, f"the cancelled job's video was fetched from Kling\n{d}"
    assert not (art / job.id / "final.mp4").exists(), f"a cancelled job's video was stored\n{d}"
    assert st["creates_ok"] == 1, d
    # The task's last callback (succeed) reached reeld after the cancel, and changed nothing.
    assert [(c["status"], c["error"]) for c in st["callbacks"] if c["task_id"] == task_id][-1:] == [
        ("succeed", None)], f"{st['callbacks']}\n{d}"


def test_jobs_back_from_kling_wait_for_a_free_worker_slot(reeld_factory, fake_kling, tmp_path):
    """Parking frees the slot while a job waits at Kling; coming back, the job needs a slot
    again, so --workers still bounds the jobs doing work here (post-processing runs ffmpeg).
    1 worker, 3 jobs parked at Kling with stuck tasks, then all their videos are ready at
    once: their upload..finalization spans must not overlap."""
    fake_kling.control(stuck=True, concurrency_limit=100)
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-unpark", workers=1, concurrency=100)
    jobs = [create(srv, f"unpark{i}") for i in range(3)]
    deadline = time.monotonic() + 20
    while not all(get(srv, j.id).artifacts.provider_job_id for j in jobs):
        assert time.monotonic() < deadline, (
            "with 1 worker, 3 jobs did not all reach Kling (parking):\n"
            + "\n".join(diag(srv, j.id, fake_kling) for j in jobs))
        time.sleep(0.05)
    assert fake_kling.stats()["live"] == 3, ri.kling_stats(fake_kling)
    fake_kling.control(stuck=False)
    for j in jobs:
        ri.wait_for_job(srv.stub, j.id, timeout=60)
    d = "\n".join(diag(srv, j.id) for j in jobs)

    spans = []
    for j in jobs:
        hist = history(srv, j.id)
        up = next(e for e in hist if e.stage == S.STAGE_UPLOAD)
        final = next(e for e in hist if e.status == S.JOB_STATUS_FINAL_READY)
        spans.append((up.at_unix_ms, final.at_unix_ms, j.id))
    spans.sort()
    overlaps = [(a[2], b[2], a[1] - b[0]) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]
    assert not overlaps, (
        "with --workers 1, jobs post-processed at the same time (job, job, overlap ms): "
        f"{overlaps}\n{d}")
    assert fake_kling.stats()["creates_ok"] == 3, ri.kling_stats(fake_kling)
