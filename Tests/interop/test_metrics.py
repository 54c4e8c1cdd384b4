"""Prometheus metrics, health following the database, and structured logs (issue #5).

reeld serves /metrics and /healthz on --metrics-listen (the fixtures always pass one).
"""

import json
import time
import urllib.error
import urllib.request

import grpc

import reel_interop as ri
from reel_interop import pb, health_pb2



def value(samples, name, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples, name, **labels) -> float:
    """Sum over every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_metrics_move_as_jobs_run(reeld_factory):
    srv = reeld_factory("metrics", workers=2, sim_stage_ms=20)
    stub = srv.stub
    before = ri.scrape(srv)
    user = ri.unique("metrics")
    jobs = [stub.CreateJob(ri.create_request(user, text=f"metrics {i}",
                                             tier=pb.TIER_PREMIUM if i == 0 else pb.TIER_STANDARD),
                           timeout=ri.DEFAULT_TIMEOUT) for i in range(3)]
    ri.rpc_error(stub.CreateJob, pb.CreateJobRequest(user_id="", scene_id="s", type=1, input_text="x"),
                 timeout=ri.DEFAULT_TIMEOUT)
    for j in jobs:
        ri.wait_for_job(stub, j.id)
    cancelled = stub.CreateJob(ri.create_request(user, text="to cancel"), timeout=ri.DEFAULT_TIMEOUT)
    stub.CancelJob(pb.CancelJobRequest(id=cancelled.id), timeout=ri.DEFAULT_TIMEOUT)
    time.sleep(1.5)  # gauges refresh every second
    after = ri.scrape(srv)

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("reel_jobs_created_total", type="scene_creation", priority="premium") == 1
    assert delta("reel_jobs_created_total", type="scene_creation", priority="standard") == 3
    assert delta("reel_jobs_completed_total", status="final_ready") == 3
    assert delta("reel_jobs_completed_total", status="cancelled") in (0, 1)  # 1 unless it finished first
    assert delta("reel_job_duration_seconds_count", stage="completed") == 3
    # Every job that ended is timed, by the stage it ended in: the cancelled one too, if the cancel won.
    assert delta("reel_job_duration_seconds_count") == 3 + delta("reel_jobs_completed_total", status="cancelled")
    for stage in ("script_expansion", "continuity_validation", "video_generation", "upload", "finalization"):
        assert delta("reel_stage_duration_seconds_count", stage=stage) >= 3, stage
    assert delta("reel_grpc_server_handled_total", grpc_method="/reel.v1.JobService/CreateJob", grpc_code="OK") == 4
    assert delta("reel_grpc_server_handled_total", grpc_method="/reel.v1.JobService/CreateJob",
                 grpc_code="INVALID_ARGUMENT") == 1
    assert delta("reel_grpc_server_handling_seconds_count", grpc_method="/reel.v1.JobService/CreateJob") == 5
    # Histogram buckets are cumulative and end at +Inf == count.
    inf = value(after, "reel_grpc_server_handling_seconds_bucket", grpc_method="/reel.v1.JobService/CreateJob", le="+Inf")
    assert inf == value(after, "reel_grpc_server_handling_seconds_count", grpc_method="/reel.v1.JobService/CreateJob")
    for q in ("generation", "priority"):
        assert ("reel_queue_depth", frozenset({("queue", q)})) in after, q
        assert ("reel_queue_oldest_job_age_seconds", frozenset({("queue", q)})) in after, q
    assert ("reel_grpc_server_in_flight", frozenset()) in after


def test_queue_gauges_show_the_backlog(reeld_factory):
    srv = reeld_factory("backlog", workers=0)  # a pure coordinator: nothing drains the queue
    user = ri.unique("backlog")
    for i in range(5):
        srv.stub.CreateJob(ri.create_request(user, text=f"waiting {i}"), timeout=ri.DEFAULT_TIMEOUT)
    time.sleep(2.5)
    s = ri.scrape(srv)
    assert value(s, "reel_queue_depth", queue="generation") == 5
    assert value(s, "reel_queue_depth", queue="priority") == 0
    assert value(s, "reel_queue_oldest_job_age_seconds", queue="generation") >= 1.0


def health(srv):
    return srv.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def healthz(srv) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/healthz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_health_is_not_serving_while_the_database_is_unreachable_and_recovers(reeld_factory):
    srv = reeld_factory("dbdown", workers=1, sim_stage_ms=20)
    assert health(srv) == health_pb2.HealthCheckResponse.SERVING and healthz(srv) == 200
    dbname = srv.db_url.rsplit("/", 1)[1]
    admin = srv.db_url.rsplit("/", 1)[0] + "/postgres"
    ri.psql_value(admin, f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
    try:
        ri.psql_value(admin, f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{dbname}'")
        deadline = time.monotonic() + 15
        while health(srv) != health_pb2.HealthCheckResponse.NOT_SERVING and time.monotonic() < deadline:
            time.sleep(0.2)
        assert health(srv) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert healthz(srv) == 503
        err = ri.rpc_error(srv.stub.GetJob, pb.GetJobRequest(id="00000000-0000-0000-0000-000000000001"),
                           timeout=ri.DEFAULT_TIMEOUT)
        ri.assert_code(err, grpc.StatusCode.UNAVAILABLE, what="GetJob while the database is down")
    finally:
        ri.psql_value(admin, f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
    deadline = time.monotonic() + 15
    while health(srv) != health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
        time.sleep(0.2)
    assert health(srv) == health_pb2.HealthCheckResponse.SERVING, "reeld reconnects by itself"
    job = srv.stub.CreateJob(ri.create_request(ri.unique("back")), timeout=ri.DEFAULT_TIMEOUT)
    ri.wait_for_job(srv.stub, job.id)


def test_json_logs_are_one_object_per_line_with_job_metadata(reeld_factory):
    srv = reeld_factory("jsonlog", workers=1, sim_stage_ms=10, extra_args=("--log-format", "json"))
    job = srv.stub.CreateJob(ri.create_request(ri.unique("log"), tier=pb.TIER_STANDARD,
                                               config=pb.JobConfig(model="simulated-failure"), max_retries=1),
                             timeout=ri.DEFAULT_TIMEOUT)
    ri.wait_for_job(srv.stub, job.id, want=(pb.JOB_STATUS_FAILED,), timeout=60)
    time.sleep(0.5)
    lines = [l for l in srv.log_text().splitlines() if l.startswith("{")]
    assert lines, srv.log_tail()
    records = [json.loads(l) for l in lines]
    for r in records:
        assert {"ts", "level", "msg", "label"} <= set(r), r
    assert any("listening on" in r["msg"] for r in records)
    failed = [r for r in records if r.get("reel.job_id") == job.id and r["msg"] == "job failed"]
    assert failed and failed[0]["level"] == "warning" and failed[0]["error.code"] == "PROVIDER_FAILED", records
