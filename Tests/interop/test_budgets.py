"""Cost per job and tenant budgets (issue #17 items 1 and 2, DESIGN §2 "Cost" and "Budgets"),
through gRPC against real reeld processes: TenantService's rules, RESOURCE_EXHAUSTED naming the
budget, exactly-as-many-as-fit under concurrent creates on two instances, settlement with the
real charge, the simulated provider's charge by duration and quality, and Kling's
final_unit_deduction recorded per attempt (the fake reports it as a decimal string)."""

from __future__ import annotations

import concurrent.futures as cf

import grpc
import pytest

import reel_interop as ri
from reel_interop import pb


def _tenant_stubs():
    """tenants_pb2 / keys_pb2 and their stubs, generated next to the session's jobs_pb2."""
    from grpc_tools import protoc
    args = ["grpc_tools.protoc", f"-I{ri.PROTO_DIR}", f"--python_out={ri.STUBS_DIR}",
            f"--grpc_python_out={ri.STUBS_DIR}", "reel/v1/tenants.proto", "reel/v1/keys.proto"]
    assert protoc.main(args) == 0, args
    from reel.v1 import keys_pb2, keys_pb2_grpc, tenants_pb2, tenants_pb2_grpc
    return tenants_pb2, tenants_pb2_grpc, keys_pb2, keys_pb2_grpc


tpb, tpb_grpc, kpb, kpb_grpc = _tenant_stubs()

ADMIN = "reel_admin_key_for_budget_tests_0123"
T = ri.DEFAULT_TIMEOUT


def md(secret):
    return (("authorization", f"Bearer {secret}"),)


def tenants(srv):
    return tpb_grpc.TenantServiceStub(srv.channel)


def set_budget(srv, tenant, limit, period=0, key=None):
    return tenants(srv).SetBudget(tpb.SetBudgetRequest(tenant_id=tenant, limit_units=limit, period_seconds=period),
                                  timeout=T, metadata=md(key) if key else None)


def get_budget(srv, tenant, key=None):
    return tenants(srv).GetBudget(tpb.GetBudgetRequest(tenant_id=tenant), timeout=T, metadata=md(key) if key else None)


def job_request(user, seconds=5, quality=pb.QUALITY_STANDARD, **kw):
    return ri.create_request(user, config=pb.JobConfig(target_duration_seconds=seconds, quality=quality), **kw)


def tenant_key(srv, tenant):
    keys = kpb_grpc.KeyServiceStub(srv.channel)
    return keys.CreateKey(kpb.CreateKeyRequest(tenant_id=tenant), timeout=T, metadata=md(ADMIN)).secret


# --------------------------------------------------------------------------- TenantService


def test_budgets_are_for_admin_keys_and_follow_the_rules(reeld_factory):
    srv = reeld_factory("budget-rules", workers=0, extra_args=("--auth", "--admin-key", ADMIN))
    acme = tenant_key(srv, "acme")
    for call in (lambda: set_budget(srv, "acme", 10, key=acme), lambda: get_budget(srv, "acme", key=acme)):
        ri.assert_code(ri.rpc_error(call), grpc.StatusCode.PERMISSION_DENIED)
    ri.assert_code(ri.rpc_error(lambda: get_budget(srv, "acme")), grpc.StatusCode.UNAUTHENTICATED)

    none = get_budget(srv, "acme", key=ADMIN)
    assert (none.tenant_id, none.limit_units, none.spent_units, none.reserved_units) == ("acme", 0, 0, 0)
    ri.assert_code(ri.rpc_error(lambda: set_budget(srv, "acme", -1, key=ADMIN)), grpc.StatusCode.INVALID_ARGUMENT,
                   mentions="limit_units")
    ri.assert_code(ri.rpc_error(lambda: set_budget(srv, "acme", 5, period=-1, key=ADMIN)),
                   grpc.StatusCode.INVALID_ARGUMENT, mentions="period_seconds")
    ri.assert_code(ri.rpc_error(lambda: set_budget(srv, "bad tenant!", 5, key=ADMIN)),
                   grpc.StatusCode.INVALID_ARGUMENT, mentions="tenant_id")

    b = set_budget(srv, "acme", 10, key=ADMIN)
    assert (b.limit_units, b.period_seconds, b.spent_units, b.reserved_units) == (10, 2592000, 0, 0)
    assert b.period_start_unix_ms > 0
    b = set_budget(srv, "acme", 12.5, period=3600, key=ADMIN)
    assert (b.limit_units, b.period_seconds) == (12.5, 3600)
    assert get_budget(srv, "acme", key=ADMIN) == b
    gone = set_budget(srv, "acme", 0, key=ADMIN)
    assert gone.limit_units == 0 and get_budget(srv, "acme", key=ADMIN).limit_units == 0


def test_weights_are_for_admin_keys_and_follow_the_rules(reeld_factory):
    """TenantService.SetWeight/GetWeight: a tenant's fair-share weight (default 1), admin only,
    > 0 and at most 1000; `reelctl weight` sets and shows it."""
    srv = reeld_factory("weight-rules", workers=0, extra_args=("--auth", "--admin-key", ADMIN))
    acme = tenant_key(srv, "acme")
    t = tenants(srv)
    set_w = lambda tenant, w, key=ADMIN: t.SetWeight(tpb.SetWeightRequest(tenant_id=tenant, weight=w), timeout=T,
                                                     metadata=md(key))
    get_w = lambda tenant, key=ADMIN: t.GetWeight(tpb.GetWeightRequest(tenant_id=tenant), timeout=T, metadata=md(key))
    ri.assert_code(ri.rpc_error(lambda: set_w("acme", 2, key=acme)), grpc.StatusCode.PERMISSION_DENIED)
    ri.assert_code(ri.rpc_error(lambda: get_w("acme", key=acme)), grpc.StatusCode.PERMISSION_DENIED)
    assert (get_w("acme").tenant_id, get_w("acme").weight) == ("acme", 1)
    for bad in (0, -1, float("nan"), float("inf"), 1000.5):
        ri.assert_code(ri.rpc_error(lambda: set_w("acme", bad)), grpc.StatusCode.INVALID_ARGUMENT, mentions="weight")
    ri.assert_code(ri.rpc_error(lambda: set_w("bad tenant!", 2)), grpc.StatusCode.INVALID_ARGUMENT, mentions="tenant_id")
    assert set_w("acme", 2.5).weight == 2.5 and get_w("acme").weight == 2.5
    assert get_w("other").weight == 1, "one tenant's weight is its own"
    assert ri.psql_value(srv.db_url, "SELECT weight FROM tenants WHERE tenant_id = 'acme'") == "2.5"

    import json, os, subprocess
    run = lambda *a: subprocess.run([os.path.join(os.environ["REEL_BIN_DIR"], "reelctl"), "--address", srv.target, *a],
                                    capture_output=True, text=True, timeout=30, env=dict(os.environ, REEL_API_KEY=ADMIN))
    r = run("--json", "weight", "set", "--tenant", "acme", "4")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"tenant_id": "acme", "weight": 4}
    r = run("weight", "get", "--tenant", "acme")
    assert r.returncode == 0 and "weight" in r.stdout and "4" in r.stdout, r.stdout + r.stderr
    r = run("weight", "set", "--tenant", "acme", "--", "-1")
    assert r.returncode != 0 and "weight" in r.stderr, r.stdout + r.stderr


def test_with_auth_off_every_caller_may_set_the_budget(reeld_factory):
    srv = reeld_factory("budget-noauth", workers=0)
    b = set_budget(srv, "", 3)
    assert b.limit_units == 3 and b.period_seconds == 2592000
    user = ri.unique("noauth")
    srv.stub.CreateJob(job_request(user, seconds=10), timeout=T)  # 2 units
    err = ri.rpc_error(lambda: srv.stub.CreateJob(job_request(user, seconds=10), timeout=T))
    ri.assert_code(err, grpc.StatusCode.RESOURCE_EXHAUSTED, mentions="budget of 3 units has 1 left")


# --------------------------------------------------------------------------- reservations


def test_a_create_that_does_not_fit_is_resource_exhausted_naming_the_budget(reeld_factory):
    srv = reeld_factory("budget-fit", workers=0, extra_args=("--auth", "--admin-key", ADMIN))
    acme = tenant_key(srv, "acme")
    set_budget(srv, "acme", 3, key=ADMIN)
    user = ri.unique("fit")
    first = srv.stub.CreateJob(job_request(user, seconds=10), timeout=T, metadata=md(acme))
    assert get_budget(srv, "acme", key=ADMIN).reserved_units == 2
    err = ri.rpc_error(lambda: srv.stub.CreateJob(job_request(user, seconds=10), timeout=T, metadata=md(acme)))
    ri.assert_code(err, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert err.details() == "tenant acme's budget of 3 units has 1 left; this job is expected to cost 2", err.details()

    # CreateJobs: items that fit are accepted in order, the others fail alone.
    resp = srv.stub.CreateJobs(pb.CreateJobsRequest(jobs=[
        job_request(user, seconds=10), job_request(user, seconds=5), job_request(user, seconds=5)]),
        timeout=T, metadata=md(acme))
    r = resp.results
    assert not r[0].HasField("job") and r[0].code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], r[0]
    assert "tenant acme's budget of 3 units has 1 left; this job is expected to cost 2" in r[0].message, r[0].message
    assert r[1].HasField("job"), r[1]
    assert not r[2].HasField("job") and "has 0 left; this job is expected to cost 1" in r[2].message, r[2]
    b = get_budget(srv, "acme", key=ADMIN)
    assert (b.reserved_units, b.spent_units) == (3, 0)

    # A cancel of a job that never ran releases its reservation; nothing is spent.
    srv.stub.CancelJob(pb.CancelJobRequest(id=first.id), timeout=T, metadata=md(acme))
    b = get_budget(srv, "acme", key=ADMIN)
    assert (b.reserved_units, b.spent_units) == (1, 0)
    srv.stub.CreateJob(job_request(user, seconds=10), timeout=T, metadata=md(acme))  # fits again
    # Another tenant has no budget.
    other = tenant_key(srv, "other")
    srv.stub.CreateJob(job_request(user, seconds=60), timeout=T, metadata=md(other))


def test_twenty_concurrent_creates_on_two_instances_against_room_for_two_accept_two(reeld_factory):
    a = reeld_factory("budget-race-a", workers=0)
    b = reeld_factory("budget-race-b", db_url=a.db_url, workers=0)
    set_budget(a, "", 2)
    user = ri.unique("race")

    def create(i):
        srv = (a, b)[i % 2]
        try:
            return srv.stub.CreateJob(job_request(user, text=f"race {i}"), timeout=T).id
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (e.code(), e.details())
            return None

    with cf.ThreadPoolExecutor(max_workers=20) as pool:
        ids = list(pool.map(create, range(20)))
    accepted = [i for i in ids if i]
    assert len(accepted) == 2, ids
    assert ri.psql_value(a.db_url, "SELECT count(*) FROM jobs") == "2"
    assert get_budget(b, "").reserved_units == 2


# --------------------------------------------------------------------------- cost and settlement


def test_simulated_cost_by_duration_and_quality_and_settlement_when_jobs_finish(reeld_factory):
    srv = reeld_factory("budget-settle", workers=4, sim_stage_ms=5,
                        extra_args=("--provider-cost-weight", "simulated=1.5"))
    set_budget(srv, "", 100)
    user = ri.unique("settle")
    # (seconds, quality) -> units: 1 per started 5 s (0 counts as 5), doubled for HIGH; weight 1.5.
    cases = [(0, pb.QUALITY_STANDARD, 1), (5, pb.QUALITY_STANDARD, 1), (10, pb.QUALITY_STANDARD, 2),
             (5, pb.QUALITY_HIGH, 2), (12, pb.QUALITY_HIGH, 6)]
    jobs = [srv.stub.CreateJob(job_request(user, seconds=s, quality=q), timeout=T) for s, q, _ in cases]
    expected_total = sum(u for *_, u in cases) * 1.5
    assert get_budget(srv, "").reserved_units == expected_total
    done = [ri.wait_for_job(srv.stub, j.id, timeout=60) for j in jobs]
    for d, (_, _, units) in zip(done, cases):
        assert d.provider == "simulated" and d.cost_units == units * 1.5, ri.describe_job(d)
    b = ri.wait_for("the budget settled", lambda: (lambda b: b if b.reserved_units == 0 else None)(get_budget(srv, "")))
    assert b.spent_units == sum(d.cost_units for d in done) == expected_total
    m = ri.scrape(srv)
    assert m[("reel_cost_units_total", frozenset({("tenant", ""), ("user", user)}))] == expected_total
    listed = srv.stub.ListJobs(pb.ListJobsRequest(user_id=user), timeout=T).jobs
    assert sorted(j.cost_units for j in listed) == sorted(d.cost_units for d in done)


# --------------------------------------------------------------------------- Kling


def test_klings_charge_is_recorded_from_final_unit_deduction(reeld_factory, fake_kling, tmp_path):
    srv = ri.kling_reeld(reeld_factory, "budget-kling", fake_kling.url, tmp_path / "art",
                         extra_args=("--provider-cost-weight", "kling=2"))
    fake_kling.control(queued_ms=20, processing_ms=100)
    set_budget(srv, "", 50)
    job = srv.stub.CreateJob(job_request(ri.unique("kling-cost"), seconds=10, quality=pb.QUALITY_HIGH), timeout=T)
    assert get_budget(srv, "").reserved_units == 8, "expected: 2 units for 10 s, doubled for HIGH, weight 2"
    done = ri.wait_for_job(srv.stub, job.id, timeout=90)
    # pro mode, 10 s: the fake's final_unit_deduction is "7"; times the weight 2.
    assert done.provider == "kling" and done.cost_units == 14, ri.describe_job(done)
    assert ri.psql_value(srv.db_url, f"SELECT cost_units FROM provider_tasks WHERE job_id = '{job.id}'") == "7"
    b = ri.wait_for("the budget settled", lambda: (lambda b: b if b.reserved_units == 0 else None)(get_budget(srv, "")))
    assert b.spent_units == 14
