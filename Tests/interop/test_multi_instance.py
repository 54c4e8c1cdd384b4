"""Several reeld processes on one database (issue #6, item 1): claims never hand one job to
two workers, and events reach every process's watchers through LISTEN/NOTIFY."""

import concurrent.futures as cf
import threading
import time

import grpc

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
    r = ri.fault_report("three reeld on one database", first.db_url, [j.id for j in jobs])
    assert (r["lost"], r["duplicated"], r["completed"]) == (0, 0, 45), r


def test_sigkill_of_one_of_three_instances_under_load_loses_and_duplicates_nothing(reeld_factory):
    """One of three reeld is killed while all three run jobs and take creates; the two left
    finish its jobs once its leases run out (no restart), and every acknowledged job runs to
    completion exactly once."""
    first = reeld_factory("kill3-0", workers=2, sim_stage_ms=150, lease_seconds=2)
    servers = [first] + [reeld_factory(f"kill3-{i}", db_url=first.db_url, workers=2, sim_stage_ms=150, lease_seconds=2)
                         for i in (1, 2)]
    victim = servers[2]
    user = ri.unique("kill3")
    acked, lock = [], threading.Lock()
    stop = threading.Event()

    def load(k):
        i = 0
        while not stop.is_set() and i < 40:
            srv = servers[(k + i) % 3]
            i += 1
            if srv is victim and victim.proc.poll() is not None:
                continue
            try:
                job = srv.stub.CreateJob(ri.create_request(user, text=f"k{k} {i}"), timeout=5)
                with lock:
                    acked.append(job.id)
            except grpc.RpcError:
                pass  # the victim's calls fail once it is dead: not acknowledged
            time.sleep(0.03)

    threads = [threading.Thread(target=load, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while True:  # kill the victim while it holds running jobs, once there is load to speak of
        held = int(ri.psql_value(first.db_url, f"SELECT count(*) FROM jobs WHERE worker_id LIKE 'reeld-%-{victim.proc.pid}-%' "
                                               "AND status NOT IN ('queued', 'final_ready', 'failed', 'cancelled')"))
        with lock:
            n_acked = len(acked)
        if held > 0 and n_acked >= 15:
            break
        assert time.monotonic() < deadline, "the victim never ran a job"
        time.sleep(0.05)
    victim.proc.kill()
    victim.proc.wait(10)
    time.sleep(1.5)  # creates go on at the two left
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) >= 20, f"too little load to mean anything: {len(acked)} acknowledged"
    for job_id in acked:
        ri.wait_for_job(first.stub, job_id, timeout=120)
    r = ri.fault_report("SIGKILL of one of three reeld under load", first.db_url, acked)
    assert (r["lost"], r["duplicated"], r["completed"]) == (0, 0, len(acked)), r
    requeued = ri.psql_value(first.db_url, "SELECT count(*) FROM job_events WHERE message LIKE 'lease of %expired%'")
    assert int(requeued) >= 1, "no job of the victim's was requeued after its lease expired"
