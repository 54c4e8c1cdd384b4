"""CancelJob and RetryJob preconditions (DESIGN §2, §3).

Uses `slow_reeld` (1 worker, 3 s stages): while one job runs, the next one stays QUEUED.
"""

import grpc

import reel_interop as ri
from reel_interop import pb

PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def test_cancel_of_a_queued_job_cancels_it_at_once_and_ends_its_watch(slow_reeld):
    stub = slow_reeld.stub
    user = ri.unique("cancelq")
    blocker = stub.CreateJob(ri.create_request(user, text="blocker"), timeout=ri.DEFAULT_TIMEOUT)
    try:
        ri.wait_until_running(stub, blocker.id, timeout=60)
        queued = stub.CreateJob(ri.create_request(user, text="waits its turn"),
                                timeout=ri.DEFAULT_TIMEOUT)
        assert queued.status == pb.JOB_STATUS_QUEUED

        watcher = ri.Watcher(stub, queued.id, after_seq=0, timeout=30)
        watcher.start()
        assert watcher.first_event.wait(10), "no snapshot event within 10 s"

        cancelled = stub.CancelJob(pb.CancelJobRequest(id=queued.id, reason="changed my mind"),
                                   timeout=ri.DEFAULT_TIMEOUT)
        assert cancelled.status == pb.JOB_STATUS_CANCELLED, (
            f"a queued job is cancelled at once: {ri.describe_job(cancelled)}")
        assert cancelled.last_event_seq > queued.last_event_seq

        events = watcher.finish(15)
        assert watcher.error is None, f"{watcher.error.code().name}: {watcher.error.details()}"
        assert events[-1].status == pb.JOB_STATUS_CANCELLED, [ri.describe_event(e) for e in events]
        assert events[-1].seq == cancelled.last_event_seq

        got = stub.GetJob(pb.GetJobRequest(id=queued.id), timeout=ri.DEFAULT_TIMEOUT)
        assert got.status == pb.JOB_STATUS_CANCELLED
        after = ri.watch(stub, queued.id, after_seq=0, timeout=10)
        assert len(after) == 1 and after[0].status == pb.JOB_STATUS_CANCELLED, (
            [ri.describe_event(e) for e in after])

        err = ri.rpc_error(stub.CancelJob, pb.CancelJobRequest(id=queued.id),
                           timeout=ri.DEFAULT_TIMEOUT)
        ri.assert_code(err, PRECONDITION, what="second CancelJob")
        err = ri.rpc_error(stub.RetryJob, pb.RetryJobRequest(id=queued.id),
                           timeout=ri.DEFAULT_TIMEOUT)
        ri.assert_code(err, PRECONDITION, what="RetryJob of a CANCELLED job")
        again = stub.GetJob(pb.GetJobRequest(id=queued.id), timeout=ri.DEFAULT_TIMEOUT)
        assert again.last_event_seq == cancelled.last_event_seq, "a refused call changed the job"
    finally:
        ri.cancel_quietly(stub, [blocker.id])


def test_cancel_of_a_running_job_stops_it_and_ends_its_watch(slow_reeld):
    stub = slow_reeld.stub
    job = stub.CreateJob(ri.create_request(ri.unique("cancelr")), timeout=ri.DEFAULT_TIMEOUT)
    try:
        running = ri.wait_until_running(stub, job.id, timeout=60)
        err = ri.rpc_error(stub.RetryJob, pb.RetryJobRequest(id=job.id),
                           timeout=ri.DEFAULT_TIMEOUT)
        ri.assert_code(err, PRECONDITION,
                       what=f"RetryJob of a {ri.status_name(running.status)} job")

        watcher = ri.Watcher(stub, job.id, after_seq=0, timeout=60)
        watcher.start()
        assert watcher.first_event.wait(10), "no snapshot event within 10 s"
        resp = stub.CancelJob(pb.CancelJobRequest(id=job.id, reason="stop"),
                              timeout=ri.DEFAULT_TIMEOUT)
        assert resp.status != pb.JOB_STATUS_FINAL_READY, ri.describe_job(resp)

        events = watcher.finish(30)
        assert watcher.error is None, f"{watcher.error.code().name}: {watcher.error.details()}"
        assert events[-1].status == pb.JOB_STATUS_CANCELLED, [ri.describe_event(e) for e in events]
        final = ri.wait_for_job(stub, job.id, want=(pb.JOB_STATUS_CANCELLED,), timeout=10)
        assert final.last_event_seq == events[-1].seq

        err = ri.rpc_error(stub.CancelJob, pb.CancelJobRequest(id=job.id),
                           timeout=ri.DEFAULT_TIMEOUT)
        ri.assert_code(err, PRECONDITION, what="CancelJob of a CANCELLED job")
    finally:
        ri.cancel_quietly(stub, [job.id])


def test_retry_of_a_queued_job_fails_precondition(slow_reeld):
    stub = slow_reeld.stub
    user = ri.unique("retryq")
    blocker = stub.CreateJob(ri.create_request(user, text="blocker"), timeout=ri.DEFAULT_TIMEOUT)
    queued = None
    try:
        ri.wait_until_running(stub, blocker.id, timeout=60)
        queued = stub.CreateJob(ri.create_request(user, text="queued"), timeout=ri.DEFAULT_TIMEOUT)
        err = ri.rpc_error(stub.RetryJob, pb.RetryJobRequest(id=queued.id),
                           timeout=ri.DEFAULT_TIMEOUT)
        ri.assert_code(err, PRECONDITION, what="RetryJob of a QUEUED job")
    finally:
        ri.cancel_quietly(stub, [blocker.id] + ([queued.id] if queued else []))


def test_cancel_of_a_final_ready_job_fails_precondition_and_changes_nothing(stub):
    job = stub.CreateJob(ri.create_request(ri.unique("cancelf")), timeout=ri.DEFAULT_TIMEOUT)
    done = ri.wait_for_job(stub, job.id)
    err = ri.rpc_error(stub.CancelJob, pb.CancelJobRequest(id=job.id),
                       timeout=ri.DEFAULT_TIMEOUT)
    ri.assert_code(err, PRECONDITION, what="CancelJob of a FINAL_READY job")
    after = stub.GetJob(pb.GetJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    assert after.status == pb.JOB_STATUS_FINAL_READY
    assert after.last_event_seq == done.last_event_seq


def test_retry_of_a_final_ready_job_fails_precondition(stub):
    job = stub.CreateJob(ri.create_request(ri.unique("retryf")), timeout=ri.DEFAULT_TIMEOUT)
    ri.wait_for_job(stub, job.id)
    err = ri.rpc_error(stub.RetryJob, pb.RetryJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    ri.assert_code(err, PRECONDITION, what="RetryJob of a FINAL_READY job")


def test_failing_job_retries_then_dead_letters_and_retry_job_requeues_it(reeld_factory):
    """A provider that always fails: the job is retried max_retries times with backoff, then
    dead-lettered (listed by dead_lettered_only, its watch ends); RetryJob puts it back."""
    srv = reeld_factory("deadletter", workers=2, sim_stage_ms=20, extra_args=("--retry-base-ms", "50"))
    stub = srv.stub
    user = ri.unique("dlq")
    job = stub.CreateJob(ri.create_request(user, max_retries=2,
                                           config=pb.JobConfig(model="simulated-failure")),
                         timeout=ri.DEFAULT_TIMEOUT)
    events = ri.watch(stub, job.id, timeout=60)  # ends only at the dead-lettered FAILED
    last = events[-1]
    assert last.status == pb.JOB_STATUS_FAILED and last.dead_lettered, ri.describe_event(last)
    failed = [e for e in events if e.status == pb.JOB_STATUS_FAILED]
    assert len(failed) == 3, [ri.describe_event(e) for e in events]
    assert all(not e.dead_lettered for e in failed[:-1])
    requeued = [e for e in events if e.status == pb.JOB_STATUS_QUEUED and e.seq > 1]
    assert len(requeued) == 2, "one requeue per retry"

    dead = stub.GetJob(pb.GetJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    assert dead.dead_lettered and dead.retry_count == 2 and dead.error.code == "PROVIDER_FAILED"
    assert dead.error.stage == pb.STAGE_VIDEO_GENERATION
    listed = stub.ListJobs(pb.ListJobsRequest(user_id=user, dead_lettered_only=True),
                           timeout=ri.DEFAULT_TIMEOUT)
    assert [j.id for j in listed.jobs] == [job.id]

    again = stub.RetryJob(pb.RetryJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    assert again.status == pb.JOB_STATUS_QUEUED and not again.dead_lettered
    assert again.retry_count == 0 and again.last_event_seq == dead.last_event_seq + 1
    listed = stub.ListJobs(pb.ListJobsRequest(user_id=user, dead_lettered_only=True),
                           timeout=ri.DEFAULT_TIMEOUT)
    assert list(listed.jobs) == []
