"""reeld with `--provider kling` against the strict fake of Kling's published API (DESIGN §5
"Providers" / "Kling", §8).

Each test runs a private reeld (`ri.kling_reeld`) on a database of its own against the
session's fake Kling (Tests/fake_kling), whose knobs, tasks and stats are reset per test (the
`fake_kling` fixture). The fake checks the JWT on every call, wants string durations, refuses
what Kling refuses, holds the account's concurrency and POSTs callbacks; its stats say what
Reel really sent. A failing assertion prints the job, its stored events and the fake's stats.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

import reel_interop as ri
from reel_interop import pb

S = pb  # enum values live on the module: S.JOB_STATUS_FAILED, S.STAGE_UPLOAD, ...

FAIL_MSG = "video generation failed: internal error"  # the fake's message for a failed task
DEFAULT_MODEL = "kling-v2-5-turbo"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- helpers


def start(reeld_factory, fk, tmp_path, name, **kw):
    art = tmp_path / f"artifacts-{name}"
    srv = ri.kling_reeld(reeld_factory, name, fk.url, art, **kw)
    return srv, art


def start_on(reeld_factory, fk, art, name, db_url, **kw):
    """A kling reeld on an existing database (a second instance sharing the first's)."""
    if "db_url" in inspect.signature(ri.kling_reeld).parameters:
        return ri.kling_reeld(reeld_factory, name, fk.url, art, db_url=db_url, **kw)
    srv = ri.kling_reeld(reeld_factory, name, fk.url, art, start=False, **kw)
    i = srv.args.index("--database-url")
    srv.args[i + 1] = db_url
    srv.db_url = db_url
    srv.start()
    return srv


def create(srv, user_prefix="kling", text=None, scene_id="scene-1", **fields):
    return srv.stub.CreateJob(ri.create_request(ri.unique(user_prefix), scene_id=scene_id, text=text,
                                                **fields), timeout=ri.DEFAULT_TIMEOUT)


def get(srv, job_id):
    return srv.stub.GetJob(pb.GetJobRequest(id=job_id), timeout=ri.DEFAULT_TIMEOUT)


def history(srv, job_id):
    """Every stored event after seq 1 (a replay; the job must be terminal)."""
    return ri.watch(srv.stub, job_id, after_seq=1, timeout=15)


def ext(job_id, attempt):
    return f"reel-{job_id}-{attempt}"


def tasks_of(fk, job_id, stats=None):
    """The fake's tasks made for a job's attempts, in creation order."""
    st = stats or fk.stats()
    return [t for t in st["tasks"] if (t["external_task_id"] or "").startswith(f"reel-{job_id}-")]


def diag(srv, job_id, fk=None) -> str:
    extra = [ri.fake_stats_text(fk, "fake Kling", last=("callbacks", 12), limit=6000)] if fk is not None else []
    return ri.job_diag(srv, job_id, *extra)


def wait_done(srv, job_id, fk, timeout=30.0, want=(S.JOB_STATUS_FINAL_READY,)):
    return ri.wait_job_explained(srv, job_id, lambda: diag(srv, job_id, fk), want=want, timeout=timeout)


def wait_terminal(srv, job_id, fk, timeout=30.0):
    return ri.wait_terminal_explained(srv, job_id, lambda: diag(srv, job_id, fk), timeout=timeout)


def metric(samples, name, **labels):
    """The value of the series with exactly these labels, or None when absent."""
    return samples.get((name, frozenset(labels.items())))


def post_json(url, obj):
    """(HTTP status, body text) of a JSON POST."""
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with _NO_PROXY.open(req, timeout=10) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def reeld_own_log(srv) -> str:
    """What reeld wrote (without the harness's `----- start …` lines, which show the env)."""
    return "\n".join(ln for ln in srv.log_text().splitlines() if not ln.startswith("----- "))


# --------------------------------------------------------------------------- 1. the request


def test_new_scenes_go_to_text2video_with_klings_fields_jwt_and_request_id(reeld_factory, fake_kling,
                                                                           tmp_path):
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-fields")
    fake_kling.control(queued_ms=50, processing_ms=300)
    text = f"A lighthouse keeper lights the lamp at dusk {uuid.uuid4().hex[:8]}"
    plain = create(srv, "fields", text=text)
    fancy = create(srv, "fields-hq", config=pb.JobConfig(target_duration_seconds=10,
                                                         quality=pb.QUALITY_HIGH, model="kling-v2-1"))
    a = wait_done(srv, plain.id, fake_kling)
    b = wait_done(srv, fancy.id, fake_kling)
    st = fake_kling.stats()
    d = diag(srv, plain.id, fake_kling) + "\n" + diag(srv, fancy.id)

    # JWT HS256, accepted on every call (the fake checks each), and reused, not made per call.
    assert st["auth_failures"] == {}, d
    assert st["tokens_seen"] == 1, f"a token is reused until shortly before it expires\n{d}"

    [ta] = tasks_of(fake_kling, plain.id, st)
    [tb] = tasks_of(fake_kling, fancy.id, st)
    assert ta["endpoint"] == "text2video" and tb["endpoint"] == "text2video", d
    assert ta["external_task_id"] == ext(plain.id, 1) and tb["external_task_id"] == ext(fancy.id, 1), d
    assert ta["model_name_sent"] and ta["model_name"] == DEFAULT_MODEL, d
    assert (ta["mode"], ta["duration"]) == ("std", "5"), d
    assert tb["model_name_sent"] and tb["model_name"] == "kling-v2-1", d
    assert (tb["mode"], tb["duration"]) == ("pro", "10"), d
    assert ta["aspect_ratio_sent"] and ta["aspect_ratio"] in ("16:9", "9:16", "1:1"), d
    assert ta["image_kind"] is None, d
    assert text in ta["prompt"], f"the user's text reaches Kling verbatim\n{d}"
    assert ta["callback_url"] and ta["callback_url"].startswith(srv.http_url + "/v1/providers/kling/callback/"), d

    for job, task in ((a, ta), (b, tb)):
        dj = diag(srv, job.id)
        assert job.artifacts.provider_job_id == task["task_id"], dj
        rid = job.artifacts.provider_request_id
        assert UUID_RE.match(rid), f"provider_request_id {rid!r} is not Kling's request_id\n{dj}"
        assert any(rid in e.message for e in history(srv, job.id)), (
            f"the submit's request_id {rid} is in no event of the job\n{dj}")
        assert job.retry_count == 0, dj
    assert st["creates_ok"] == 2, d


# --------------------------------------------------------------------------- 6. results copied out


def test_results_are_copied_out_and_outlive_klings_deletion(reeld_factory, fake_kling, tmp_path):
    srv, art = start(reeld_factory, fake_kling, tmp_path, "kling-copy")
    fake_kling.control(queued_ms=50, processing_ms=300)
    job = create(srv, "copy")
    done = wait_done(srv, job.id, fake_kling)
    d = diag(srv, job.id, fake_kling)
    art_root = art.resolve()

    urls = {"artifacts.final_video_url": done.artifacts.final_video_url,
            "result.video_url": done.result.video_url,
            "artifacts.thumbnail_url": done.artifacts.thumbnail_url,
            "result.thumbnail_url": done.result.thumbnail_url,
            "artifacts.hls_playlist_url": done.artifacts.hls_playlist_url}
    paths = {}
    for what, url in urls.items():
        assert url.startswith("file://"), f"{what} = {url!r}: want a file:// URL in the artifact store\n{d}"
        assert "/results/" not in url and fake_kling.url not in url, f"{what} = {url!r} is Kling's\n{d}"
        p = ri.file_path(url).resolve()
        assert art_root in p.parents, f"{what} = {url!r} is not under {art_root}\n{d}"
        assert p.is_file() and p.stat().st_size > 0, f"{what}: {p} missing or empty\n{d}"
        paths[what] = p
    assert paths["artifacts.final_video_url"].read_bytes()[4:8] == b"ftyp", d
    assert fake_kling.stats()["result_downloads"] >= 1, d

    fake_kling.control(delete_results=True)
    [task] = tasks_of(fake_kling, job.id)
    assert task["result_deleted"], "the fake did not delete the result"
    time.sleep(0.3)
    for what, p in paths.items():
        assert p.is_file() and p.stat().st_size > 0, f"{what}: {p} gone after Kling deleted its result"
    again = get(srv, job.id)
    assert again.status == S.JOB_STATUS_FINAL_READY and again.result.video_url == done.result.video_url


# --------------------------------------------------------------------------- 2. error codes


def test_content_policy_fails_at_once_with_klings_message_and_is_dead_lettered(reeld_factory, fake_kling,
                                                                              tmp_path):
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-policy")
    job = create(srv, "policy", text="A scene with FORBIDDEN_CONTENT in it")  # max_retries 0 → 3
    failed = wait_terminal(srv, job.id, fake_kling)
    d = diag(srv, job.id, fake_kling)
    ri.assert_dead_lettered(failed, "CONTENT_POLICY", d)
    assert "Failure to pass the risk control system" in failed.error.message, (
        f"Kling's message is kept\n{d}")
    assert failed.retry_count == 0 and failed.max_retries == 3, d
    events = history(srv, job.id)
    assert not ri.retry_pairs(events), f"a content-policy refusal must not be retried\n{d}"
    st = fake_kling.stats()
    assert st["refused"] == {"1301": 1}, f"refused more than once: resubmitted\n{d}"
    assert st["creates_ok"] == 0, d
    dlq = srv.stub.ListJobs(pb.ListJobsRequest(user_id=job.user_id, dead_lettered_only=True),
                            timeout=ri.DEFAULT_TIMEOUT)
    assert [j.id for j in dlq.jobs] == [job.id], d


def test_rate_limit_and_concurrency_refusals_wait_and_resubmit_without_burning_an_attempt(
        reeld_factory, fake_kling, tmp_path):
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-throttle")
    fake_kling.control(error_next=[1303, 1302], rate_limit_next=1, queued_ms=50, processing_ms=300)
    job = create(srv, "throttle")
    done = wait_done(srv, job.id, fake_kling)
    d = diag(srv, job.id, fake_kling)
    st = fake_kling.stats()
    assert st["refused"] == {"1303": 1, "1302": 2}, d
    assert done.retry_count == 0, f"a throttled submit burns no attempt\n{d}"
    assert not ri.retry_pairs(history(srv, job.id)), d
    assert [t["external_task_id"] for t in tasks_of(fake_kling, job.id, st)] == [ext(job.id, 1)], d
    assert st["creates_ok"] == 1 and st["creates_by_external_id"] == {ext(job.id, 1): 4}, d


def test_server_errors_are_retried_with_backoff_then_succeed(reeld_factory, fake_kling, tmp_path):
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-5xx")
    fake_kling.control(error_next=[5000, 5001, 5002], queued_ms=50, processing_ms=300)
    job = create(srv, "5xx")
    done = wait_done(srv, job.id, fake_kling)
    d = diag(srv, job.id, fake_kling)
    st = fake_kling.stats()
    assert st["refused"] == {"5000": 1, "5001": 1, "5002": 1}, d
    assert st["creates_ok"] == 1, d
    assert [t["external_task_id"] for t in tasks_of(fake_kling, job.id, st)] == [ext(job.id, 1)], d
    assert set(st["creates_by_external_id"]) == {ext(job.id, 1)}, (
        f"the resubmits belong to the same attempt (same external id)\n{d}")
    assert done.retry_count == 0 and done.progress == 100, d


def test_depleted_resource_pack_parks_kling_then_a_probe_unparks_it(reeld_factory, fake_kling, tmp_path):
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-park", probe_ms=1000)
    fake_kling.control(account="depleted", queued_ms=50, processing_ms=300)
    jobs = [create(srv, f"park{i}") for i in range(2)]
    d = lambda: "\n".join(diag(srv, j.id, fake_kling if i == 0 else None) for i, j in enumerate(jobs))  # noqa: E731

    ri.wait_for("a submission to reach Kling", lambda: fake_kling.stats()["refused"].get("1102", 0) >= 1, 15)
    ri.wait_for('reel_provider_parked{provider="kling"} 1 on /metrics',
                lambda: metric(ri.scrape(srv), "reel_provider_parked", provider="kling") == 1, 5)

    # Parked: nothing fails, no attempt is burned, and at most one probe per second goes out.
    first = fake_kling.stats()["refused"].get("1102", 0)
    t0 = time.monotonic()
    time.sleep(3.0)
    later = fake_kling.stats()["refused"].get("1102", 0)
    window = time.monotonic() - t0
    assert later - first <= window / 1.0 + 1, (
        f"{later - first} submissions in {window:.1f}s while parked with --provider-probe-ms 1000\n{d()}")
    assert later - first >= 1, f"no probe submission in {window:.1f}s with --provider-probe-ms 1000\n{d()}"
    for j in jobs:
        cur = get(srv, j.id)
        assert cur.status != S.JOB_STATUS_FAILED and not ri.is_terminal(cur), f"a job failed while parked\n{d()}"
        assert cur.retry_count == 0, f"an attempt was burned while parked\n{d()}"
    assert fake_kling.stats()["creates_ok"] == 0, d()
    assert metric(ri.scrape(srv), "reel_provider_parked", provider="kling") == 1, d()
    # The dashboard's view of it (GET /v1/providers): parked, with Kling's reason.
    p = provider_states(srv)["kling"]
    assert p["state"] == "parked" and p["parked"] and p["parkedReason"] and p["concurrency"] == 2, p

    fake_kling.control(account="ok")
    for j in jobs:
        done = wait_done(srv, j.id, fake_kling, timeout=20)
        assert done.retry_count == 0 and not done.dead_lettered, d()
    st = fake_kling.stats()
    assert st["creates_ok"] == 2, d()
    assert sorted(t["external_task_id"] for t in st["tasks"]) == sorted(ext(j.id, 1) for j in jobs), d()
    assert metric(ri.scrape(srv), "reel_provider_parked", provider="kling") == 0, "still parked after success"
    p = provider_states(srv)["kling"]
    assert (p["state"], p["parked"], p["circuitOpen"], p["healthy"], p["order"]) == ("up", False, False, True, 0), p


def provider_states(srv) -> dict:
    """GET /v1/providers, by provider name."""
    with _NO_PROXY.open(srv.http_url + "/v1/providers", timeout=10) as r:
        return {p["name"]: p for p in json.loads(r.read())["providers"]}


def test_model_without_access_is_rejected_naming_it_and_retry_job_submits_again(reeld_factory, fake_kling,
                                                                                tmp_path):
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-1103")
    fake_kling.control(forbidden_models=[DEFAULT_MODEL], queued_ms=50, processing_ms=300)
    job = create(srv, "perm")
    failed = wait_terminal(srv, job.id, fake_kling)
    d = diag(srv, job.id, fake_kling)
    ri.assert_dead_lettered(failed, "PROVIDER_PERMISSION", d)
    assert DEFAULT_MODEL in failed.error.message, f"the error names the model\n{d}"
    assert failed.retry_count == 0 and not ri.retry_pairs(history(srv, job.id)), d
    st = fake_kling.stats()
    assert st["refused"] == {"1103": 1} and st["creates_ok"] == 0, d

    fake_kling.control(forbidden_models=[])
    again = srv.stub.RetryJob(pb.RetryJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    assert again.status == S.JOB_STATUS_QUEUED, ri.describe_job(again)
    done = wait_done(srv, job.id, fake_kling)
    d = diag(srv, job.id, fake_kling)
    [task] = tasks_of(fake_kling, job.id)
    assert task["status"] == "succeed" and done.artifacts.provider_job_id == task["task_id"], d
    assert re.fullmatch(rf"reel-{job.id}-\d+", task["external_task_id"]), d


def test_bad_requests_are_rejected_with_klings_message_without_retry(reeld_factory, fake_kling, tmp_path):
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-1200")
    fake_kling.control(error_next=[1200])
    job = create(srv, "bad")
    failed = wait_terminal(srv, job.id, fake_kling)
    d = diag(srv, job.id, fake_kling)
    ri.assert_dead_lettered(failed, "PROVIDER_BAD_REQUEST", d)
    assert "Invalid request parameters" in failed.error.message, d
    assert failed.retry_count == 0 and not ri.retry_pairs(history(srv, job.id)), d
    assert fake_kling.stats()["refused"] == {"1200": 1}, d

    # A model Kling does not have: 1201 on a submit that carried an external id is looked up
    # by that id first (it may mean "already exists"); not found, it is a rejection.
    job2 = create(srv, "badmodel", config=pb.JobConfig(model="kling-v9-imaginary"))
    failed2 = wait_terminal(srv, job2.id, fake_kling)
    d2 = diag(srv, job2.id, fake_kling)
    ri.assert_dead_lettered(failed2, "PROVIDER_BAD_REQUEST", d2)
    assert "kling-v9-imaginary" in failed2.error.message, f"Kling's message (naming the model) is kept\n{d2}"
    assert failed2.retry_count == 0 and not ri.retry_pairs(history(srv, job2.id)), d2
    st = fake_kling.stats()
    assert st["creates_ok"] == 0 and st["refused"].get("1201") == 1, d2


def test_wrong_secret_key_fails_provider_auth_without_retry(reeld_factory, fake_kling, tmp_path):
    secret = "wrong-secret-" + uuid.uuid4().hex
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-auth", env={"KLING_SECRET_KEY": secret})
    job = create(srv, "auth")
    failed = wait_terminal(srv, job.id, fake_kling)
    d = diag(srv, job.id, fake_kling)
    ri.assert_dead_lettered(failed, "PROVIDER_AUTH", d)
    assert failed.retry_count == 0 and not ri.retry_pairs(history(srv, job.id)), d
    st = fake_kling.stats()
    assert st["auth_failures"] == {"1002": 2}, f"want the token renewed once, then the job failed\n{d}"
    assert st["creates_ok"] == 0 and st["tokens_seen"] == 0, d
    assert metric(ri.scrape(srv), "reel_provider_healthy", provider="kling") == 0, (
        f"Kling refusing the credentials reports the provider unhealthy\n{d}")
    assert secret not in reeld_own_log(srv), "reeld logged KLING_SECRET_KEY"


# --------------------------------------------------------------------------- 3. account concurrency


def test_two_instances_on_one_database_hold_the_accounts_concurrency(reeld_factory, fake_kling, tmp_path):
    fake_kling.control(concurrency_limit=2, queued_ms=100, processing_ms=400)
    art = tmp_path / "artifacts-conc"
    a = ri.kling_reeld(reeld_factory, "kling-conc-a", fake_kling.url, art, workers=3, concurrency=2)
    b = start_on(reeld_factory, fake_kling, art, "kling-conc-b", a.db_url, workers=3, concurrency=2)
    servers = [a, b]
    user = ri.unique("conc")
    n = 10
    jobs = [servers[i % 2].stub.CreateJob(ri.create_request(user, text=f"concurrency {i}"),
                                          timeout=ri.DEFAULT_TIMEOUT) for i in range(n)]
    done = [wait_done(servers[i % 2], j.id, fake_kling, timeout=90) for i, j in enumerate(jobs)]
    st = fake_kling.stats()
    d = diag(a, jobs[0].id, fake_kling)
    assert st["max_live"] <= 2, f"Kling saw {st['max_live']} live tasks with a limit of 2\n{d}"
    assert "1303" not in st["refused"], f"Reel provoked Kling's concurrency refusal: {st['refused']}\n{d}"
    assert st["creates_ok"] == n, d
    assert sorted(st["creates_by_external_id"]) == sorted(ext(j.id, 1) for j in jobs), d
    assert all(v == 1 for v in st["creates_by_external_id"].values()), d
    assert len({j.worker_id for j in done}) == 2, f"one instance ran everything: {[j.worker_id for j in done]}"
    r = ri.fault_report("kling: two reeld, account concurrency 2", a.db_url, [j.id for j in jobs])
    assert (r["lost"], r["duplicated"], r["completed"]) == (0, 0, n), r


def test_another_clients_task_costs_reel_a_few_1303s_at_most(reeld_factory, fake_kling, tmp_path):
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-other", workers=3, concurrency=2,
                   retry_base_ms=200)
    fake_kling.control(concurrency_limit=2, queued_ms=100, processing_ms=1500)
    other = fake_kling.create_as_other_client()  # holds one of the account's 2 slots for 1.6 s
    assert other["code"] == 0, other
    user = ri.unique("other")
    n = 5
    jobs = [srv.stub.CreateJob(ri.create_request(user, text=f"other client {i}"), timeout=ri.DEFAULT_TIMEOUT)
            for i in range(n)]
    for j in jobs:
        wait_done(srv, j.id, fake_kling, timeout=90)
    st = fake_kling.stats()
    d = diag(srv, jobs[0].id, fake_kling)
    refused = st["refused"].get("1303", 0)
    # The other client's task lives 1.6 s. Holding Reel to its own live tasks after a 1303, and
    # probing again after 0.2, 0.4, 0.8 s (--retry-base-ms 200, doubling), costs 4 refusals
    # whatever the number of waiting jobs; one spare for timing. Each waiting job resubmitting
    # on its own would cost several per job.
    assert 1 <= refused <= 5, (
        f"{refused} concurrency refusals: Reel should lower its use after the first 1303s\n{d}")
    assert set(st["refused"]) <= {"1303"}, d
    assert st["max_live"] <= 2, d
    assert st["creates_ok"] == n + 1, d
    for j in jobs:
        assert get(srv, j.id).retry_count == 0, f"a 1303 burned an attempt\n{diag(srv, j.id)}"
    r = ri.fault_report("kling: another client holds a slot", srv.db_url, [j.id for j in jobs])
    assert (r["lost"], r["duplicated"], r["completed"]) == (0, 0, n), r


# --------------------------------------------------------------------------- 4. never paid twice


def test_lost_submit_answer_is_found_by_external_id_not_paid_twice(reeld_factory, fake_kling, tmp_path):
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-drop")
    fake_kling.control(drop_response_next=1, queued_ms=50, processing_ms=300)
    job = create(srv, "drop")
    done = wait_done(srv, job.id, fake_kling)
    d = diag(srv, job.id, fake_kling)
    st = fake_kling.stats()
    assert st["dropped_responses"] == 1, d
    assert st["creates_ok"] == 1, f"the task was paid for twice\n{d}"
    [task] = tasks_of(fake_kling, job.id, st)
    assert task["external_task_id"] == ext(job.id, 1), d
    assert done.artifacts.provider_job_id == task["task_id"], d
    assert done.retry_count == 0, d
    finals = ri.psql_value(srv.db_url, f"SELECT count(*) FROM job_events WHERE job_id = '{job.id}' "
                                       "AND status = 'final_ready'")
    assert finals == "1", d


def test_failed_task_is_retried_with_a_new_task(reeld_factory, fake_kling, tmp_path):
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-failtask", retry_base_ms=50)
    fake_kling.control(fail_next_tasks=1, queued_ms=50, processing_ms=300)
    job = create(srv, "failtask")
    done = wait_done(srv, job.id, fake_kling, timeout=40)
    d = diag(srv, job.id, fake_kling)
    tasks = tasks_of(fake_kling, job.id)
    assert [t["external_task_id"] for t in tasks] == [ext(job.id, 1), ext(job.id, 2)], d
    assert [t["status"] for t in tasks] == ["failed", "succeed"], d
    assert done.artifacts.provider_job_id == tasks[1]["task_id"], d
    assert done.retry_count == 1, d
    events = history(srv, job.id)
    assert len(ri.retry_pairs(events)) == 1, d
    assert any(FAIL_MSG in e.message for e in events), f"Kling's task_status_msg is in no event\n{d}"


def test_retry_job_after_dead_lettered_provider_failure_submits_a_new_task(reeld_factory, fake_kling,
                                                                          tmp_path):
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-retryjob", retry_base_ms=50)
    fake_kling.control(fail_next_tasks=2, queued_ms=50, processing_ms=300)
    job = create(srv, "retryjob", max_retries=1)
    failed = wait_terminal(srv, job.id, fake_kling, timeout=40)
    d = diag(srv, job.id, fake_kling)
    ri.assert_dead_lettered(failed, "PROVIDER_FAILED", d)
    assert FAIL_MSG in failed.error.message, f"Kling's message is kept\n{d}"
    assert failed.retry_count == 1, d
    assert [t["external_task_id"] for t in tasks_of(fake_kling, job.id)] == [ext(job.id, 1), ext(job.id, 2)], d

    again = srv.stub.RetryJob(pb.RetryJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    assert again.status == S.JOB_STATUS_QUEUED, ri.describe_job(again)
    done = wait_done(srv, job.id, fake_kling)
    d = diag(srv, job.id, fake_kling)
    tasks = tasks_of(fake_kling, job.id)
    assert [t["external_task_id"] for t in tasks] == [ext(job.id, i) for i in (1, 2, 3)], d
    assert [t["status"] for t in tasks] == ["failed", "failed", "succeed"], d
    assert done.artifacts.provider_job_id == tasks[2]["task_id"], d
    assert fake_kling.stats()["creates_ok"] == 3, d


# --------------------------------------------------------------------------- 5. callbacks


def test_callbacks_drive_jobs_when_polling_is_slow_and_duplicates_are_harmless(reeld_factory, fake_kling,
                                                                             tmp_path):
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-callbacks", poll_ms=60000)
    fake_kling.control(queued_ms=100, processing_ms=400, duplicate_callbacks=True)
    t0 = time.monotonic()
    jobs = [create(srv, f"cb{i}") for i in range(3)]
    for j in jobs:
        wait_done(srv, j.id, fake_kling, timeout=20)
    took = time.monotonic() - t0
    st = fake_kling.stats()
    d = diag(srv, jobs[0].id, fake_kling)
    assert took < 30, f"three jobs took {took:.1f}s: polling (60 s), not callbacks, drove them\n{d}"

    for j in jobs:
        [task] = tasks_of(fake_kling, j.id, st)
        url = task["callback_url"]
        assert url and url.startswith(srv.http_url + "/v1/providers/kling/callback/"), d
        token = url.rsplit("/", 1)[1]
        assert len(token) >= 32, f"callback token {token!r} is under 128 bits\n{d}"
        mine = [c for c in st["callbacks"] if c["task_id"] == task["task_id"]]
        succeeded = [c for c in mine if c["status"] == "succeed"]
        assert len(succeeded) == 2, f"duplicate_callbacks: the succeed callback went out twice\n{d}"
        assert all(c["http_status"] == 200 for c in mine), f"callbacks not answered 200: {mine}\n{d}"
        finals = ri.psql_value(srv.db_url, f"SELECT count(*) FROM job_events WHERE job_id = '{j.id}' "
                                           "AND status = 'final_ready'")
        segments = ri.psql_value(srv.db_url, f"SELECT count(*) FROM segments WHERE job_id = '{j.id}'")
        assert (finals, segments) == ("1", "1"), f"final_ready events {finals}, segments {segments}\n{d}"
    assert st["creates_ok"] == 3, d


def test_forged_and_mismatched_callbacks_change_nothing(reeld_factory, fake_kling, tmp_path):
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-forged", poll_ms=200)
    fake_kling.control(queued_ms=50, stuck=True)
    job = create(srv, "forged")
    ri.wait_for("a task at Kling", lambda: tasks_of(fake_kling, job.id), 15)
    ri.wait_for("the task id to be saved", lambda: get(srv, job.id).artifacts.provider_job_id, 10)
    [task] = tasks_of(fake_kling, job.id)
    url = task["callback_url"]
    base, token = url.rsplit("/", 1)
    before = get(srv, job.id)
    now_ms = int(time.time() * 1000)

    def body(task_id, status, ext_id):
        b = {"task_id": task_id, "task_status": status, "task_status_msg": "", "created_at": now_ms,
             "updated_at": now_ms, "task_info": {"external_task_id": ext_id}, "final_unit_deduction": "1"}
        if status == "succeed":
            b["task_result"] = {"videos": [{"id": "x", "url": f"http://127.0.0.1:{ri.free_port()}/evil.mp4",
                                            "duration": "5"}]}
        elif status == "failed":
            b["task_status_msg"] = "forged failure"
        return b

    real_succeed = body(task["task_id"], "succeed", task["external_task_id"])
    for bad_token in (uuid.uuid4().hex + uuid.uuid4().hex, "nope"):
        status, text = post_json(f"{base}/{bad_token}", real_succeed)
        assert status == 404, f"a callback with an unknown token answered {status} {text!r}"
    for forged in (body(str(int(task["task_id"]) + 1), "succeed", task["external_task_id"]),
                   body(str(int(task["task_id"]) + 1), "failed", task["external_task_id"]),
                   body(task["task_id"], "failed", ext(job.id, 7))):
        status, text = post_json(url, forged)
        assert status == 409, f"a callback for another task answered {status} {text!r}: {forged}"
    # The envelope form with another task id, too.
    status, text = post_json(url, {"code": 0, "message": "SUCCEED", "request_id": str(uuid.uuid4()),
                                   "data": body("123", "succeed", task["external_task_id"])})
    assert status == 409, f"an enveloped callback for another task answered {status} {text!r}"

    time.sleep(0.5)
    cur = get(srv, job.id)
    d = diag(srv, job.id, fake_kling)
    assert cur.status == before.status and cur.stage == S.STAGE_VIDEO_GENERATION, f"a forged callback moved the job\n{d}"
    assert cur.retry_count == 0 and not cur.error.code, d
    assert "forged failure" not in ri.stored_history(srv.db_url, job.id), d

    fake_kling.control(stuck=False)
    done = wait_done(srv, job.id, fake_kling)
    d = diag(srv, job.id, fake_kling)
    assert done.artifacts.provider_job_id == task["task_id"] and done.retry_count == 0, d
    assert ri.file_path(done.result.video_url).is_file(), d
    assert fake_kling.stats()["creates_ok"] == 1, d


# --------------------------------------------------------------------------- 7. continuity


def test_continuation_starts_from_the_last_frame_through_image2video(reeld_factory, fake_kling, tmp_path):
    srv, art = start(reeld_factory, fake_kling, tmp_path, "kling-cont")
    fake_kling.control(queued_ms=50, processing_ms=300)
    scene = ri.unique("scene")
    user = ri.unique("cont")
    first = srv.stub.CreateJob(ri.create_request(user, scene_id=scene, text="The hero leaves the harbour"),
                               timeout=ri.DEFAULT_TIMEOUT)
    wait_done(srv, first.id, fake_kling)
    frame = art / first.id / "last_frame.png"
    assert frame.is_file() and frame.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", (
        f"no last_frame.png in {frame.parent}: {sorted(p.name for p in frame.parent.iterdir()) if frame.parent.is_dir() else '-'}")

    second = srv.stub.CreateJob(ri.create_request(user, scene_id=scene, text="The hero reaches the island",
                                                  type=pb.JOB_TYPE_CONTINUATION), timeout=ri.DEFAULT_TIMEOUT)
    done = wait_done(srv, second.id, fake_kling)
    d = diag(srv, second.id, fake_kling)
    [t1] = tasks_of(fake_kling, first.id)
    [t2] = tasks_of(fake_kling, second.id)
    assert t1["endpoint"] == "text2video", d
    assert t2["endpoint"] == "image2video", f"a continuation starts from the last frame\n{d}"
    assert t2["image_kind"] == "base64", d
    assert t2["image_width"] >= 300 and t2["image_height"] >= 300, d
    assert not t2["aspect_ratio_sent"], f"image2video takes no aspect_ratio\n{d}"
    assert t2["model_name_sent"] and t2["model_name"] == DEFAULT_MODEL, d
    assert t2["external_task_id"] == ext(second.id, 1), d
    assert done.artifacts.provider_job_id == t2["task_id"], d


# --------------------------------------------------------------------------- 8. progress


def test_progress_while_kling_generates_never_passes_84_nor_goes_back(reeld_factory, fake_kling, tmp_path):
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-progress")
    fake_kling.control(queued_ms=100, processing_ms=600)
    warm = create(srv, "progress-warm")  # a measured generation time for this model and mode
    wait_done(srv, warm.id, fake_kling)

    fake_kling.control(stuck=True)
    job = create(srv, "progress")
    watcher = ri.Watcher(srv.stub, job.id, after_seq=0, timeout=60)
    watcher.start()
    ri.wait_for("the task id to be saved", lambda: get(srv, job.id).artifacts.provider_job_id, 15)
    time.sleep(3.5)
    stuck = get(srv, job.id)
    assert stuck.stage == S.STAGE_VIDEO_GENERATION and stuck.progress <= 84, diag(srv, job.id, fake_kling)
    fake_kling.control(stuck=False)
    wait_done(srv, job.id, fake_kling)
    events = watcher.finish(20)
    d = diag(srv, job.id, fake_kling)
    assert watcher.error is None, f"watch ended with {watcher.error.code().name}\n{d}"
    progress = [e.progress for e in events]
    assert progress == sorted(progress), f"progress went backwards: {progress}\n{d}"
    ready = next(i for i, e in enumerate(events)
                 if e.stage in (S.STAGE_UPLOAD, S.STAGE_FINALIZATION, S.STAGE_COMPLETED)
                 or e.status in (S.JOB_STATUS_PREVIEW_READY, S.JOB_STATUS_FINAL_READY))
    before = events[:ready]
    assert before and max(e.progress for e in before) <= 84, (
        f"progress before the video was in: {[e.progress for e in before]}\n{d}")
    gen = [e.progress for e in before if e.stage == S.STAGE_VIDEO_GENERATION]
    assert gen and max(gen) > min(gen), f"progress did not move while Kling generated: {gen}\n{d}"
    assert events[-1].status == S.JOB_STATUS_FINAL_READY and events[-1].progress == 100, d


# --------------------------------------------------------------------------- 10. reelctl, metrics


def test_reelctl_get_shows_the_provider_task_and_request_and_metrics_are_exported(reeld_factory, fake_kling,
                                                                                 bin_dir, tmp_path):
    srv, _ = start(reeld_factory, fake_kling, tmp_path, "kling-ctl")
    fake_kling.control(queued_ms=50, processing_ms=300)
    job = create(srv, "ctl")
    done = wait_done(srv, job.id, fake_kling)
    task_id, request_id = done.artifacts.provider_job_id, done.artifacts.provider_request_id
    assert task_id and request_id, diag(srv, job.id, fake_kling)

    reelctl = Path(bin_dir) / "reelctl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REEL_")}
    r = subprocess.run([str(reelctl), "--address", srv.target, "get", job.id], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, env=env, timeout=30)
    out = f"`reelctl get` exited {r.returncode}\n--- stdout:\n{r.stdout}\n--- stderr:\n{r.stderr}"
    assert r.returncode == 0, out
    assert re.search(rf"^provider task:?\s+{re.escape(task_id)}\s*$", r.stdout, re.M), out
    assert re.search(rf"^provider request:?\s+{re.escape(request_id)}\s*$", r.stdout, re.M), out

    def exported():
        s = ri.scrape(srv)
        return s if (metric(s, "reel_provider_task_cap", provider="kling") is not None
                     and metric(s, "reel_provider_live_tasks", provider="kling") is not None) else None
    s = ri.wait_for("reel_provider_task_cap / reel_provider_live_tasks on /metrics", exported, 5, poll=0.2)
    assert metric(s, "reel_provider_task_cap", provider="kling") == 2, s
    assert metric(s, "reel_provider_live_tasks", provider="kling") in (0, 1), s
    submits = metric(s, "reel_provider_calls_total", provider="kling", call="submit", outcome="0")
    assert submits is not None and submits >= 1, (
        f"no reel_provider_calls_total{{provider=\"kling\",call=\"submit\",outcome=\"0\"}}: "
        f"{sorted(k for k in s if k[0] == 'reel_provider_calls_total')}")


# --------------------------------------------------------------------------- §8: keys required


@pytest.mark.parametrize("missing", [("KLING_ACCESS_KEY", "KLING_SECRET_KEY"), ("KLING_SECRET_KEY",)])
def test_kling_without_its_keys_exits_at_once_with_one_clear_line(reeld_factory, bin_dir, tmp_path, missing):
    db_url = reeld_factory.new_database()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REEL_", "KLING_"))}
    if "KLING_ACCESS_KEY" not in missing:
        env["KLING_ACCESS_KEY"] = ri.KLING_ACCESS_KEY
    args = [str(Path(bin_dir) / "reeld"), "--listen", f"127.0.0.1:{ri.free_port()}", "--database-url", db_url,
            "--metrics-listen", f"127.0.0.1:{ri.free_port()}", "--provider", "kling",
            "--provider-url", "http://127.0.0.1:9", "--artifacts-dir", str(tmp_path / "art")]
    t0 = time.monotonic()
    try:
        r = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=15)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"reeld --provider kling without {missing} still running after 15 s") from None
    took = time.monotonic() - t0
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    out = f"exit {r.returncode} after {took:.1f}s\n--- stdout:\n{r.stdout}\n--- stderr:\n{r.stderr}"
    assert r.returncode != 0, out
    assert took < 5, f"not at once: {out}"
    assert len(lines) == 1, f"want one clear line: {out}"
    assert missing[0] in lines[0], f"the line should name {missing[0]}: {out}"


@pytest.mark.parametrize("flags,names", [
    (("--provider", "kling,kling"), "provider"),
    (("--provider", "simulated,kling"), "provider"),
    (("--provider", "kling,runway", "--provider-url", "http://127.0.0.1:9"), "provider-url"),
    (("--provider", "kling", "--provider-concurrency", "kling=0"), "provider-concurrency"),
    (("--provider", "kling", "--provider-poll-ms", "soon"), "provider-poll-ms"),
])
def test_bad_provider_lists_and_per_provider_flags_exit_with_one_line(reeld_factory, bin_dir, tmp_path, flags, names):
    """`--provider` is a list in order of preference; the per-provider flags take NAME=VALUE
    (DESIGN §8). A list or a value it can't use: one line naming the flag, a non-zero exit."""
    db_url = reeld_factory.new_database()
    env = dict(os.environ, KLING_ACCESS_KEY=ri.KLING_ACCESS_KEY, KLING_SECRET_KEY=ri.KLING_SECRET_KEY,
               RUNWAYML_API_SECRET="test-runway-key")
    args = [str(Path(bin_dir) / "reeld"), "--listen", f"127.0.0.1:{ri.free_port()}", "--database-url", db_url,
            "--metrics-listen", f"127.0.0.1:{ri.free_port()}", "--artifacts-dir", str(tmp_path / "art"), *flags]
    r = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=15)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    out = f"exit {r.returncode}\n--- stdout:\n{r.stdout}\n--- stderr:\n{r.stderr}"
    assert r.returncode != 0 and len(lines) == 1, out
    assert f"--{names}" in lines[0] or names in lines[0], out
