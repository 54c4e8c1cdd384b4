"""Several reeld processes on one database (issue #6, item 1): claims never hand one job to
two workers, and events reach every process's watchers through LISTEN/NOTIFY."""

import concurrent.futures as cf

import reel_interop as ri
from reel_interop import pb


def test_a_watcher_on_one_instance_sees_a_job_run_by_another(reeld_factory):
    api = reeld_factory("api-only", workers=0)                  # serves RPCs, runs nothing
    runner = reeld_factory("runner", db_url=api.db_url, workers=2, sim_stage_ms=30)
    job = api.stub.CreateJob(ri.create_request(ri.unique("xproc")), timeout=ri.DEFAULT_TIMEOUT)
    events = ri.watch(api.stub, job.id, timeout=60)
    seqs = [e.seq for e in events]
    # The snapshot carries the job as it is (seq = its last_event_seq); then every later event.
    assert events[0].HasField("snapshot") and events[0].seq == events[0].snapshot.last_event_seq
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"missed or repeated events: {seqs}"
    assert events[-1].status == pb.JOB_STATUS_FINAL_READY, [ri.describe_event(e) for e in events]
    assert any(e.stage == pb.STAGE_VIDEO_GENERATION for e in events), "live events, not only the end"
    done = api.stub.GetJob(pb.GetJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    assert done.worker_id.startswith("reeld-") and done.last_event_seq == seqs[-1]
    assert runner.stub.GetJob(pb.GetJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT).status == pb.JOB_STATUS_FINAL_READY


def test_three_instances_under_load_run_every_job_exactly_once(reeld_factory):
    first = reeld_factory("multi-0", workers=2, sim_stage_ms=10)
    servers = [first] + [reeld_factory(f"multi-{i}", db_url=first.db_url, workers=2, sim_stage_ms=10) for i in (1, 2)]
    user = ri.unique("multi")
    with cf.ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(servers[i % 3].stub.CreateJob, ri.create_request(user, text=f"load {i}"),
                               timeout=ri.DEFAULT_TIMEOUT) for i in range(45)]
        jobs = [f.result() for f in futures]
    assert len({j.id for j in jobs}) == 45
    done = [ri.wait_for_job(servers[i % 3].stub, j.id, timeout=120) for i, j in enumerate(jobs)]
    workers = {d.worker_id for d in done}
    assert len(workers) >= 2, f"one instance ran everything: {workers}"
    ids = "','".join(j.id for j in jobs)
    finals = ri.psql_value(first.db_url, f"SELECT count(*) FROM job_events WHERE job_id IN ('{ids}') AND status = 'final_ready'")
    segments = ri.psql_value(first.db_url, f"SELECT count(*) FROM segments WHERE job_id IN ('{ids}')")
    claims = ri.psql_value(first.db_url, f"SELECT count(*) FROM job_events WHERE job_id IN ('{ids}') AND status = 'processing' AND message LIKE 'claimed by %'")
    assert (finals, segments, claims) == ("45", "45", "45"), f"final_ready {finals}, segments {segments}, claims {claims}"
