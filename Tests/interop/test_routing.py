"""Routing between providers (issue #16 item 4, DESIGN §5 "Routing", §8): reeld with
`--provider kling,runway` against the strict fakes of both. A job goes to the first provider
that is up (not parked, circuit closed) with a free slot; a parked or failing Kling, or a full
one, hands new work to Runway; one attempt never runs on two providers; `Job.provider` names
the one that ran it; GET /v1/providers and the metrics show each one's state."""

from __future__ import annotations

import json
import time
import urllib.request

import reel_interop as ri
from reel_interop import pb

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def routed_reeld(reeld_factory, fk, fr, tmp_path, name, kling_slots=2, runway_slots=2, probe_ms=30000):
    """A kling reeld (ri.kling_reeld: keys, callbacks, HTTP) with Runway listed second."""
    srv = ri.kling_reeld(reeld_factory, name, fk.url, tmp_path / f"art-{name}", start=False, probe_ms=probe_ms,
                         env={"RUNWAYML_API_SECRET": ri.RUNWAY_API_KEY},
                         extra_args=("--provider", "kling,runway",
                                     "--provider-url", f"kling={fk.url},runway={fr.url}",
                                     "--provider-concurrency", f"kling={kling_slots},runway={runway_slots}"))
    srv.start()
    return srv


def create(srv, n, prefix):
    return [srv.stub.CreateJob(ri.create_request(ri.unique(prefix)), timeout=ri.DEFAULT_TIMEOUT) for _ in range(n)]


def done(srv, jobs, fk, fr, timeout=60):
    return [ri.wait_job_explained(srv, j.id, lambda j=j: diag(srv, j.id, fk, fr), timeout=timeout) for j in jobs]


def diag(srv, job_id, fk, fr) -> str:
    st_k, st_r = fk.stats(), fr.stats()
    return "\n".join([ri.stored_history(srv.db_url, job_id),
                      f"kling: creates_ok {st_k['creates_ok']} refused {st_k['refused']} tasks {len(st_k['tasks'])}",
                      f"runway: creates {len(st_r['creates'])} tasks {[t['status'] for t in st_r['tasks']]}"])


def metric(samples, name, **labels):
    """The value of the series with exactly these labels, or None when absent."""
    return samples.get((name, frozenset(labels.items())))


def providers(srv) -> dict:
    with _NO_PROXY.open(srv.http_url + "/v1/providers", timeout=10) as r:
        return {p["name"]: p for p in json.loads(r.read())["providers"]}


def attempts(srv, job_id) -> list[tuple[str, str]]:
    """(provider, task id) of each of the job's attempts, from the database."""
    rows = ri.psql_value(srv.db_url, f"SELECT provider, task_id FROM provider_tasks WHERE job_id = '{job_id}' ORDER BY attempt")
    return [tuple(r.split("|")) for r in rows.splitlines()]


def runway_task_ids(fr) -> set[str]:
    return {t["id"] for t in fr.stats()["tasks"]}


def test_kling_up_takes_the_work_and_both_show_up(reeld_factory, fake_kling, fake_runway, tmp_path):
    fake_kling.control(queued_ms=50, processing_ms=200)
    srv = routed_reeld(reeld_factory, fake_kling, fake_runway, tmp_path, "route-pref")
    p = providers(srv)
    assert [(n, p[n]["order"], p[n]["state"]) for n in ("kling", "runway")] == [("kling", 0, "up"), ("runway", 1, "up")], p
    finished = done(srv, create(srv, 2, "pref"), fake_kling, fake_runway)
    assert [j.provider for j in finished] == ["kling", "kling"], [ri.describe_job(j) for j in finished]
    assert fake_runway.stats()["creates"] == [], "nothing went to Runway while Kling was up with free slots"


def test_a_parked_kling_hands_new_work_to_runway_and_takes_it_back_once_unparked(reeld_factory, fake_kling,
                                                                                  fake_runway, tmp_path):
    fake_kling.control(account="depleted", queued_ms=50, processing_ms=200)
    srv = routed_reeld(reeld_factory, fake_kling, fake_runway, tmp_path, "route-park", probe_ms=1500)
    finished = done(srv, create(srv, 3, "park"), fake_kling, fake_runway)
    d = "\n".join(ri.describe_job(j) for j in finished)
    assert [j.provider for j in finished] == ["runway"] * 3, d
    assert fake_kling.stats()["creates_ok"] == 0, d
    assert fake_kling.stats()["refused"].get("1102", 0) >= 1, "Kling was tried first and parked"
    assert providers(srv)["kling"]["state"] == "parked", providers(srv)
    assert metric(ri.scrape(srv), "reel_provider_parked", provider="kling") == 1
    for j in finished:  # one attempt, one provider, one task
        assert attempts(srv, j.id) == [("runway", j.artifacts.provider_job_id)], (attempts(srv, j.id), d)
        assert j.retry_count == 0 and not j.dead_lettered
    assert len(fake_runway.stats()["creates"]) == 3

    # Credit is back: the next probe (within 1.5 s) unparks Kling, and new work prefers it again.
    fake_kling.control(account="ok")
    later = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        later += done(srv, create(srv, 1, "back"), fake_kling, fake_runway)
        if later[-1].provider == "kling":
            break
        time.sleep(0.5)
    assert later and later[-1].provider == "kling", [ri.describe_job(j) for j in later]
    assert providers(srv)["kling"]["state"] == "up"


def test_a_failing_kling_opens_its_circuit_and_no_task_is_paid_twice(reeld_factory, fake_kling, fake_runway,
                                                                      tmp_path):
    # Every Kling submit answers 5001 (server error): after 5 in a row the circuit opens and
    # the attempts move to Runway, each only after Kling's lookup by external id found nothing.
    fake_kling.control(error_next=[5001] * 40, queued_ms=50, processing_ms=200)
    srv = routed_reeld(reeld_factory, fake_kling, fake_runway, tmp_path, "route-circuit")
    jobs = create(srv, 3, "circuit")
    finished = done(srv, jobs, fake_kling, fake_runway)
    d = "\n".join(ri.describe_job(j) for j in finished)
    assert [j.provider for j in finished] == ["runway"] * 3, d
    assert fake_kling.stats()["creates_ok"] == 0, d
    assert metric(ri.scrape(srv), "reel_provider_circuit_open", provider="kling") == 1, d
    assert providers(srv)["kling"]["state"] == "failing", providers(srv)
    tasks = runway_task_ids(fake_runway)
    for j in finished:
        got = attempts(srv, j.id)
        assert len(got) == 1 and got[0][0] == "runway" and got[0][1] in tasks, (got, d)
    assert len(fake_runway.stats()["creates"]) == 3, "one Runway task per job"


def test_a_full_kling_overflows_to_runway(reeld_factory, fake_kling, fake_runway, tmp_path):
    fake_kling.control(queued_ms=50, processing_ms=3000)
    fake_runway.control(pending_ms=50, running_ms=300)
    srv = routed_reeld(reeld_factory, fake_kling, fake_runway, tmp_path, "route-full", kling_slots=1, runway_slots=2)
    finished = done(srv, create(srv, 3, "full"), fake_kling, fake_runway)
    by = sorted(j.provider for j in finished)
    assert by.count("kling") >= 1 and by.count("runway") >= 2, [ri.describe_job(j) for j in finished]
    assert fake_kling.stats()["creates_ok"] == by.count("kling")
