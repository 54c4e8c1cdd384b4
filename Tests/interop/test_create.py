"""CreateJob and the life of a job on the simulated provider (DESIGN §2, §5)."""

import time
import uuid

import reel_interop as ri
from reel_interop import pb


def test_create_job_returns_a_queued_job_echoing_the_request(stub):
    user = ri.unique("create")
    before_ms = int(time.time() * 1000)
    req = pb.CreateJobRequest(
        user_id=user, scene_id="scene-echo", type=pb.JOB_TYPE_CONTINUATION,
        input_text="The keeper climbs the stairs.", idempotency_key=f"key-{uuid.uuid4().hex}",
        tier=pb.TIER_PREMIUM, max_retries=0,
        config=pb.JobConfig(target_duration_seconds=8, quality=pb.QUALITY_HIGH, model="sim-1",
                            style_overrides={"palette": "teal", "grain": "35mm"}))
    job = stub.CreateJob(req, timeout=ri.DEFAULT_TIMEOUT)
    after_ms = int(time.time() * 1000)

    assert job.status == pb.JOB_STATUS_QUEUED, ri.describe_job(job)
    assert job.stage == pb.STAGE_PENDING, ri.describe_job(job)
    assert job.progress == 0
    assert job.last_event_seq == 1
    parsed = uuid.UUID(job.id)
    assert str(parsed) == job.id, f"id should be a canonical lowercase UUID, got {job.id!r}"
    assert job.user_id == user
    assert job.scene_id == "scene-echo"
    assert job.type == pb.JOB_TYPE_CONTINUATION
    assert job.input_text == req.input_text
    assert job.idempotency_key == req.idempotency_key
    assert job.tier == pb.TIER_PREMIUM
    assert job.max_retries == 3, "max_retries 0 means the default, 3"
    assert job.retry_count == 0
    assert not job.dead_lettered
    assert job.config.target_duration_seconds == 8
    assert job.config.quality == pb.QUALITY_HIGH
    assert job.config.model == "sim-1"
    assert dict(job.config.style_overrides) == {"palette": "teal", "grain": "35mm"}
    assert before_ms - 5000 <= job.created_at_unix_ms <= after_ms + 5000, (
        f"created_at_unix_ms {job.created_at_unix_ms} not near now ({before_ms}..{after_ms})")


def test_explicit_max_retries_is_kept(stub):
    job = stub.CreateJob(ri.create_request(ri.unique("retries"), max_retries=7),
                         timeout=ri.DEFAULT_TIMEOUT)
    assert job.max_retries == 7


def test_get_job_returns_the_created_job(stub):
    created = stub.CreateJob(ri.create_request(ri.unique("get")), timeout=ri.DEFAULT_TIMEOUT)
    got = stub.GetJob(pb.GetJobRequest(id=created.id), timeout=ri.DEFAULT_TIMEOUT)
    assert got.id == created.id
    assert got.user_id == created.user_id
    assert got.input_text == created.input_text
    assert got.created_at_unix_ms == created.created_at_unix_ms
    assert got.last_event_seq >= 1


def test_created_job_reaches_final_ready_with_result_and_artifacts(stub):
    created = stub.CreateJob(ri.create_request(ri.unique("complete")),
                             timeout=ri.DEFAULT_TIMEOUT)
    job = ri.wait_for_job(stub, created.id, timeout=60)

    assert job.status == pb.JOB_STATUS_FINAL_READY
    assert job.progress == 100, ri.describe_job(job)
    assert job.stage == pb.STAGE_COMPLETED, ri.describe_job(job)
    assert job.result.segment_id, f"result.segment_id empty: {job.result}"
    assert job.result.video_url, f"result.video_url empty: {job.result}"
    assert job.artifacts.expanded_script, f"artifacts.expanded_script empty: {job.artifacts}"
    assert job.last_event_seq > 1
    assert not job.dead_lettered
    assert job.started_at_unix_ms >= job.created_at_unix_ms > 0, ri.describe_job(job)
    assert job.completed_at_unix_ms >= job.started_at_unix_ms, ri.describe_job(job)


def test_jobs_of_both_types_and_tiers_complete(stub):
    user = ri.unique("kinds")
    ids = []
    for t in (pb.JOB_TYPE_SCENE_CREATION, pb.JOB_TYPE_CONTINUATION):
        for tier in (pb.TIER_UNSPECIFIED, pb.TIER_STANDARD, pb.TIER_PREMIUM):
            ids.append(stub.CreateJob(ri.create_request(user, type=t, tier=tier),
                                      timeout=ri.DEFAULT_TIMEOUT).id)
    assert len(set(ids)) == len(ids)
    for i in ids:
        ri.wait_for_job(stub, i, timeout=60)


def test_create_job_answers_well_under_500_ms(stub):
    user = ri.unique("latency")
    times = []
    for i in range(20):
        start = time.monotonic()
        stub.CreateJob(ri.create_request(user, text=f"latency {i}"), timeout=ri.DEFAULT_TIMEOUT)
        times.append(time.monotonic() - start)
    times.sort()
    assert times[len(times) // 2] < 0.5, f"median CreateJob latency {times[len(times) // 2]:.3f}s"
    print(f"CreateJob latency: median {times[10] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms")
