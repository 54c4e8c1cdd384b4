"""CreateJobs (DESIGN §2, added 2026-12-04): up to 1,000 creates in one call and one commit,
per-item results in request order; one bad item fails alone; idempotency as for CreateJob."""

from __future__ import annotations

import grpc

import reel_interop as ri
from reel_interop import pb


def test_many_creates_answer_in_order_and_a_bad_item_fails_alone(reeld, stub):
    user = ri.unique("batch")
    items = [
        ri.create_request(user, text="first of the batch"),
        ri.create_request("", text="no user"),                      # INVALID_ARGUMENT, alone
        ri.create_request(user, text="third", idempotency_key="k-1"),
        ri.create_request(user, text="fourth", idempotency_key="k-1"),  # same key: the third's job
        ri.create_request(user, text="x" * 10_001),                 # over the text limit
        ri.create_request(user, text="sixth", tier=pb.TIER_PREMIUM),
    ]
    r = stub.CreateJobs(pb.CreateJobsRequest(jobs=items), timeout=ri.DEFAULT_TIMEOUT)
    assert len(r.results) == len(items)
    ok = [i for i, x in enumerate(r.results) if x.HasField("job")]
    assert ok == [0, 2, 3, 5], [(x.code, x.message) for x in r.results]
    for i in (1, 4):
        assert r.results[i].code == grpc.StatusCode.INVALID_ARGUMENT.value[0], r.results[i]
        assert r.results[i].message.startswith(f"jobs[{i}]."), r.results[i].message
    assert "user_id" in r.results[1].message and "input_text" in r.results[4].message
    assert r.results[0].job.input_text == "first of the batch"
    assert r.results[2].job.id == r.results[3].job.id, "one idempotency key, one job"
    assert r.results[5].job.tier == pb.TIER_PREMIUM
    created = {r.results[i].job.id for i in ok}
    assert len(created) == 3
    for x in (r.results[i] for i in ok):
        assert x.code == 0 and x.job.status == pb.JOB_STATUS_QUEUED and x.job.last_event_seq == 1
    # Each is stored with its event seq 1, runs, and a repeat of the batch creates nothing new.
    for job_id in created:
        done = ri.wait_for_job(stub, job_id, timeout=60)
        assert done.status == pb.JOB_STATUS_FINAL_READY, ri.describe_job(done)
    again = stub.CreateJobs(pb.CreateJobsRequest(jobs=[items[2]]), timeout=ri.DEFAULT_TIMEOUT)
    assert again.results[0].job.id == r.results[2].job.id
    count = ri.psql_value(reeld.db_url, f"SELECT count(*) FROM jobs WHERE user_id = '{user}'")
    assert count == "3", count
    events = ri.psql_value(reeld.db_url, f"""SELECT count(*) FROM job_events e JOIN jobs j ON j.id = e.job_id
                                            WHERE j.user_id = '{user}' AND e.seq = 1""")
    assert events == "3", events


def test_a_thousand_creates_share_one_call_and_more_are_refused(reeld_factory):
    # No workers: the thousand jobs stay queued and keep no one busy.
    srv = reeld_factory("bulk", workers=0)
    stub = srv.stub
    user = ri.unique("thousand")
    items = [ri.create_request(f"{user}-{i % 10}", text=f"bulk {i}") for i in range(1000)]
    r = stub.CreateJobs(pb.CreateJobsRequest(jobs=items), timeout=60)
    assert len(r.results) == 1000 and all(x.HasField("job") for x in r.results)
    assert len({x.job.id for x in r.results}) == 1000
    assert [x.job.input_text for x in r.results] == [f"bulk {i}" for i in range(1000)], "answers in request order"
    count = ri.psql_value(srv.db_url, f"SELECT count(*) FROM jobs WHERE user_id LIKE '{user}-%'")
    assert count == "1000", count
    err = ri.rpc_error(stub.CreateJobs, pb.CreateJobsRequest(jobs=items + items[:1]), timeout=60)
    ri.assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, mentions="at most 1000")
    err = ri.rpc_error(stub.CreateJobs, pb.CreateJobsRequest(jobs=[]), timeout=10)
    ri.assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, mentions="jobs")
