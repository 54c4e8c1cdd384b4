"""Delayed jobs (issue #17 item 5, DESIGN §2 `run_at_unix_ms`): never started before their time,
started soon after it (the scheduler wakes for the earliest), cancellable while they wait,
listed with their run time over gRPC, HTTP and reelctl, and thousands of them waiting don't
slow the claim of a ready job."""

import json
import os
import subprocess
import time

import grpc
import pytest

import reel_interop as ri
import reel_web as web
from reel_interop import pb


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def srv(reeld_factory):
    return reeld_factory("delayed", workers=2, sim_stage_ms=10, http=True)


def reelctl(srv, *args):
    return subprocess.run([os.path.join(os.environ["REEL_BIN_DIR"], "reelctl"), "--address", srv.target, *args],
                          capture_output=True, text=True, timeout=30)


def test_a_delayed_job_starts_at_its_time_and_not_before(srv):
    run_at = now_ms() + 2500
    job = srv.stub.CreateJob(ri.create_request(ri.unique("later"), run_at_unix_ms=run_at), timeout=ri.DEFAULT_TIMEOUT)
    assert job.status == pb.JOB_STATUS_QUEUED and job.run_at_unix_ms == run_at, ri.describe_job(job)
    # A job created after it, to run now, is not held up by it.
    now_job = srv.stub.CreateJob(ri.create_request(ri.unique("now")), timeout=ri.DEFAULT_TIMEOUT)
    ri.wait_for_job(srv.stub, now_job.id, timeout=30)
    waiting = srv.stub.GetJob(pb.GetJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    assert waiting.status == pb.JOB_STATUS_QUEUED and waiting.started_at_unix_ms == 0, ri.describe_job(waiting)
    done = ri.wait_for_job(srv.stub, job.id, timeout=30)
    assert done.started_at_unix_ms >= run_at, f"started {run_at - done.started_at_unix_ms} ms early"
    # The scheduler sleeps until the earliest delayed job is due; 1.5 s leaves room for a busy machine.
    lag = done.started_at_unix_ms - run_at
    assert lag < 1500, f"started {lag} ms after its run time"
    print(f"delayed job started {lag} ms after its run time")


def test_a_waiting_job_is_cancelled_at_once_and_leaves_the_queue(srv):
    job = srv.stub.CreateJob(ri.create_request(ri.unique("cancel"), run_at_unix_ms=now_ms() + 60_000),
                             timeout=ri.DEFAULT_TIMEOUT)
    assert ri.psql_value(srv.db_url, f"SELECT waiting FROM job_queue WHERE job_id = '{job.id}'") == "t"
    got = srv.stub.CancelJob(pb.CancelJobRequest(id=job.id, reason="not needed"), timeout=ri.DEFAULT_TIMEOUT)
    assert got.status == pb.JOB_STATUS_CANCELLED and got.run_at_unix_ms == job.run_at_unix_ms, ri.describe_job(got)
    assert ri.psql_value(srv.db_url, f"SELECT count(*) FROM job_queue WHERE job_id = '{job.id}'") == "0"
    err = ri.rpc_error(srv.stub.CancelJob, pb.CancelJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    ri.assert_code(err, grpc.StatusCode.FAILED_PRECONDITION)


def test_run_time_is_listed_over_grpc_http_and_reelctl(srv):
    user = ri.unique("listed")
    run_at = now_ms() + 3_600_000
    job = srv.stub.CreateJob(ri.create_request(user, run_at_unix_ms=run_at), timeout=ri.DEFAULT_TIMEOUT)
    listed = srv.stub.ListJobs(pb.ListJobsRequest(user_id=user), timeout=ri.DEFAULT_TIMEOUT).jobs
    assert [(j.id, j.run_at_unix_ms, j.status) for j in listed] == [(job.id, run_at, pb.JOB_STATUS_QUEUED)]
    got = web.call(srv.http_url, "GET", f"/v1/jobs/{job.id}").json
    assert int(got["runAtUnixMs"]) == run_at, got
    page = web.call(srv.http_url, "GET", f"/v1/jobs?user_id={user}").json
    assert [int(j["runAtUnixMs"]) for j in page["jobs"]] == [run_at], page
    # Over HTTP the create takes the run time too.
    made = web.create_job(srv.http_url, user, runAtUnixMs=str(run_at + 1000))
    assert int(made["runAtUnixMs"]) == run_at + 1000 and made["status"] == "JOB_STATUS_QUEUED", made

    # reelctl: --delay and --run-at, shown by get, list (RUN AT column) and --json.
    r = reelctl(srv, "--json", "create", "--user-id", user, "--scene-id", "s", "--type", "continuation",
                "--text", "in ten minutes", "--delay", "10m")
    assert r.returncode == 0, r.stderr
    delayed = json.loads(r.stdout)
    assert abs(int(delayed["runAtUnixMs"]) - (now_ms() + 600_000)) < 30_000, delayed
    r = reelctl(srv, "create", "--user-id", user, "--scene-id", "s", "--type", "continuation",
                "--text", "at christmas", "--run-at", "2026-12-24T18:00:00Z")
    if now_ms() < 1798135200000:
        assert r.returncode == 0, r.stderr
        assert "run at:" in r.stdout and "2026-12-24T18:00:00" in r.stdout, r.stdout
    r = reelctl(srv, "list", "--user-id", user)
    assert r.returncode == 0, r.stderr
    header, *rows = r.stdout.splitlines()
    assert "RUN AT" in header and header.index("RUN AT") > header.index("CREATED"), header
    row = next(l for l in rows if l.startswith(job.id))
    assert time.strftime("%Y-%m-%dT%H:%M", time.gmtime(run_at / 1000)) in row, row
    r = reelctl(srv, "create", "--user-id", user, "--scene-id", "s", "--type", "continuation",
                "--text", "x", "--delay", "soon")
    assert r.returncode == 2 and "--delay" in r.stderr, r


def test_run_time_more_than_a_year_ahead_is_invalid(srv):
    req = ri.create_request(ri.unique("far"), run_at_unix_ms=now_ms() + 400 * 86_400_000)
    err = ri.rpc_error(srv.stub.CreateJob, req, timeout=ri.DEFAULT_TIMEOUT)
    ri.assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, mentions="run_at_unix_ms")


def test_thousands_of_waiting_jobs_do_not_slow_a_ready_one(srv):
    later = now_ms() + 3_600_000
    for _ in range(3):
        items = [ri.create_request(ri.unique("waits"), run_at_unix_ms=later) for _ in range(1000)]
        r = srv.stub.CreateJobs(pb.CreateJobsRequest(jobs=items), timeout=60)
        assert all(x.HasField("job") for x in r.results)
    assert ri.psql_value(srv.db_url, "SELECT count(*) FROM job_queue WHERE waiting") == "3000"
    t0 = time.monotonic()
    job = srv.stub.CreateJob(ri.create_request(ri.unique("ready")), timeout=ri.DEFAULT_TIMEOUT)
    done = ri.wait_for_job(srv.stub, job.id, timeout=30)
    assert done.status == pb.JOB_STATUS_FINAL_READY
    assert time.monotonic() - t0 < 10
    assert ri.psql_value(srv.db_url, "SELECT count(*) FROM job_queue WHERE waiting") == "3000"
