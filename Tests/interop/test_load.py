"""Concurrency a stock client produces easily (DESIGN §1: many streams, many connections)."""

import time

import grpc

import reel_interop as ri
from reel_interop import pb


def test_2000_concurrent_get_job_calls_on_one_channel(reeld):
    stub = reeld.stub
    job = stub.CreateJob(ri.create_request(ri.unique("loadget")), timeout=ri.DEFAULT_TIMEOUT)
    start = time.monotonic()
    futures = [stub.GetJob.future(pb.GetJobRequest(id=job.id), timeout=60) for _ in range(2000)]
    failures = []
    for f in futures:
        try:
            assert f.result().id == job.id
        except grpc.RpcError as e:
            failures.append(f"{e.code().name}: {e.details()}")
    elapsed = time.monotonic() - start
    assert not failures, (f"{len(failures)} of 2000 GetJob calls failed, e.g. "
                          f"{sorted(set(failures))[:5]}")
    print(f"2000 GetJob on one channel: {elapsed:.2f}s")


def test_100_connections_each_create_and_get(reeld):
    user = ri.unique("loadconn")
    channels = [grpc.insecure_channel(reeld.target,
                                      options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(100)]
    ids = []
    try:
        stubs = [ri.pb_grpc.JobServiceStub(c) for c in channels]
        creates = [s.CreateJob.future(ri.create_request(user, text=f"conn {i}"), timeout=60)
                   for i, s in enumerate(stubs)]
        failures = []
        jobs = []
        for f in creates:
            try:
                jobs.append(f.result())
            except grpc.RpcError as e:
                failures.append(f"CreateJob {e.code().name}: {e.details()}")
        ids = [j.id for j in jobs]
        assert not failures, f"{len(failures)} of 100 failed, e.g. {sorted(set(failures))[:5]}"
        assert len(set(ids)) == 100
        gets = [s.GetJob.future(pb.GetJobRequest(id=j.id), timeout=60) for s, j in zip(stubs, jobs)]
        for f, j in zip(gets, jobs):
            try:
                assert f.result().id == j.id
            except grpc.RpcError as e:
                failures.append(f"GetJob {e.code().name}: {e.details()}")
        assert not failures, f"{len(failures)} of 100 failed, e.g. {sorted(set(failures))[:5]}"
    finally:
        for c in channels:
            c.close()
        ri.cancel_quietly(reeld.stub, ids)
