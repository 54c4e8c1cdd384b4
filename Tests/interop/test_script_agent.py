"""reeld with `--script-agent openai` (and `--continuity-agent openai`) against the strict fake of
OpenAI's Chat Completions API (Tests/fake_openai), the simulated video provider (DESIGN §5 item
1 and 2, §2 "Cost", §8).

The fake checks the Bearer key, the body (messages, response_format json_schema strict) and
answers in OpenAI's shape with usage; its knobs script rate limits, quota errors, 5xx and
malformed answers; its stats say what Reel sent (the bible, the previous segment's script).
"""

from __future__ import annotations

import json

import pytest

import reel_interop as ri
from reel_interop import pb

FakeOpenAI = ri.fake_openai_class()

KEY = "sk-reel-test"
MODEL = "gpt-fake-mini"
SCRIPT_SCHEMA = "reel_shot_script"
VERDICT_SCHEMA = "reel_continuity_verdict"
BIBLE = pb.SceneBible(
    characters=[pb.BibleEntity(name="Mara", aliases=["the keeper"], description="a lighthouse keeper with a red scarf")],
    locations=[pb.BibleEntity(name="North Light", description="a lighthouse on a cliff")],
    style={"palette": "cold blue"}, forbidden=["dragon"])
SHOT_SCRIPT = {
    "action": "Mara climbs to the lamp room as the storm gathers.",
    "location": "North Light",
    "characters": ["Mara"],
    "shots": [
        {"camera": "wide, slow push-in", "action": "waves break below the lighthouse", "characters": [],
         "duration_seconds": 2},
        {"camera": "close-up", "action": "Mara strikes a match, the red scarf in the wind", "characters": ["Mara"],
         "duration_seconds": 3},
    ],
}
CONSISTENT = {"consistent": True, "violations": [], "reasons": "Mara and North Light match the bible."}


@pytest.fixture(scope="module")
def fake_openai():
    with FakeOpenAI(api_key=KEY) as fo:
        yield fo


@pytest.fixture
def fo(fake_openai):
    fake_openai.reset()
    fake_openai.control(answers={SCRIPT_SCHEMA: SHOT_SCRIPT, VERDICT_SCHEMA: CONSISTENT})
    return fake_openai


def agent_reeld(factory, fo, name, *extra):
    srv = factory(name, workers=2, sim_stage_ms=20, start=False, extra_args=(
        "--script-agent", "openai", "--script-agent-url", fo.base_url, "--script-agent-model", MODEL,
        "--retry-base-ms", "50", *extra))
    ri.set_env(srv, {"OPENAI_API_KEY": KEY})
    srv.start()
    return srv


@pytest.fixture(scope="module")
def srv(_session_factory, fake_openai):
    """The script agent and the continuity agent both on."""
    return agent_reeld(_session_factory, fake_openai, "script-agent", "--continuity-agent", "openai")


def scene(srv, bible=BIBLE):
    scene_id = ri.unique("scene")
    ri.pb_grpc.SceneServiceStub(srv.channel).PutSceneBible(pb.PutSceneBibleRequest(scene_id=scene_id, bible=bible),
                                                           timeout=10)
    return scene_id


def create(srv, scene_id, text, **fields):
    return srv.stub.CreateJob(ri.create_request(ri.unique("agent"), scene_id=scene_id, text=text, **fields), timeout=10)


def wait_dead(srv, job_id, timeout=30.0):
    def dead():
        j = srv.stub.GetJob(pb.GetJobRequest(id=job_id), timeout=10)
        return j if j.status == pb.JOB_STATUS_FAILED and j.dead_lettered else None
    return ri.wait_for(f"job {job_id} dead-lettered", dead, timeout=timeout)


def messages_text(req):
    return "\n".join(m["content"] for m in req["messages"])


def script_requests(fo):
    return [r for r in fo.stats()["requests"] if r["schema_name"] == SCRIPT_SCHEMA]


def events_of(srv, job_id):
    """The job's stored events after the first ('queued'); a watch from 0 of an ended job gets its last only."""
    return ri.watch(srv.stub, job_id, after_seq=1, timeout=30)


def test_script_from_the_model_with_the_bible_and_the_previous_segment(srv, fo):
    sid = scene(srv)
    first = ri.wait_for_job(srv.stub, create(srv, sid, "Mara lights the lamp").id, timeout=30)
    cont = create(srv, sid, "the keeper watches a ship in the storm", type=pb.JOB_TYPE_CONTINUATION)
    job = ri.wait_for_job(srv.stub, cont.id, timeout=30)

    reqs = script_requests(fo)
    assert len(reqs) == 2 and all(r["status"] == 200 and r["authorized"] and r["model"] == MODEL for r in reqs)
    body = reqs[1]["body"]
    js = body["response_format"]["json_schema"]
    assert body["response_format"]["type"] == "json_schema" and js["strict"] is True and js["name"] == SCRIPT_SCHEMA
    assert set(js["schema"]["required"]) == {"action", "location", "characters", "shots"}
    sent = messages_text(reqs[1])
    assert [m["role"] for m in reqs[1]["messages"]] == ["system", "user"]
    for part in ("Mara", "a lighthouse keeper with a red scarf", "North Light", "cold blue", "dragon",
                 "the keeper watches a ship in the storm"):
        assert part in sent, f"{part!r} not sent to the model"
    # The previous segment's script (the first job's expanded script) reached the model.
    assert first.artifacts.expanded_script and first.artifacts.expanded_script in sent

    script = job.artifacts.expanded_script
    assert "SHOT 2 (3s, close-up): Mara strikes a match, the red scarf in the wind [Mara]" in script
    assert "LOCATION: North Light" in script and "STYLE palette: cold blue" in script
    # The user's text, kept (the rule-based checker then put the bible's name for the alias).
    assert script.endswith("ACTION: Mara watches a ship in the storm")
    assert len(script) <= 2500

    # The continuity agent was asked about this script and agreed; its verdict is stored.
    verdicts = [r for r in fo.stats()["requests"] if r["schema_name"] == VERDICT_SCHEMA]
    assert len(verdicts) == 2 and script in messages_text(verdicts[1])
    result = json.loads(job.artifacts.validation_result)
    assert result["valid"] is True and result["agent"]["consistent"] is True
    assert result["agent"]["reasons"] == CONSISTENT["reasons"] and result["agent"]["tokens"]["total"] > 0

    # Tokens: in the job's events and in metrics, not in cost_units (simulated: 1 unit for 5 s).
    expanded = [e for e in events_of(srv, cont.id) if e.message.startswith("script expanded by")]
    assert len(expanded) == 1 and MODEL in expanded[0].message and "tokens (" in expanded[0].message
    assert job.cost_units == 1
    m = ri.scrape(srv)
    assert m[("reel_script_agent_tokens_total", frozenset({("kind", "prompt")}))] > 0
    assert m[("reel_script_agent_tokens_total", frozenset({("kind", "completion")}))] > 0
    assert m[("reel_script_agent_requests_total", frozenset({("purpose", "script"), ("outcome", "ok")}))] >= 2


def test_rate_limit_is_retried_after_retry_after(srv, fo):
    fo.control(next=[{"error": "rate_limit_exceeded", "retry_after": 1}])
    job = ri.wait_for_job(srv.stub, create(srv, scene(srv), "Mara waits").id, timeout=30)
    reqs = script_requests(fo)
    assert [r["status"] for r in reqs] == [429, 200]
    assert reqs[1]["at"] - reqs[0]["at"] >= 0.95, "Retry-After: 1 was not honoured"
    assert "SHOT 1" in job.artifacts.expanded_script
    assert any("after 2 requests" in e.message for e in events_of(srv, job.id))


def test_insufficient_quota_fails_at_once_with_script_agent(srv, fo):
    fo.control(always={"error": "insufficient_quota"})
    job = wait_dead(srv, create(srv, scene(srv), "Mara sleeps").id)
    assert job.error.code == "SCRIPT_AGENT" and "insufficient_quota" in job.error.message, job.error
    assert job.retry_count == 0
    assert [r["status"] for r in script_requests(fo)] == [429]  # never retried
    m = ri.scrape(srv)
    assert m[("reel_script_agent_quota_exhausted", frozenset())] == 1
    assert m[("reel_script_agent_requests_total",
              frozenset({("purpose", "script"), ("outcome", "insufficient_quota")}))] >= 1


@pytest.mark.parametrize("action,reason", [
    ({"content": "Sure! Here is your script: Mara lights the lamp."}, "not JSON"),
    ({"answer": {"action": "x", "location": "y", "characters": ["Mara"]}}, "\"shots\" is missing"),
    ({"answer": dict(SHOT_SCRIPT, mood="dark")}, "\"mood\" is not allowed"),
    ({"finish_reason": "length"}, "finish_reason length"),
    ({"refusal": "I can't help with that."}, "refused"),
])
def test_malformed_answers_fail_with_script_agent(srv, fo, action, reason):
    fo.control(always=action)
    job = wait_dead(srv, create(srv, scene(srv), "Mara sings", max_retries=1).id)
    assert job.error.code == "SCRIPT_AGENT" and reason in job.error.message, job.error
    assert "after 4 requests" in job.error.message
    assert len(script_requests(fo)) == 8  # 4 requests in each of the 2 attempts
    assert not job.artifacts.expanded_script


def test_continuity_violation_by_the_agent(srv, fo):
    verdict = {"consistent": False, "violations": ["Mara wears a green coat; the bible gives her a red scarf"],
               "reasons": "The costume contradicts the bible."}
    fo.control(answers={SCRIPT_SCHEMA: SHOT_SCRIPT, VERDICT_SCHEMA: verdict})
    job = wait_dead(srv, create(srv, scene(srv), "Mara in a green coat").id)
    assert job.error.code == "CONTINUITY_VIOLATION", job.error
    assert "green coat" in job.error.message and "The costume contradicts the bible." in job.error.message
    assert job.retry_count == 0
    result = json.loads(job.artifacts.validation_result)
    assert result["valid"] is False and verdict["violations"][0] in result["violations"]
    assert result["agent"]["consistent"] is False and result["agent"]["reasons"] == verdict["reasons"]


def test_rule_based_checker_runs_before_the_agent(srv, fo):
    job = wait_dead(srv, create(srv, scene(srv), "a dragon lands on the lighthouse").id)
    assert job.error.code == "CONTINUITY_VIOLATION" and "dragon" in job.error.message
    assert not [r for r in fo.stats()["requests"] if r["schema_name"] == VERDICT_SCHEMA]


@pytest.fixture(scope="module")
def fallback_srv(_session_factory, fake_openai):
    """The script agent with the template as its fallback and a 700 ms request limit."""
    return agent_reeld(_session_factory, fake_openai, "agent-fallback", "--script-agent-fallback", "template",
                       "--script-agent-timeout-ms", "700")


def test_fallback_template_writes_the_script(fallback_srv, fo):
    srv = fallback_srv
    fo.control(always={"error": "overloaded"})
    job = ri.wait_for_job(srv.stub, create(srv, scene(srv), "Mara lights the lamp").id, timeout=30)
    assert [r["status"] for r in script_requests(fo)] == [503] * 4
    script = job.artifacts.expanded_script
    assert "SHOT 1" not in script and script.endswith("ACTION: Mara lights the lamp")
    assert "CHARACTER Mara: a lighthouse keeper with a red scarf" in script  # the template's lines
    notes = [e.message for e in events_of(srv, job.id) if "fallback" in e.message]
    assert len(notes) == 1 and "overloaded" in notes[0] and "template" in notes[0]


def test_a_request_past_its_time_limit_is_retried(fallback_srv, fo):
    srv = fallback_srv
    fo.control(next=[{"delay": 1.5}])
    job = ri.wait_for_job(srv.stub, create(srv, scene(srv), "Mara waits for dawn").id, timeout=30)
    # The fake records the abandoned request when its delay is over.
    reqs = ri.wait_for("both requests recorded", lambda: (r := script_requests(fo)) and len(r) >= 2 and r, timeout=5)
    reqs = sorted(reqs, key=lambda r: r["at"])
    assert len(reqs) == 2 and reqs[1]["at"] - reqs[0]["at"] >= 0.65, reqs
    assert "SHOT 1" in job.artifacts.expanded_script  # the model's, not the fallback's
    assert any("after 2 requests" in e.message for e in events_of(srv, job.id))


def test_an_agent_that_never_answers_fails_as_script_agent_within_the_stage(reeld_factory, fo):
    """Every request outlasts its 1.5 s limit; the stage allows 4 s. The retries stop when no
    time is left for another, so the job fails with SCRIPT_AGENT naming that, not with the
    stage's own timeout."""
    srv = agent_reeld(reeld_factory, fo, "agent-budget", "--script-agent-timeout-ms", "1500",
                      "--stage-timeout-seconds", "4")
    fo.control(always={"delay": 10})
    job = create(srv, scene(srv), "Mara waits for an answer", max_retries=1)
    failed = wait_dead(srv, job.id, timeout=30)
    assert failed.error.code == "SCRIPT_AGENT", ri.describe_job(failed)
    assert "no time left" in failed.error.message, failed.error.message
    fo.control(always=None)


def test_bad_agent_flags_end_reeld_with_one_line(reeld_factory, fo):
    srv = reeld_factory("agent-bad-flag", start=False, extra_args=("--script-agent", "gpt"))
    import subprocess
    r = subprocess.run(srv.args, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "--script-agent" in r.stderr and len(r.stderr.strip().splitlines()) == 1
