"""Deadlines and ETA (issue #17 item 4, DESIGN §2 "Added 2026-12-04"): every Job carries
`eta_unix_ms` (0 when terminal), every JobEvent `eta_unix_ms` (never before its `at_unix_ms`,
0 on a terminal job and its events) and `at_risk` (ETA past the deadline); the estimates start
from `--sim-stage-ms` and the job's place in the queue. Through gRPC and the HTTP JSON."""

from __future__ import annotations

import threading
import time

import pytest

import reel_interop as ri
import reel_web as web
from reel_interop import pb

STEP_MS = 200
# The simulated pipeline: script, continuity, four polls of the provider, upload.
RUN_MS = 7 * STEP_MS


def now_ms() -> int:
    return int(time.time() * 1000)


def check_event_rules(ev, where: str):
    if ri.is_terminal(ev):
        assert ev.eta_unix_ms == 0 and not ev.at_risk, f"{where}: terminal event {ri.describe_event(ev)} has an ETA"
    else:
        assert ev.eta_unix_ms >= ev.at_unix_ms > 0, f"{where}: ETA {ev.eta_unix_ms} before its event {ri.describe_event(ev)}"


@pytest.fixture(scope="module")
def eta_reeld(_session_factory):
    """One worker, 200 ms stages, the HTTP side on."""
    return _session_factory("eta", workers=1, sim_stage_ms=STEP_MS, lease_seconds=3, http=True)


def test_eta_is_plausible_while_running_and_zero_once_final(eta_reeld):
    stub = eta_reeld.stub
    user = ri.unique("eta")
    before = now_ms()
    job = stub.CreateJob(ri.create_request(user))
    # Created with a free worker: expected in about one run from now.
    assert before + RUN_MS - 200 <= job.eta_unix_ms <= now_ms() + RUN_MS + 200, ri.describe_job(job)

    events, mid = [], []

    def sample():
        # GetJob while it runs: an ETA in the future-ish, not before now by more than a step.
        while True:
            j = stub.GetJob(pb.GetJobRequest(id=job.id))
            if ri.is_terminal(j):
                return
            if j.status != pb.JOB_STATUS_QUEUED:
                mid.append((now_ms(), j.eta_unix_ms, j.stage))
            time.sleep(0.05)

    t = threading.Thread(target=sample)
    t.start()
    for ev in ri.watch(stub, job.id, timeout=30):
        events.append(ev)
    t.join(30)
    assert events and ri.is_terminal(events[-1]) and events[-1].status == pb.JOB_STATUS_FINAL_READY
    finished = events[-1].at_unix_ms
    for ev in events:
        check_event_rules(ev, "watch")
    assert events[0].snapshot.eta_unix_ms > 0, "the opening snapshot's job carries the ETA"
    # While it ran, each ETA was within a sensible band of the real finish (stage times are
    # measured from this process's runs, so the band is a little over two steps).
    running = [ev for ev in events if not ri.is_terminal(ev) and ev.status != pb.JOB_STATUS_QUEUED]
    assert running, [ri.describe_event(e) for e in events]
    for ev in running:
        assert abs(ev.eta_unix_ms - finished) <= 3 * STEP_MS, \
            f"ETA {ev.eta_unix_ms} vs finish {finished}: {ri.describe_event(ev)}"
    assert mid, "GetJob saw it running"
    for at, eta, stage in mid:
        assert eta >= at - 50 and abs(eta - finished) <= 3 * STEP_MS, (at, eta, stage, finished)
    final = stub.GetJob(pb.GetJobRequest(id=job.id))
    assert final.status == pb.JOB_STATUS_FINAL_READY and final.eta_unix_ms == 0
    listed = stub.ListJobs(pb.ListJobsRequest(user_id=user)).jobs
    assert [j.eta_unix_ms for j in listed] == [0]
    # A replay of the stored history: the job is terminal, so all its events carry 0.
    replay = list(ri.watch(stub, job.id, after_seq=1, timeout=10))
    assert replay and all(e.eta_unix_ms == 0 and not e.at_risk for e in replay)


def test_queued_jobs_wait_their_turn_and_a_deadline_that_cannot_be_met_is_at_risk(eta_reeld):
    stub = eta_reeld.stub
    user = ri.unique("risk")
    backlog = [stub.CreateJob(ri.create_request(user, text=f"backlog {i}")) for i in range(3)]
    try:
        # One worker: each job waits for the ones ahead of it, a run each.
        etas = [stub.GetJob(pb.GetJobRequest(id=j.id)).eta_unix_ms for j in backlog]
        assert etas[0] < etas[1] < etas[2], etas
        assert etas[2] - now_ms() >= 2 * RUN_MS - 400, etas

        doomed = stub.CreateJob(ri.create_request(user, text="due in a second", deadline_unix_ms=now_ms() + 1000))
        assert doomed.deadline_unix_ms > 0 and doomed.eta_unix_ms > doomed.deadline_unix_ms, ri.describe_job(doomed)
        relaxed = stub.CreateJob(ri.create_request(user, text="due in an hour", deadline_unix_ms=now_ms() + 3_600_000))
        assert 0 < relaxed.eta_unix_ms < relaxed.deadline_unix_ms

        seen = {}
        for j in (doomed, relaxed):
            evs = []
            for ev in ri.watch(stub, j.id, timeout=60):
                check_event_rules(ev, j.input_text)
                evs.append(ev)
            seen[j.id] = evs
        # Every live event of the doomed job said so until it ended; the relaxed job's never did.
        d = seen[doomed.id]
        assert d[0].at_risk, ri.describe_event(d[0])
        assert all(e.at_risk for e in d if not ri.is_terminal(e)), [ri.describe_event(e) for e in d]
        assert not any(e.at_risk for e in seen[relaxed.id])
        assert d[-1].status == pb.JOB_STATUS_FINAL_READY and d[-1].eta_unix_ms == 0 and not d[-1].at_risk
        # The deadline's boost: the doomed job was claimed ahead of the older backlog still queued.
        got = stub.GetJob(pb.GetJobRequest(id=doomed.id))
        last_backlog = stub.GetJob(pb.GetJobRequest(id=backlog[2].id))
        assert got.started_at_unix_ms < last_backlog.started_at_unix_ms or last_backlog.started_at_unix_ms == 0
    finally:
        ri.cancel_quietly(stub, [j.id for j in backlog])


def test_http_json_carries_eta_and_at_risk(eta_reeld):
    base = eta_reeld.http_url
    user = ri.unique("eta-http")
    created = web.create_job(base, user, deadlineUnixMs=str(now_ms() + 3_600_000))
    assert int(created["etaUnixMs"]) > now_ms() - 1000, created
    got = web.call(base, "GET", f"/v1/jobs/{created['id']}").json
    assert int(got["etaUnixMs"]) > 0 and int(got["deadlineUnixMs"]) > 0, got
    status, events = web.sse_events(base, f"/v1/jobs/{created['id']}/events", timeout=30)
    assert status == 200 and events
    for e in events:
        data = e["data"]
        assert "atRisk" in data and "etaUnixMs" in data, data
        terminal = data["status"] in ("JOB_STATUS_FINAL_READY", "JOB_STATUS_CANCELLED")
        eta = int(data["etaUnixMs"])
        if terminal:
            assert eta == 0 and data["atRisk"] is False, data
        else:
            assert eta >= int(data["atUnixMs"]) and data["atRisk"] is False, data
    final = web.call(base, "GET", f"/v1/jobs/{created['id']}").json
    assert final["status"] == "JOB_STATUS_FINAL_READY" and int(final.get("etaUnixMs", 0)) == 0, final


def test_a_queued_jobs_eta_counts_every_instances_workers(reeld_factory):
    """The reeld answering (a coordinator with no workers of its own) counts the workers of
    every live reeld on the database: two running on another instance, the next two queued run
    in the second round and the fifth behind them in the third, not in the fifth round as one
    slot (this process's own minimum) would make it."""
    coord = reeld_factory("eta-coord", workers=0, sim_stage_ms=4000)
    runner = reeld_factory("eta-runner", db_url=coord.db_url, workers=2, sim_stage_ms=4000)
    user = ri.unique("eta-slots")
    jobs = [coord.stub.CreateJob(ri.create_request(user, text=f"job {i}")) for i in range(6)]
    ri.wait_for("two jobs running on the other instance",
                lambda: sum(coord.stub.GetJob(pb.GetJobRequest(id=j.id)).status == pb.JOB_STATUS_PROCESSING
                            for j in jobs) == 2, timeout=30, poll=0.1)
    time.sleep(0.6)  # the ETA's queue snapshot is at most 500 ms old
    queued = sorted((j for j in coord.stub.ListJobs(pb.ListJobsRequest(user_id=user)).jobs
                     if j.status == pb.JOB_STATUS_QUEUED), key=lambda j: j.eta_unix_ms)
    assert len(queued) == 4, [ri.describe_job(j) for j in queued]
    t = now_ms()
    first, last = queued[0].eta_unix_ms - t, queued[-1].eta_unix_ms - t
    # With 2 slots: the first queued ends after 2 runs, the fourth after 3 (ratio 1.5); with
    # one slot it would be 2 and 5 runs (ratio 2.5).
    assert 1.3 <= last / first <= 1.7, f"queued ETAs from now: {first} ms ... {last} ms"
    runner.stop()
