"""SIGKILL of reeld during each pipeline stage, and under load, then a restart on the same
database (issue 4, "Bad input and faults"; DESIGN §4–§5): every acknowledged job ends
FINAL_READY exactly once — one FINAL_READY event, one segment row, one Kling task (a
restarted worker resumes the task it saved, or finds it by its external id
`reel-<job id>-<attempt>`; it never pays twice).

reeld runs with `--provider kling` against the strict fake of Kling's API (Tests/fake_kling,
`fake_kling` fixture, `ri.kling_reeld`) and `--lease-seconds 2`, so the restarted process's
reaper requeues the dead worker's jobs two seconds after their last heartbeat.
`--sim-stage-ms 300` makes script expansion and continuity validation last long enough to be
hit; a Kling task stays `submitted` then `processing` for the fake's `queued_ms` and
`processing_ms`, upload runs ffmpeg.
Finalization has no pause of its own (one transaction), so its test holds
`LOCK TABLE segments IN SHARE MODE` from a psql session: finalize then blocks inside its
transaction on the segment insert, reeld is killed there, and the lock is released before
the restart. After every kill the test checks that the job had not finished yet, so a kill
that came too late fails the test instead of proving nothing.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import time
from pathlib import Path

import grpc
import pytest

import reel_interop as ri
from reel_interop import pb

S = pb

STAGES = [S.STAGE_SCRIPT_EXPANSION, S.STAGE_CONTINUITY_VALIDATION, S.STAGE_VIDEO_GENERATION,
          S.STAGE_UPLOAD, S.STAGE_FINALIZATION]


# --------------------------------------------------------------------------- helpers


class SegmentsLock:
    """Holds LOCK TABLE segments IN SHARE MODE in an open psql transaction until release():
    inserts into segments (finalization) wait meanwhile."""

    def __init__(self, db_url: str):
        self.proc = subprocess.Popen(
            ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", db_url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.proc.stdin.write("BEGIN;\nLOCK TABLE segments IN SHARE MODE;\nSELECT 'locked';\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"psql could not lock segments: {self.proc.stderr.read()}")
            if line.strip() == "locked":
                return

    def release(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("ROLLBACK;\n")
                self.proc.stdin.close()
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait()


def wait_for_lock_waiter(db_url: str, timeout: float = 5.0) -> bool:
    """True once some session of this database waits on a lock (finalize on segments)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = ri.psql_value(db_url, "SELECT count(*) FROM pg_stat_activity WHERE "
                                  "datname = current_database() AND wait_event_type = 'Lock'")
        if int(n) > 0:
            return True
        time.sleep(0.02)
    return False


def job_row(db_url: str, job_id: str) -> tuple[str, str, int]:
    """(status, stage, segment rows) straight from Postgres."""
    out = ri.psql_value(db_url, f"SELECT j.status, j.stage, (SELECT count(*) FROM segments s "
                                f"WHERE s.job_id = j.id) FROM jobs j WHERE j.id = '{job_id}'")
    status, stage, segs = out.split("|")
    return status, stage, int(segs)


def assert_artifacts(art: Path, job, d: str):
    job_dir = art / job.id
    for rel in ("final.mp4", "thumb.jpg", "hls/index.m3u8"):
        p = job_dir / rel
        assert p.is_file() and p.stat().st_size > 0, f"{p} missing or empty\n{d}"
    assert ri.file_path(job.result.video_url) == job_dir / "final.mp4", d
    assert ri.file_path(job.result.thumbnail_url) == job_dir / "thumb.jpg", d
    assert ri.file_path(job.artifacts.hls_playlist_url) == job_dir / "hls" / "index.m3u8", d


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("stage", STAGES, ids=[ri.stage_name(s)[len("STAGE_"):].lower()
                                               for s in STAGES])
def test_sigkill_during_stage_then_restart_finishes_job_exactly_once(
        stage, reeld_factory, fake_kling, tmp_path):
    art = tmp_path / "artifacts"
    fake_kling.control(queued_ms=200, processing_ms=600)  # ~0.8 s at Kling
    name = ri.stage_name(stage)[len("STAGE_"):].lower()
    srv = ri.kling_reeld(reeld_factory, f"crash-{name}", fake_kling.url, art, workers=2,
                         sim_stage_ms=300, lease_seconds=2)
    lock = SegmentsLock(srv.db_url) if stage == S.STAGE_FINALIZATION else None
    try:
        job = srv.stub.CreateJob(ri.create_request(ri.unique(f"crash-{name}")),
                                 timeout=ri.DEFAULT_TIMEOUT)
        ext = f"reel-{job.id}-1"
        d = lambda: (f"{ri.stored_history(srv.db_url, job.id)}\n"  # noqa: E731
                     f"fake Kling stats: {ri.kling_stats(fake_kling)}")

        # Watch live until the job is in `stage`, then SIGKILL at once. In video generation,
        # wait until the Kling task was submitted and its id saved ("submitted to kling: task
        # …"): that is the window where a careless restart would pay for a second generation.
        seen = []
        call = srv.stub.WatchJob(pb.WatchJobRequest(id=job.id, after_seq=0), timeout=60)
        for ev in call:
            seen.append(ev)
            assert not ri.is_terminal(ev), f"finished before {name} was seen:\n{d()}"
            if ev.stage == stage and (stage != S.STAGE_VIDEO_GENERATION
                                      or ev.message.startswith("submitted to kling: task ")):
                break
        assert seen and seen[-1].stage == stage, f"watch ended before {name}:\n{d()}"
        if lock is not None:
            assert wait_for_lock_waiter(srv.db_url), (
                f"finalize never blocked on the segments lock:\n{d()}")
        srv.proc.kill()
        srv.proc.wait(10)
        call.cancel()
        killed_in = ri.describe_event(seen[-1])

        status, at_stage, segs = job_row(srv.db_url, job.id)
        assert status != "final_ready" and segs == 0 and at_stage == name, (
            f"the kill missed {name}: the job was already {status}/{at_stage} with {segs} "
            f"segment(s) (last event seen: {killed_in})\n{d()}")
        if stage == S.STAGE_VIDEO_GENERATION:
            st = fake_kling.stats()
            assert st["creates_ok"] == 1 and [t["status"] for t in ri.kling_tasks_of(st, job.id)] != ["succeed"], (
                f"the kill missed the task in flight at Kling (last event seen: {killed_in})\n{d()}")
    finally:
        if lock is not None:
            lock.release()

    srv.start()  # same ports, same database, same artifacts dir
    try:
        rest = ri.watch(srv.stub, job.id, after_seq=seen[-1].seq, timeout=60)
    except grpc.RpcError as e:
        raise AssertionError(f"watch after the restart ended with {e.code().name}: "
                             f"{e.details()}\n{d()}") from None
    assert rest and rest[-1].status == S.JOB_STATUS_FINAL_READY, (
        f"killed in {killed_in}; after the restart the job did not finish:\n{d()}")
    assert [e.seq for e in rest] == list(range(seen[-1].seq + 1, rest[-1].seq + 1)), (
        f"a reconnecting watcher (after_seq={seen[-1].seq}) missed or repeated events:\n{d()}")

    done = srv.stub.GetJob(pb.GetJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    full = ri.watch(srv.stub, job.id, after_seq=1, timeout=15)
    dd = f"killed in: {killed_in}\n{ri.describe_job(done)}\n{d()}"
    assert [e.seq for e in full] == list(range(2, done.last_event_seq + 1)), dd
    assert sum(e.status == S.JOB_STATUS_FINAL_READY for e in full) == 1, dd
    finals = ri.psql_value(srv.db_url, f"SELECT count(*) FROM job_events WHERE job_id = "
                                       f"'{job.id}' AND status = 'final_ready'")
    assert finals == "1", f"{finals} FINAL_READY events stored\n{dd}"
    assert any(e.status == S.JOB_STATUS_QUEUED and e.seq > seen[-1].seq for e in full), (
        f"no requeue event after the crash\n{dd}")
    segments = ri.psql_value(srv.db_url, f"SELECT count(*) FROM segments WHERE job_id = '{job.id}'")
    assert segments == "1", f"{segments} segment rows\n{dd}"
    assert done.result.segment_id, dd

    st = fake_kling.stats()
    assert st["creates_ok"] == 1, f"Kling was paid {st['creates_ok']} times\n{dd}"
    assert st["creates_by_external_id"] == {ext: 1}, (
        f"submitted again after the restart instead of resuming the saved Kling task\n{dd}")
    (task,) = st["tasks"]
    assert task["external_task_id"] == ext and task["status"] == "succeed", dd
    pid = done.artifacts.provider_job_id
    assert pid == task["task_id"], f"provider_job_id {pid!r}, Kling's task {task['task_id']}\n{dd}"
    if stage in (S.STAGE_VIDEO_GENERATION, S.STAGE_UPLOAD, S.STAGE_FINALIZATION):
        assert any(e.message == f"resuming kling task {pid}" for e in full if e.seq > seen[-1].seq), (
            f"after the restart the job did not resume Kling task {pid!r}\n{dd}")
    assert_artifacts(art, done, dd)
    assert done.retry_count == 1, f"the expired lease counts one attempt\n{dd}"


def test_sigkill_under_load_then_restart_finishes_every_job_exactly_once(
        reeld_factory, fake_kling, tmp_path):
    art = tmp_path / "artifacts"
    # ~1.2 s at Kling: jobs pile up there. The account's concurrency is not the subject here.
    fake_kling.control(queued_ms=200, processing_ms=1000, concurrency_limit=100)
    srv = ri.kling_reeld(reeld_factory, "crash-load", fake_kling.url, art, workers=4,
                         sim_stage_ms=100, lease_seconds=2, concurrency=100)
    n = 20
    users = [ri.unique(f"load{u}") for u in range(4)]
    reqs = [ri.create_request(users[i % len(users)], text=f"crash load job {i} {ri.unique('t')}")
            for i in range(n)]
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        jobs = list(ex.map(lambda r: srv.stub.CreateJob(r, timeout=ri.DEFAULT_TIMEOUT), reqs))
    ids = [j.id for j in jobs]
    assert len(set(ids)) == n

    # Once a few tasks have finished at Kling, the ones still in flight are held there (`stuck`)
    # until after the restart, so that the kill finds jobs done, post-processing, waiting at
    # Kling for a task already paid for, and queued.
    deadline = time.monotonic() + 60
    while sum(t["status"] == "succeed" for t in fake_kling.stats()["tasks"]) < 4:
        assert time.monotonic() < deadline, f"Kling finished no 4 tasks in 60 s: {ri.kling_stats(fake_kling)}"
        time.sleep(0.02)
    fake_kling.control(stuck=True)

    # Kill once a few jobs are done and the rest are queued or in flight.
    deadline = time.monotonic() + 90
    while True:
        done_n = int(ri.psql_value(srv.db_url, "SELECT count(*) FROM jobs WHERE status = 'final_ready'"))
        if done_n >= 3:
            break
        assert time.monotonic() < deadline, f"only {done_n} jobs done after 90 s\n{srv.log_tail(40)}"
        time.sleep(0.05)
    srv.proc.kill()
    srv.proc.wait(10)
    at_kill = ri.psql_value(srv.db_url, "SELECT status || '/' || stage || ':' || count(*) FROM jobs "
                                        "GROUP BY status, stage ORDER BY 1").replace("\n", ", ")
    unfinished = int(ri.psql_value(srv.db_url, "SELECT count(*) FROM jobs WHERE status <> 'final_ready'"))
    kling_at_kill = {}
    for t in fake_kling.stats()["tasks"]:
        kling_at_kill[t["status"]] = kling_at_kill.get(t["status"], 0) + 1
    print(f"jobs by status at SIGKILL: {at_kill}; Kling tasks by status: {kling_at_kill}")
    assert unfinished > 0, f"every job had finished before the kill ({at_kill})"
    assert kling_at_kill.get("processing", 0) + kling_at_kill.get("submitted", 0) > 0, (
        f"no Kling task was in flight at the kill ({at_kill}; Kling: {kling_at_kill})")

    srv.start()
    fake_kling.control(stuck=False)
    deadline = time.monotonic() + 120
    while True:
        left = ri.psql_value(srv.db_url, "SELECT id || ' ' || status FROM jobs WHERE status <> 'final_ready'")
        if not left:
            break
        bad = [ln for ln in left.splitlines() if ln.split()[1] in ("failed", "cancelled")]
        if bad or time.monotonic() > deadline:
            raise AssertionError(
                f"after the restart (at SIGKILL: {at_kill}) jobs did not finish:\n{left}\n"
                + "\n".join(ri.stored_history(srv.db_url, ln.split()[0])
                            for ln in left.splitlines()[:5]))
        time.sleep(0.2)

    st = fake_kling.stats()
    segs = dict(line.split("|") for line in ri.psql_value(
        srv.db_url, "SELECT job_id, count(*) FROM segments GROUP BY job_id").splitlines())
    finals = dict(line.split("|") for line in ri.psql_value(
        srv.db_url, "SELECT job_id, count(*) FROM job_events WHERE status = 'final_ready' "
                    "GROUP BY job_id").splitlines())
    problems = []
    for j in jobs:
        done = srv.stub.GetJob(pb.GetJobRequest(id=j.id), timeout=ri.DEFAULT_TIMEOUT)
        replay = ri.watch(srv.stub, j.id, after_seq=1, timeout=15)
        n_final = sum(e.status == S.JOB_STATUS_FINAL_READY for e in replay)
        mine = ri.kling_tasks_of(st, j.id)
        why = []
        if done.status != S.JOB_STATUS_FINAL_READY:
            why.append(f"status {ri.status_name(done.status)}")
        if segs.get(j.id) != "1":
            why.append(f"{segs.get(j.id, 0)} segments")
        if finals.get(j.id) != "1" or n_final != 1:
            why.append(f"{finals.get(j.id, 0)} stored / {n_final} replayed FINAL_READY events")
        if [e.seq for e in replay] != list(range(2, done.last_event_seq + 1)):
            why.append("event seqs not contiguous")
        if len(mine) != 1:
            why.append(f"{len(mine)} Kling tasks: {[(t['task_id'], t['external_task_id']) for t in mine]}")
        elif done.artifacts.provider_job_id != mine[0]["task_id"]:
            why.append(f"provider_job_id {done.artifacts.provider_job_id!r} is not its Kling task "
                       f"{mine[0]['task_id']}")
        if not (art / j.id / "final.mp4").is_file():
            why.append("no final.mp4")
        if why:
            problems.append(f"{j.id}: {', '.join(why)}\n{ri.stored_history(srv.db_url, j.id)}")
    assert not problems, "\n".join(problems)
    assert st["creates_ok"] == n, (
        f"{st['creates_ok']} Kling tasks for {n} jobs (at SIGKILL: {at_kill}): {ri.kling_stats(fake_kling)}")
    assert {ext.rsplit("-", 1)[0][len("reel-"):] for ext in st["creates_by_external_id"]} == set(ids), (
        ri.kling_stats(fake_kling))
    resubmitted = {k: v for k, v in st["creates_by_external_id"].items() if v > 1}
    print(f"submits repeated (refused by Kling for the external_task_id, then looked up): {resubmitted}")
    r = ri.fault_report("SIGKILL of reeld under load, then restart", srv.db_url, ids)
    assert (r["lost"], r["duplicated"], r["completed"]) == (0, 0, n), r
