"""reeld with `--provider http` against the fake provider (issue 4, "Bad input and faults").

A provider that is slow, down, rate-limiting, returning garbage, rejecting content, refusing
the API key or never finishing: the job completes, or retries and fails with a clear code,
while the service and every other job go on. Each test runs a private reeld
(`ri.http_reeld`) on a database of its own against the shared fake provider, whose knobs
and stats are reset per test (`fake_provider` fixture); the API-key test starts its own.
A failing assertion prints the job's event history.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
import urllib.parse
from pathlib import Path

import grpc

import reel_interop as ri
from reel_interop import pb

S = pb  # enum values live on the module: S.JOB_STATUS_FAILED, S.STAGE_UPLOAD, ...


# --------------------------------------------------------------------------- helpers


def start(reeld_factory, fake, tmp_path, name, **kw):
    art = tmp_path / "artifacts"
    srv = ri.http_reeld(reeld_factory, name, fake.url, art, **kw)
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


def diag(srv, job_id, fake=None) -> str:
    """What went on: the job, its stored events, and what the fake provider saw."""
    parts = []
    try:
        parts.append(ri.describe_job(get(srv, job_id)))
    except Exception as e:
        parts.append(f"(GetJob failed: {e})")
    parts.append(ri.stored_history(srv.db_url, job_id))
    if fake is not None:
        st = fake.stats()
        st.pop("submissions_by_prompt", None)
        st.pop("last_submit", None)
        parts.append(f"fake provider stats: {st}")
    return "\n".join(parts)


def file_path(url: str) -> Path:
    parts = urllib.parse.urlsplit(url)
    assert parts.scheme == "file", f"expected a file:// URL, got {url!r}"
    return Path(urllib.parse.unquote(parts.path))


def assert_dead_lettered(job, code, d):
    assert job.status == S.JOB_STATUS_FAILED and job.dead_lettered, f"not dead-lettered:\n{d}"
    assert job.error.code == code, f"error.code {job.error.code!r}, want {code!r}:\n{d}"
    assert job.error.message, f"no error message:\n{d}"


def retry_pairs(events):
    """(FAILED not dead-lettered, the QUEUED that follows it) pairs in an event list."""
    return [(a, b) for a, b in zip(events, events[1:])
            if a.status == S.JOB_STATUS_FAILED and not a.dead_lettered
            and b.status == S.JOB_STATUS_QUEUED]


# --------------------------------------------------------------------------- tests


def test_http_provider_job_reaches_final_ready_with_stored_artifacts(reeld_factory, fake_provider,
                                                                     tmp_path):
    srv, art = start(reeld_factory, fake_provider, tmp_path, "http-happy")
    job = create(srv, "happy")
    events = watch_to_end(srv, job.id)
    done = get(srv, job.id)
    d = diag(srv, job.id, fake_provider)
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

    # The files, where the job says they are.
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

    assert file_path(done.result.video_url) == final, d
    assert file_path(done.result.thumbnail_url) == thumb, d
    assert file_path(done.artifacts.final_video_url) == final, d
    assert file_path(done.artifacts.thumbnail_url) == thumb, d
    assert file_path(done.artifacts.hls_playlist_url) == playlist, d
    assert done.result.segment_id, d
    assert abs(done.result.duration_seconds - 2.0) < 0.3, (
        f"duration_seconds {done.result.duration_seconds}, the fake's video lasts 2 s\n{d}")
    assert done.artifacts.provider_job_id.startswith("task-"), d

    st = fake_provider.stats()
    assert st["submissions_by_external_id"] == {job.id: 1}, d
    assert st["tasks_created"] == 1, d
    assert st["downloads"] >= 1, d
    assert done.retry_count == 0, d


def test_rate_limited_submit_waits_out_retry_after_and_completes(reeld_factory, fake_provider,
                                                                  tmp_path):
    srv, _ = start(reeld_factory, fake_provider, tmp_path, "http-429")
    fake_provider.control(rate_limit_next=2, retry_after_s=1)
    job = create(srv, "ratelimit")
    events = watch_to_end(srv, job.id)
    done = get(srv, job.id)
    d = diag(srv, job.id, fake_provider)
    assert done.status == S.JOB_STATUS_FINAL_READY, d
    assert done.retry_count == 0, f"the 429s were handled inside the call, not by a job retry\n{d}"

    st = fake_provider.stats()
    assert st["status_counts"].get("429") == 2, d
    assert st["tasks_created"] == 1 and st["submissions_by_external_id"] == {job.id: 1}, d

    # The submit happens between the "submitting to …" and "submitted to …" events; two 429s
    # with Retry-After: 1 make that gap at least ~2 s (the in-call backoff without Retry-After
    # would be 0.2 s + 0.4 s).
    submitting = next(e for e in events if e.message.startswith("submitting to"))
    submitted = next(e for e in events if e.message.startswith("submitted to"))
    assert submitting.stage == submitted.stage == S.STAGE_VIDEO_GENERATION, d
    gap = (submitted.at_unix_ms - submitting.at_unix_ms) / 1000
    assert gap >= 1.9, f"submit took {gap:.2f}s across two 429s with Retry-After: 1\n{d}"


def test_provider_down_dead_letters_with_unavailable_while_service_answers_then_retry_completes(
        reeld_factory, fake_provider, tmp_path):
    srv, _ = start(reeld_factory, fake_provider, tmp_path, "http-down", retry_base_ms=50)
    fake_provider.control(fail_rate=1.0)
    user = ri.unique("down")
    job = srv.stub.CreateJob(ri.create_request(user, max_retries=1), timeout=ri.DEFAULT_TIMEOUT)
    watcher = ri.Watcher(srv.stub, job.id, after_seq=0, timeout=60)
    watcher.start()

    # While the job fights the provider, the service keeps answering promptly.
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
        assert time.monotonic() < deadline, f"not dead-lettered after 45 s:\n{diag(srv, job.id, fake_provider)}"
        time.sleep(0.1)
    assert slowest < 2.0, f"Health+GetJob+ListJobs took {slowest:.2f}s while the provider was down"
    assert answered >= 5, f"only {answered} rounds of calls during the failure"

    events = watcher.finish(15)
    d = diag(srv, job.id, fake_provider)
    failed = get(srv, job.id)
    assert_dead_lettered(failed, "PROVIDER_UNAVAILABLE", d)
    failed_d = d
    assert failed.retry_count == 1, d
    assert watcher.error is None, f"watch ended with {watcher.error.code().name}\n{d}"
    assert ri.is_terminal(events[-1]) and events[-1].dead_lettered, d
    assert len(retry_pairs(events)) == 1, f"want one FAILED→QUEUED retry before dead-lettering\n{d}"
    st = fake_provider.stats()
    assert st["tasks_created"] == 0, d
    assert st["status_counts"].get("500", 0) > 2, (
        f"two runs of the job, and each call retries 5xx inside itself: want more than 2 "
        f"HTTP 500s\n{d}")
    dlq = srv.stub.ListJobs(pb.ListJobsRequest(user_id=user, dead_lettered_only=True),
                            timeout=ri.DEFAULT_TIMEOUT)
    assert [j.id for j in dlq.jobs] == [job.id], d

    fake_provider.control(fail_rate=0.0)
    again = srv.stub.RetryJob(pb.RetryJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    assert again.status == S.JOB_STATUS_QUEUED, ri.describe_job(again)
    done = ri.wait_for_job(srv.stub, job.id, timeout=30)
    d = diag(srv, job.id, fake_provider)
    assert done.progress == 100 and not done.dead_lettered and done.result.video_url, d
    assert fake_provider.stats()["tasks_created"] == 1, d
    # Last, so that the behaviour above is checked whatever this says: the submit belongs to
    # video generation (DESIGN §5 stage 3), so that is the stage its error names.
    assert failed.error.stage == S.STAGE_VIDEO_GENERATION, (
        f"a failed submit names stage {ri.stage_name(failed.error.stage)}\n{failed_d}")


def test_provider_outage_under_load_dead_letters_every_job_then_retry_completes_each_once(
        reeld_factory, fake_provider, tmp_path):
    """A provider outage while jobs keep coming: each job backs off, retries and is
    dead-lettered (none lost, none stuck); once the provider is back, RetryJob brings every
    one to FINAL_READY with exactly one provider task each."""
    srv, art = start(reeld_factory, fake_provider, tmp_path, "http-outage", retry_base_ms=50, workers=4)
    fake_provider.control(fail_rate=1.0)
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
            f"{len(dead.jobs)} of {n} dead-lettered after 90 s\n{diag(srv, ids[0], fake_provider)}")
        time.sleep(0.2)
    for j in dead.jobs:
        assert_dead_lettered(j, "PROVIDER_UNAVAILABLE", diag(srv, j.id, fake_provider))
        assert j.retry_count == 1, diag(srv, j.id, fake_provider)
    assert fake_provider.stats()["tasks_created"] == 0

    fake_provider.control(fail_rate=0.0)
    for job_id in ids:
        srv.stub.RetryJob(pb.RetryJobRequest(id=job_id), timeout=ri.DEFAULT_TIMEOUT)
    for job_id in ids:
        ri.wait_for_job(srv.stub, job_id, timeout=90)
    st = fake_provider.stats()
    assert st["tasks_created"] == n, st
    r = ri.fault_report("provider outage under load, then RetryJob", srv.db_url, ids)
    assert (r["lost"], r["duplicated"], r["completed"]) == (0, 0, n), r


def test_garbage_replies_fail_with_bad_response_are_retried_then_dead_lettered(
        reeld_factory, fake_provider, tmp_path):
    srv, _ = start(reeld_factory, fake_provider, tmp_path, "http-garbage", retry_base_ms=50)
    fake_provider.control(garbage_rate=1.0)
    job = create(srv, "garbage", max_retries=1)
    events = watch_to_end(srv, job.id, timeout=30)
    d = diag(srv, job.id, fake_provider)
    failed = get(srv, job.id)
    assert_dead_lettered(failed, "PROVIDER_BAD_RESPONSE", d)
    assert failed.retry_count == 1, f"a bad response is retryable: want 1 retry\n{d}"
    pairs = retry_pairs(events)
    assert len(pairs) == 1, f"want one FAILED→QUEUED retry before dead-lettering\n{d}"
    assert "retry" in pairs[0][1].message, d
    assert events[-1].dead_lettered and events[-1].status == S.JOB_STATUS_FAILED, d
    assert fake_provider.stats()["tasks_created"] == 0, d


def test_content_rejection_dead_letters_at_once_without_retry(reeld_factory, fake_provider,
                                                              tmp_path):
    srv, _ = start(reeld_factory, fake_provider, tmp_path, "http-reject")
    fake_provider.control(reject_next=1)
    job = create(srv, "reject")  # max_retries 0 → 3: attempts remain, yet no retry
    events = watch_to_end(srv, job.id, timeout=30)
    d = diag(srv, job.id, fake_provider)
    failed = get(srv, job.id)
    assert_dead_lettered(failed, "PROVIDER_REJECTED", d)
    assert failed.retry_count == 0 and failed.max_retries == 3, d
    assert not retry_pairs(events), f"a rejected prompt must not be retried\n{d}"
    assert sum(e.status == S.JOB_STATUS_FAILED for e in events) == 1, d
    st = fake_provider.stats()
    assert st["rejected"] == 1 and st["submissions"] == 0, d
    assert st["status_counts"].get("400") == 1, f"the 400 was retried inside the call\n{d}"
    # Last (see the provider-down test): the submit is part of video generation.
    assert failed.error.stage == S.STAGE_VIDEO_GENERATION, (
        f"a rejected submit names stage {ri.stage_name(failed.error.stage)}\n{d}")


def test_stuck_provider_times_out_resumes_polling_once_then_dead_letters(
        reeld_factory, fake_provider, tmp_path):
    srv, _ = start(reeld_factory, fake_provider, tmp_path, "http-stuck", retry_base_ms=50,
                   extra_args=("--video-timeout-seconds", "2"))
    fake_provider.control(stuck=True)
    job = create(srv, "stuck", max_retries=1)
    t0 = time.monotonic()
    events = watch_to_end(srv, job.id, timeout=40)
    took = time.monotonic() - t0
    d = diag(srv, job.id, fake_provider)
    failed = get(srv, job.id)
    assert_dead_lettered(failed, "STAGE_TIMEOUT", d)
    assert failed.error.stage == S.STAGE_VIDEO_GENERATION, d
    assert failed.retry_count == 1, d
    assert len(retry_pairs(events)) == 1, d
    assert took >= 3.5, f"two 2 s video timeouts passed in {took:.1f}s\n{d}"
    st = fake_provider.stats()
    assert st["tasks_created"] == 1, f"the retry must resume polling, not submit again\n{d}"
    assert st["submissions_by_external_id"] == {job.id: 1}, d
    assert failed.artifacts.provider_job_id.startswith("task-"), d
    resumed = [e for e in events if failed.artifacts.provider_job_id in e.message
               and e.stage == S.STAGE_VIDEO_GENERATION]
    assert resumed, f"no 'resuming <task id>' event on the retry\n{d}"


def test_slow_provider_parks_worker_slot_so_other_jobs_run(reeld_factory, fake_provider,
                                                           tmp_path):
    srv, _ = start(reeld_factory, fake_provider, tmp_path, "http-slow", workers=1)
    fake_provider.control(latency_ms=300)
    jobs = [create(srv, f"slow{i}") for i in range(3)]  # three users: no priority quirks
    done = [ri.wait_for_job(srv.stub, j.id, timeout=60) for j in jobs]
    d = "\n".join(diag(srv, j.id) for j in jobs)
    assert all(j.progress == 100 for j in done), d
    st = fake_provider.stats()
    assert st["tasks_created"] == 3, d

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
        f"finished: a job waiting at the provider held the only worker slot\n{d}")


def test_cancel_while_waiting_at_provider_cancels_the_provider_task(reeld_factory, fake_provider,
                                                                    tmp_path):
    srv, _ = start(reeld_factory, fake_provider, tmp_path, "http-cancel")
    fake_provider.control(stuck=True)
    job = create(srv, "cancel")
    watcher = ri.Watcher(srv.stub, job.id, after_seq=0, timeout=60)
    watcher.start()
    deadline = time.monotonic() + 20
    while True:
        cur = get(srv, job.id)
        if cur.artifacts.provider_job_id and cur.progress > 40:
            break  # submitted, saved and polled: waiting at the provider
        assert not ri.is_terminal(cur), diag(srv, job.id, fake_provider)
        assert time.monotonic() < deadline, f"never reached the provider:\n{diag(srv, job.id, fake_provider)}"
        time.sleep(0.05)
    task_id = cur.artifacts.provider_job_id

    resp = srv.stub.CancelJob(pb.CancelJobRequest(id=job.id, reason="no longer needed"),
                              timeout=ri.DEFAULT_TIMEOUT)
    assert resp.status == S.JOB_STATUS_CANCELLED, ri.describe_job(resp)
    events = watcher.finish(15)
    d = diag(srv, job.id, fake_provider)
    assert watcher.error is None, f"watch ended with {watcher.error.code().name}\n{d}"
    assert events[-1].status == S.JOB_STATUS_CANCELLED, d

    deadline = time.monotonic() + 5
    while task_id not in fake_provider.stats()["cancels"]:
        assert time.monotonic() < deadline, (
            f"the provider task {task_id} was not cancelled within 5 s\n{d}\n"
            f"{srv.log_tail(20)}")
        time.sleep(0.1)
    seq = get(srv, job.id).last_event_seq
    time.sleep(0.5)
    after = get(srv, job.id)
    assert after.status == S.JOB_STATUS_CANCELLED and after.last_event_seq == seq, (
        f"something was written after CANCELLED:\n{diag(srv, job.id, fake_provider)}")


def test_wrong_api_key_fails_unauthorized_without_retry(reeld_factory, tmp_path):
    fp = ri.fake_provider_class()(port=0, api_key="k").start()
    try:
        srv, _ = start(reeld_factory, fp, tmp_path, "http-badkey",
                       env={"REEL_PROVIDER_KEY": "wrong"})
        job = create(srv, "badkey")
        events = watch_to_end(srv, job.id, timeout=30)
        d = diag(srv, job.id, fp)
        failed = get(srv, job.id)
        assert_dead_lettered(failed, "PROVIDER_UNAUTHORIZED", d)
        assert failed.retry_count == 0 and not retry_pairs(events), d
        st = fp.stats()
        assert st["status_counts"] == {"401": 1}, f"the 401 was retried\n{d}"
        assert st["tasks_created"] == 0, d

        # The same reeld with the right key: the key is what the provider refused.
        srv.stop()
        ri.set_env(srv, {"REEL_PROVIDER_KEY": "k"})
        srv.start()
        srv.stub.RetryJob(pb.RetryJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
        done = ri.wait_for_job(srv.stub, job.id, timeout=30)
        assert done.progress == 100, diag(srv, job.id, fp)
        assert fp.stats()["tasks_created"] == 1
    finally:
        fp.stop()


def test_jobs_back_from_the_provider_wait_for_a_free_worker_slot(reeld_factory, fake_provider,
                                                                  tmp_path):
    """Parking frees the slot while a job waits at the provider; coming back, the job needs a
    slot again, so --workers still bounds the jobs doing work here (post-processing runs
    ffmpeg). 1 worker, 3 jobs parked at a stuck provider, then all their videos are ready at
    once: their upload..finalization spans must not overlap."""
    srv, _ = start(reeld_factory, fake_provider, tmp_path, "http-unpark", workers=1)
    fake_provider.control(stuck=True)
    jobs = [create(srv, f"unpark{i}") for i in range(3)]
    deadline = time.monotonic() + 20
    while not all(get(srv, j.id).artifacts.provider_job_id for j in jobs):
        assert time.monotonic() < deadline, (
            "with 1 worker, 3 jobs did not all reach the provider (parking):\n"
            + "\n".join(diag(srv, j.id, fake_provider) for j in jobs))
        time.sleep(0.05)
    fake_provider.control(stuck=False)
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
