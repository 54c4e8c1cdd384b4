"""Crash, shutdown and start-up behaviour of reeld (DESIGN §4, §6, §8).

Each test runs private reeld instances on a database of its own.
"""

import signal
import subprocess
import time

import grpc

import reel_interop as ri
from reel_interop import pb


def test_acknowledged_jobs_survive_sigkill_and_complete_after_restart(reeld_factory):
    srv = reeld_factory("durable", workers=4, sim_stage_ms=500, lease_seconds=3)
    stub = srv.stub
    user = ri.unique("durable")
    in_flight = stub.CreateJob(ri.create_request(user, text="mid-flight when killed"),
                               timeout=ri.DEFAULT_TIMEOUT)
    running = ri.wait_until_running(stub, in_flight.id, timeout=30)
    just_acked = stub.CreateJob(ri.create_request(user, text="acknowledged, then killed"),
                                timeout=ri.DEFAULT_TIMEOUT)
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)

    srv.start()  # same arguments, same port, same database
    stub = srv.stub
    for created in (in_flight, just_acked):
        got = stub.GetJob(pb.GetJobRequest(id=created.id), timeout=ri.DEFAULT_TIMEOUT)
        assert got.id == created.id and got.input_text == created.input_text
        assert got.created_at_unix_ms == created.created_at_unix_ms
    assert running.last_event_seq >= 2

    for created in (in_flight, just_acked):
        done = ri.wait_for_job(stub, created.id, timeout=60)
        assert done.progress == 100 and done.result.video_url, ri.describe_job(done)
        history = ri.watch(stub, created.id, after_seq=1, timeout=10)
        seqs = [e.seq for e in history]
        assert seqs == list(range(2, done.last_event_seq + 1)), (
            f"event history has gaps or duplicates after the crash: {seqs}")
        assert history[-1].status == pb.JOB_STATUS_FINAL_READY
        assert sum(e.status == pb.JOB_STATUS_FINAL_READY for e in history) == 1


def test_sigterm_ends_watch_streams_and_exits_zero_and_work_resumes(reeld_factory):
    srv = reeld_factory("sigterm", workers=2, sim_stage_ms=1000, lease_seconds=3)
    stub = srv.stub
    job = stub.CreateJob(ri.create_request(ri.unique("sigterm")), timeout=ri.DEFAULT_TIMEOUT)
    ri.wait_until_running(stub, job.id, timeout=30)
    watcher = ri.Watcher(stub, job.id, after_seq=0, timeout=60)
    watcher.start()
    assert watcher.first_event.wait(10)

    srv.proc.send_signal(signal.SIGTERM)
    try:
        rc = srv.proc.wait(15)
    except subprocess.TimeoutExpired:
        srv.kill()
        raise AssertionError("reeld did not exit within 15 s of SIGTERM")
    assert rc == 0, f"reeld exited with {rc} after SIGTERM"
    watcher.finish(10)
    if watcher.error is not None:
        ri.assert_code(watcher.error, grpc.StatusCode.UNAVAILABLE, what="open watch at SIGTERM")
    else:  # it finished the job before exiting: the stream must have ended on it
        assert watcher.events[-1].status == pb.JOB_STATUS_FINAL_READY, (
            [ri.describe_event(e) for e in watcher.events])

    srv.start()
    done = ri.wait_for_job(srv.stub, job.id, timeout=60)
    assert done.progress == 100


def test_unreachable_database_fails_fast_with_an_error(reeld_factory):
    closed = ri.free_port()
    srv = reeld_factory("nodb", db_url=f"postgresql://postgres@127.0.0.1:{closed}/reel",
                        start=False)
    start = time.monotonic()
    r = subprocess.run(srv.args, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - start
    out = (r.stdout + r.stderr).strip()
    assert r.returncode != 0, f"reeld exited 0 without a database:\n{out[-2000:]}"
    assert elapsed < 30, f"reeld took {elapsed:.1f}s to give up on an unreachable database"
    assert out, "reeld said nothing about the unreachable database"
