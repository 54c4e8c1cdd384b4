"""reeld with `--provider runway` against the strict fake of Runway's published task API
(DESIGN §5 "Providers" / "Runway", §8).

Each test runs a private reeld (`ri.runway_reeld`) on a database of its own against the
session's fake Runway (Tests/fake_runway), reset per test (the `fake_runway` fixture). The
fake checks the key and `X-Runway-Version` on every call and refuses what Runway refuses; its
stats say what Reel really sent. A failing assertion prints the job, its stored events and the
fake's stats.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import reel_interop as ri
from reel_interop import pb

S = pb


def start(reeld_factory, fr, tmp_path, name, **kw):
    art = tmp_path / f"artifacts-{name}"
    return ri.runway_reeld(reeld_factory, name, fr.url, art, **kw), art


def create(srv, user, text=None, scene_id="scene-1", **fields):
    return srv.stub.CreateJob(ri.create_request(user, scene_id=scene_id, text=text, **fields),
                              timeout=ri.DEFAULT_TIMEOUT)


def get(srv, job_id):
    return srv.stub.GetJob(pb.GetJobRequest(id=job_id), timeout=ri.DEFAULT_TIMEOUT)


def history(srv, job_id):
    return ri.watch(srv.stub, job_id, after_seq=1, timeout=15)


def diag(srv, job_id, fr=None) -> str:
    extra = [ri.fake_stats_text(fr, "fake Runway", last=("requests", 15), limit=5000)] if fr is not None else []
    return ri.job_diag(srv, job_id, *extra)


def wait_done(srv, job_id, fr, timeout=30.0):
    return ri.wait_job_explained(srv, job_id, lambda: diag(srv, job_id, fr), timeout=timeout)


def wait_terminal(srv, job_id, fr, timeout=30.0):
    return ri.wait_terminal_explained(srv, job_id, lambda: diag(srv, job_id, fr), timeout=timeout)


def task_of(fr, job):
    """The fake's task whose id the job recorded."""
    return next(t for t in fr.stats()["tasks"] if t["id"] == job.artifacts.provider_job_id)


# --------------------------------------------------------------------------- the happy paths


def test_a_new_scene_and_its_continuation_reach_final_ready_with_runways_fields_and_cost(
        reeld_factory, fake_runway, tmp_path):
    fr = fake_runway
    srv, art = start(reeld_factory, fr, tmp_path, "runway-happy",
                     extra_args=("--provider-cost-weight", "runway=0.5"))
    fr.control(pending_ms=50, running_ms=400)
    user = ri.unique("runway")
    text = "The hero sails into the storm"
    first = create(srv, user, text=text, scene_id="sea")
    done1 = wait_done(srv, first.id, fr)
    second = create(srv, user, text="The hero reaches the island", scene_id="sea",
                    type=pb.JOB_TYPE_CONTINUATION, config=pb.JobConfig(target_duration_seconds=8))
    done2 = wait_done(srv, second.id, fr)
    st = fr.stats()
    d = diag(srv, second.id, fr)

    # Every call carried the key and the version (the fake refuses otherwise).
    assert st["requests"] and all(r["auth_ok"] and r["version"] == "2024-11-06" for r in st["requests"]), d
    t1, t2 = task_of(fr, done1), task_of(fr, done2)
    assert (t1["endpoint"], t1["model"], t1["ratio"], t1["duration"]) == ("text_to_video", "gen4.5", "1280:720", 5), d
    assert text in t1["prompt"], f"the user's text reaches Runway verbatim\n{d}"
    assert t2["endpoint"] == "image_to_video", f"a continuation starts from the last frame\n{d}"
    assert t2["image"]["kind"] == "data" and t2["image"]["type"] == "png", d
    assert (t2["model"], t2["ratio"], t2["duration"]) == ("gen4.5", "1280:720", 8), d
    assert len(t2["prompt"]) <= 1000, d

    # Copied out into the artifact store (file:// under --artifacts-dir), not Runway's URL.
    for done in (done1, done2):
        url = done.result.video_url
        assert url.startswith("file://") and fr.url not in url, d
        p = ri.file_path(url)
        assert p.is_file() and p.read_bytes()[4:8] == b"ftyp", d
        assert done.provider == "runway" and done.retry_count == 0, d
    assert st["output_downloads"] >= 2, d

    # Cost: gen4.5 at 12 credits per second of output, weighted 0.5.
    assert done1.cost_units == 12 * 5 * 0.5 and done2.cost_units == 12 * 8 * 0.5, d
    assert ri.psql_value(srv.db_url, f"SELECT cost_units FROM provider_tasks WHERE job_id = '{first.id}'") == "60", d

    # Progress from Runway's own figure, within 40-84 while generating, never going back.
    gen = [e.progress for e in history(srv, first.id)
           if e.stage == S.STAGE_VIDEO_GENERATION and "generating video" in e.message]
    assert gen == sorted(gen) and gen and max(gen) <= 84, gen
    # 400 ms of RUNNING against a 60 s expected time would stay near 40: above 50 is Runway's figure.
    assert max(gen) > 50, f"progress does not follow Runway's `progress`: {gen}"


def test_an_image_only_model_starts_a_new_scene_from_a_title_card(reeld_factory, fake_runway, tmp_path):
    fr = fake_runway
    srv, _ = start(reeld_factory, fr, tmp_path, "runway-turbo")
    fr.control(pending_ms=20, running_ms=200)
    job = create(srv, ri.unique("turbo"), text="A lighthouse at dawn",
                 config=pb.JobConfig(model="gen4_turbo", target_duration_seconds=10))
    done = wait_done(srv, job.id, fr)
    d = diag(srv, job.id, fr)
    t = task_of(fr, done)
    assert (t["endpoint"], t["model"], t["duration"]) == ("image_to_video", "gen4_turbo", 10), d
    assert t["image"]["kind"] == "data" and t["image"]["type"] == "png" and t["image"]["bytes"] > 1000, d
    assert done.cost_units == 5 * 10, d


# --------------------------------------------------------------------------- error classes


def test_failed_tasks_safety_is_content_policy_internal_is_retried_with_a_new_task(
        reeld_factory, fake_runway, tmp_path):
    fr = fake_runway
    srv, _ = start(reeld_factory, fr, tmp_path, "runway-fail")
    fr.control(pending_ms=20, running_ms=100)
    bad = create(srv, ri.unique("safety"), text="A scene with FORBIDDEN_CONTENT in it")
    failed = wait_terminal(srv, bad.id, fr)
    d = diag(srv, bad.id, fr)
    ri.assert_dead_lettered(failed, "CONTENT_POLICY", d)
    assert "SAFETY.INPUT.TEXT" in failed.error.message and failed.retry_count == 0, d
    assert len(fr.stats()["tasks"]) == 1, f"a SAFETY failure is not resubmitted\n{d}"

    fr.control(fail_next_tasks=1, fail_code="INTERNAL.BAD_OUTPUT.CODE01")
    job = create(srv, ri.unique("internal"))
    done = wait_done(srv, job.id, fr)
    d = diag(srv, job.id, fr)
    assert done.retry_count == 1, d
    events = history(srv, job.id)
    assert any(e.status == S.JOB_STATUS_FAILED and "INTERNAL.BAD_OUTPUT.CODE01" in e.message for e in events), d
    tasks = [t for t in fr.stats()["tasks"] if t["status"] != "FAILED" or t["fail_code"].startswith("INTERNAL")]
    assert [t["status"] for t in tasks] == ["FAILED", "SUCCEEDED"], f"a retry submits a new task\n{d}"


def test_bad_request_and_auth_are_rejected_at_once(reeld_factory, fake_runway, tmp_path):
    fr = fake_runway
    srv, _ = start(reeld_factory, fr, tmp_path, "runway-bad")
    job = create(srv, ri.unique("bad"), config=pb.JobConfig(model="gen2"))
    failed = wait_terminal(srv, job.id, fr)
    d = diag(srv, job.id, fr)
    ri.assert_dead_lettered(failed, "PROVIDER_BAD_REQUEST", d)
    assert "model must be one of" in failed.error.message and fr.stats()["tasks"] == [], d
    srv.stop()

    srv2, _ = start(reeld_factory, fr, tmp_path, "runway-auth", env={"RUNWAYML_API_SECRET": "wrong-key"})
    job = create(srv2, ri.unique("auth"))
    failed = wait_terminal(srv2, job.id, fr)
    d = diag(srv2, job.id, fr)
    ri.assert_dead_lettered(failed, "PROVIDER_AUTH", d)
    own_log = "\n".join(ln for ln in srv2.log_text().splitlines() if not ln.startswith("----- "))
    assert "wrong-key" not in own_log, "the key is never logged"
    assert "RUNWAYML_API_SECRET" in failed.error.message, d


def test_429_throttles_5xx_retries_and_throttled_tasks_wait_without_burning_attempts(
        reeld_factory, fake_runway, tmp_path):
    fr = fake_runway
    srv, _ = start(reeld_factory, fr, tmp_path, "runway-throttle", concurrency=3)
    fr.control(pending_ms=20, running_ms=300, rate_limit_next=2, error_next=[502, 503], concurrency_limit=1)
    jobs = [create(srv, ri.unique(f"thr{i}")) for i in range(3)]
    for j in jobs:
        done = wait_done(srv, j.id, fr)
        assert done.retry_count == 0, diag(srv, j.id, fr)
    st = fr.stats()
    d = diag(srv, jobs[0].id, fr)
    outcomes = [c["outcome"] for c in st["creates"]]
    assert outcomes.count(429) == 2 and outcomes.count(502) == 1 and outcomes.count(503) == 1, d
    assert outcomes.count("created") == 3, f"one task per job, whatever was refused\n{d}"
    assert any("THROTTLED" in t["statuses"] for t in st["tasks"]), f"Runway's own queue was not used\n{d}"
    assert st["max_active"] == 1, d


def test_missing_credits_park_runway_and_a_probe_unparks_it(reeld_factory, fake_runway, tmp_path):
    fr = fake_runway
    srv, _ = start(reeld_factory, fr, tmp_path, "runway-park", probe_ms=500)
    fr.control(no_credits=True, pending_ms=20, running_ms=100)
    job = create(srv, ri.unique("park"))
    credits = lambda: [c for c in fr.stats()["creates"] if c["outcome"] == "no_credits"]  # noqa: E731
    ri.wait_for("two refused probes", lambda: len(credits()) >= 2, 10)
    cur = get(srv, job.id)
    d = diag(srv, job.id, fr)
    assert not ri.is_terminal(cur) and cur.retry_count == 0, f"a job failed while parked\n{d}"
    fr.control(no_credits=False)
    done = wait_done(srv, job.id, fr, timeout=20)
    assert done.retry_count == 0 and not done.dead_lettered, diag(srv, job.id, fr)
    events = history(srv, job.id)
    assert any("parked" in e.message for e in events), diag(srv, job.id, fr)


# --------------------------------------------------------------------------- cancel, lost answers


def test_cancelling_a_job_deletes_its_runway_task(reeld_factory, fake_runway, tmp_path):
    fr = fake_runway
    srv, _ = start(reeld_factory, fr, tmp_path, "runway-cancel")
    fr.control(stuck=True, pending_ms=10)
    job = create(srv, ri.unique("cancel"))
    ri.wait_for("the task to run at Runway",
                lambda: any(t["status"] == "RUNNING" for t in fr.stats()["tasks"]), 15)
    [task] = fr.stats()["tasks"]
    srv.stub.CancelJob(pb.CancelJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    ri.wait_for("DELETE /v1/tasks/{id}", lambda: task["id"] in fr.stats()["deletes"], 10)
    assert fr.stats()["tasks"][0]["status"] == "CANCELLED", diag(srv, job.id, fr)
    assert get(srv, job.id).status == S.JOB_STATUS_CANCELLED


def test_a_lost_submit_answer_fails_in_doubt_and_is_never_paid_twice(reeld_factory, fake_runway, tmp_path):
    fr = fake_runway
    srv, _ = start(reeld_factory, fr, tmp_path, "runway-doubt")
    fr.control(pending_ms=20, running_ms=100)
    # A job first, so reeld has connections to Runway it could reuse (libcurl silently resends
    # a request whose reused connection died unanswered: that would be a second, paid task).
    wait_done(srv, create(srv, ri.unique("warm")).id, fr)
    fr.control(drop_response_next=1)
    job = create(srv, ri.unique("doubt"))
    failed = wait_terminal(srv, job.id, fr)
    d = diag(srv, job.id, fr)
    ri.assert_dead_lettered(failed, "PROVIDER_IN_DOUBT", d)
    assert "RetryJob" in failed.error.message, d
    time.sleep(0.3)
    assert len(fr.stats()["tasks"]) == 2, f"resubmitted after a lost answer: paid twice\n{d}"
    assert [c["outcome"] for c in fr.stats()["creates"]] == ["created", "created"], d


def test_runway_without_its_key_exits_at_once_with_one_clear_line(reeld_factory, bin_dir, tmp_path):
    db_url = reeld_factory.new_database()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REEL_", "RUNWAYML_"))}
    args = [str(Path(bin_dir) / "reeld"), "--listen", f"127.0.0.1:{ri.free_port()}", "--database-url", db_url,
            "--provider", "runway", "--provider-url", "http://127.0.0.1:9", "--artifacts-dir", str(tmp_path / "art")]
    r = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=15)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode != 0 and len(lines) == 1 and "RUNWAYML_API_SECRET" in lines[0], (r.returncode, lines)


def test_sigkill_after_the_submit_resumes_the_saved_runway_task(reeld_factory, fake_runway, tmp_path):
    """Runway has no external id, so the task id saved before the task is followed is all a
    restart has: killed while Runway renders, the restarted reeld follows that same task and
    Runway is paid once."""
    fake_runway.control(pending_ms=300, running_ms=1500)
    srv, art = start(reeld_factory, fake_runway, tmp_path, "runway-crash", lease_seconds=2)
    job = create(srv, ri.unique("runway-crash"))
    seen = []
    call = srv.stub.WatchJob(pb.WatchJobRequest(id=job.id, after_seq=0), timeout=60)
    for ev in call:
        seen.append(ev)
        assert not ri.is_terminal(ev), diag(srv, job.id, fake_runway)
        if ev.message.startswith("submitted to runway: task "):
            break
    srv.proc.kill()
    srv.proc.wait(10)
    call.cancel()
    assert len(fake_runway.stats()["creates"]) == 1, diag(srv, job.id, fake_runway)
    srv.start()  # same ports, database and artifacts
    done = wait_done(srv, job.id, fake_runway, timeout=60)
    d = diag(srv, job.id, fake_runway)
    assert done.status == S.JOB_STATUS_FINAL_READY and done.provider == "runway", d
    assert len(fake_runway.stats()["creates"]) == 1, f"Runway was paid twice\n{d}"
    (task,) = fake_runway.stats()["tasks"]
    assert done.artifacts.provider_job_id == task["id"] and task["status"] == "SUCCEEDED", d
    assert any(e.message == f"resuming runway task {task['id']}" for e in history(srv, job.id)), d
