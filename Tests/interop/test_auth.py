"""Tenants and API keys (issue #6, item 4): with --auth every call needs a key, is scoped to
the key's tenant, and is rate-limited per tenant; keys are managed by admins (reelctl keys)."""

import json
import os
import subprocess
import time

import grpc

import reel_interop as ri
from reel_interop import pb

ADMIN = "reel_admin_key_for_tests_0123456789"


def bearer(key):
    return (("authorization", f"Bearer {key}"),)


def reelctl(srv, *args, key=ADMIN):
    env = dict(os.environ, REEL_API_KEY=key)
    return subprocess.run([os.path.join(os.environ["REEL_BIN_DIR"], "reelctl"), "--address", srv.target, *args],
                          capture_output=True, text=True, timeout=30, env=env)


def new_key(srv, tenant, *extra):
    r = reelctl(srv, "--json", "keys", "create", "--tenant", tenant, *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_calls_without_a_valid_key_are_unauthenticated(reeld_factory):
    srv = reeld_factory("auth-none", workers=1, sim_stage_ms=10, extra_args=("--auth", "--admin-key", ADMIN))
    req = ri.create_request(ri.unique("auth"))
    for md in ((), bearer("reel_wrong"), (("authorization", "Basic x"),)):
        err = ri.rpc_error(srv.stub.CreateJob, req, metadata=md, timeout=ri.DEFAULT_TIMEOUT)
        ri.assert_code(err, grpc.StatusCode.UNAUTHENTICATED, what=f"CreateJob with {md}")
    err = ri.rpc_error(srv.stub.ListJobs, pb.ListJobsRequest(), timeout=ri.DEFAULT_TIMEOUT)
    ri.assert_code(err, grpc.StatusCode.UNAUTHENTICATED, what="ListJobs without a key")
    # health stays open (load balancers probe it without keys)
    assert srv.health.Check(ri.health_pb2.HealthCheckRequest(), timeout=5).status == ri.health_pb2.HealthCheckResponse.SERVING
    assert int(ri.psql_value(srv.db_url, "SELECT count(*) FROM jobs")) == 0


def test_tenants_see_only_their_own_jobs(reeld_factory):
    srv = reeld_factory("auth-tenants", workers=1, sim_stage_ms=10, extra_args=("--auth", "--admin-key", ADMIN))
    a, b = new_key(srv, "acme"), new_key(srv, "globex")
    assert a["secret"].startswith("reel_") and not a["admin"]
    stored = ri.psql_value(srv.db_url, "SELECT string_agg(key_hash, ',') FROM api_keys")
    assert a["secret"] not in stored, "secrets are stored hashed"
    job = srv.stub.CreateJob(ri.create_request("u1", text="acme's"), metadata=bearer(a["secret"]), timeout=ri.DEFAULT_TIMEOUT)
    # The same user and text under another tenant is another job (keys are per tenant).
    other = srv.stub.CreateJob(ri.create_request("u1", text="acme's"), metadata=bearer(b["secret"]), timeout=ri.DEFAULT_TIMEOUT)
    assert other.id != job.id
    for call, req in ((srv.stub.GetJob, pb.GetJobRequest(id=job.id)), (srv.stub.CancelJob, pb.CancelJobRequest(id=job.id)),
                      (srv.stub.RetryJob, pb.RetryJobRequest(id=job.id))):
        err = ri.rpc_error(call, req, metadata=bearer(b["secret"]), timeout=ri.DEFAULT_TIMEOUT)
        ri.assert_code(err, grpc.StatusCode.NOT_FOUND, what=f"{call} of another tenant's job")
    err = ri.rpc_error(srv.stub.WatchJob, pb.WatchJobRequest(id=job.id), metadata=bearer(b["secret"]), timeout=ri.DEFAULT_TIMEOUT)
    ri.assert_code(err, grpc.StatusCode.NOT_FOUND, what="WatchJob of another tenant's job")
    listed_b = srv.stub.ListJobs(pb.ListJobsRequest(user_id="u1"), metadata=bearer(b["secret"]), timeout=ri.DEFAULT_TIMEOUT)
    assert [j.id for j in listed_b.jobs] == [other.id]
    mine = srv.stub.GetJob(pb.GetJobRequest(id=job.id), metadata=bearer(a["secret"]), timeout=ri.DEFAULT_TIMEOUT)
    assert mine.id == job.id
    # the admin sees both tenants' jobs
    everything = srv.stub.ListJobs(pb.ListJobsRequest(user_id="u1"), metadata=bearer(ADMIN), timeout=ri.DEFAULT_TIMEOUT)
    assert {j.id for j in everything.jobs} == {job.id, other.id}


def test_a_hot_job_answered_from_memory_keeps_every_rule(reeld_factory):
    """GetJob of a hot job is answered on the event loop from memory: the tenant, key and rate
    rules hold there exactly as on the database path."""
    srv = reeld_factory("auth-hot", workers=0, extra_args=("--auth", "--admin-key", ADMIN))
    a, b = new_key(srv, "acme"), new_key(srv, "globex")
    slow = new_key(srv, "acme", "--rate", "3")
    job = srv.stub.CreateJob(ri.create_request("u1", text="hot"), metadata=bearer(a["secret"]), timeout=ri.DEFAULT_TIMEOUT)
    for _ in range(3):  # the first read loads the job into memory; the others are served from it
        got = srv.stub.GetJob(pb.GetJobRequest(id=job.id), metadata=bearer(a["secret"]), timeout=ri.DEFAULT_TIMEOUT)
        assert got.id == job.id and got.status == pb.JOB_STATUS_QUEUED and got.input_text == "hot"
    for md, code in ((bearer(b["secret"]), grpc.StatusCode.NOT_FOUND), ((), grpc.StatusCode.UNAUTHENTICATED),
                     (bearer("reel_wrong"), grpc.StatusCode.UNAUTHENTICATED)):
        err = ri.rpc_error(srv.stub.GetJob, pb.GetJobRequest(id=job.id), metadata=md, timeout=ri.DEFAULT_TIMEOUT)
        ri.assert_code(err, code, what=f"GetJob of a hot job with {md}")
    err = ri.rpc_error(srv.stub.GetJob, pb.GetJobRequest(id="not-a-uuid"), metadata=bearer(a["secret"]), timeout=ri.DEFAULT_TIMEOUT)
    ri.assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, what="GetJob of a malformed id")
    codes = {}
    for _ in range(40):
        try:
            srv.stub.GetJob(pb.GetJobRequest(id=job.id), metadata=bearer(slow["secret"]), timeout=ri.DEFAULT_TIMEOUT)
            codes["OK"] = codes.get("OK", 0) + 1
        except grpc.RpcError as e:
            codes[e.code().name] = codes.get(e.code().name, 0) + 1
    assert codes.get("RESOURCE_EXHAUSTED", 0) > 20 and 2 <= codes.get("OK", 0) <= 15, codes
    # A change drops the memory copy: the next read sees it.
    srv.stub.CancelJob(pb.CancelJobRequest(id=job.id), metadata=bearer(a["secret"]), timeout=ri.DEFAULT_TIMEOUT)
    got = srv.stub.GetJob(pb.GetJobRequest(id=job.id), metadata=bearer(a["secret"]), timeout=ri.DEFAULT_TIMEOUT)
    assert got.status == pb.JOB_STATUS_CANCELLED


def test_scenes_belong_to_a_tenant(reeld_factory):
    """Two tenants' scene "pilot" are two scenes: bibles, versions and segment counts apart,
    and a job runs against its own tenant's bible."""
    srv = reeld_factory("auth-scenes", workers=2, sim_stage_ms=10, extra_args=("--auth", "--admin-key", ADMIN))
    a, b = new_key(srv, "acme"), new_key(srv, "globex")
    scenes = ri.pb_grpc.SceneServiceStub(srv.channel)
    a_bible = pb.SceneBible(forbidden=["dragon"], style={"palette": "cold blue"})
    put_a = scenes.PutSceneBible(pb.PutSceneBibleRequest(scene_id="pilot", bible=a_bible),
                                 metadata=bearer(a["secret"]), timeout=ri.DEFAULT_TIMEOUT)
    assert put_a.bible_version == 1
    err = ri.rpc_error(scenes.GetScene, pb.GetSceneRequest(scene_id="pilot"), metadata=bearer(b["secret"]),
                       timeout=ri.DEFAULT_TIMEOUT)
    ri.assert_code(err, grpc.StatusCode.NOT_FOUND, what="GetScene of another tenant's scene")
    put_b = scenes.PutSceneBible(pb.PutSceneBibleRequest(scene_id="pilot", bible=pb.SceneBible(style={"palette": "warm"})),
                                 metadata=bearer(b["secret"]), timeout=ri.DEFAULT_TIMEOUT)
    assert put_b.bible_version == 1, "globex's first bible for its own scene is version 1, not acme's next"
    got_a = scenes.GetScene(pb.GetSceneRequest(scene_id="pilot"), metadata=bearer(a["secret"]), timeout=ri.DEFAULT_TIMEOUT)
    assert list(got_a.bible.forbidden) == ["dragon"] and got_a.bible.style["palette"] == "cold blue"
    # A job of globex's finalizes into globex's scene only.
    job_b = srv.stub.CreateJob(ri.create_request("u1", scene_id="pilot", text="a boat crosses the bay"),
                               metadata=bearer(b["secret"]), timeout=ri.DEFAULT_TIMEOUT)
    deadline = time.monotonic() + 60
    while (done_b := srv.stub.GetJob(pb.GetJobRequest(id=job_b.id), metadata=bearer(b["secret"]),
                                     timeout=ri.DEFAULT_TIMEOUT)).status != pb.JOB_STATUS_FINAL_READY:
        assert time.monotonic() < deadline, ri.stored_history(srv.db_url, job_b.id)
        time.sleep(0.05)
    assert done_b.bible_version == 1
    got_b = scenes.GetScene(pb.GetSceneRequest(scene_id="pilot"), metadata=bearer(b["secret"]), timeout=ri.DEFAULT_TIMEOUT)
    got_a = scenes.GetScene(pb.GetSceneRequest(scene_id="pilot"), metadata=bearer(a["secret"]), timeout=ri.DEFAULT_TIMEOUT)
    assert (got_b.segment_count, got_a.segment_count) == (1, 0), (got_b, got_a)
    rows = ri.psql_value(srv.db_url, "SELECT tenant_id || ':' || bible_version FROM scenes WHERE id = 'pilot' ORDER BY 1")
    assert rows.splitlines() == ["acme:1", "globex:2"], rows


def test_non_admin_keys_cannot_manage_keys_or_serve_as_workers_and_revoked_keys_stop_working(reeld_factory):
    srv = reeld_factory("auth-admin", workers=0, extra_args=("--auth", "--admin-key", ADMIN))
    k = new_key(srv, "acme")
    r = reelctl(srv, "keys", "create", "--tenant", "evil", key=k["secret"])
    assert r.returncode == 10 + 7 and "PERMISSION_DENIED" in r.stderr, (r.returncode, r.stderr)
    listed = reelctl(srv, "--json", "keys", "list", "--tenant", "acme")
    assert listed.returncode == 0 and json.loads(listed.stdout.splitlines()[0])["id"] == k["id"]
    assert "secret" not in listed.stdout
    assert reelctl(srv, "keys", "revoke", k["id"]).returncode == 0
    time.sleep(2.5)  # keys are cached for 2 s
    err = ri.rpc_error(srv.stub.ListJobs, pb.ListJobsRequest(), metadata=bearer(k["secret"]), timeout=ri.DEFAULT_TIMEOUT)
    ri.assert_code(err, grpc.StatusCode.UNAUTHENTICATED, what="a revoked key")


def test_per_tenant_rate_limit_is_resource_exhausted_for_that_tenant_only(reeld_factory):
    srv = reeld_factory("auth-rate", workers=0, extra_args=("--auth", "--admin-key", ADMIN))
    slow = new_key(srv, "slowpoke", "--rate", "5")
    other = new_key(srv, "neighbour")
    codes = {}
    for _ in range(40):
        try:
            srv.stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(slow["secret"]), timeout=ri.DEFAULT_TIMEOUT)
            codes["OK"] = codes.get("OK", 0) + 1
        except grpc.RpcError as e:
            codes[e.code().name] = codes.get(e.code().name, 0) + 1
    assert codes.get("RESOURCE_EXHAUSTED", 0) > 20 and 3 <= codes.get("OK", 0) <= 15, codes
    for _ in range(20):  # another tenant is not affected
        srv.stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(other["secret"]), timeout=ri.DEFAULT_TIMEOUT)
    time.sleep(1.2)
    srv.stub.ListJobs(pb.ListJobsRequest(), metadata=bearer(slow["secret"]), timeout=ri.DEFAULT_TIMEOUT)


def test_reelctl_with_a_tenant_key_creates_and_watches(reeld_factory):
    srv = reeld_factory("auth-ctl", workers=1, sim_stage_ms=10, extra_args=("--auth", "--admin-key", ADMIN))
    k = new_key(srv, "acme")
    r = reelctl(srv, "--json", "create", "--user-id", "u", "--scene-id", "s", "--type", "scene-creation",
                "--text", "with a key", "--watch", key=k["secret"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["status"] == "JOB_STATUS_FINAL_READY"
    r = reelctl(srv, "list", key="not-a-key")
    assert r.returncode == 10 + 16 and "UNAUTHENTICATED" in r.stderr, (r.returncode, r.stderr)
