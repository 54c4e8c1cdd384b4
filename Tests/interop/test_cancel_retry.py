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
