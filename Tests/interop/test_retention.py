"""Retention (`--retention-days`, issue #17 item 7) through the public API: a terminal job aged
past the retention keeps only its transitions, renumbered densely 1..k (DESIGN §2: `seq` stays
dense over the events that exist), and GetJob, WatchJob and the HTTP history agree on them.

reeld runs a retention pass at start (then every ten minutes): a restart on the same database
is how these tests trigger one.
"""

from __future__ import annotations

import reel_interop as ri
import reel_web as web


def stored_events(db_url: str, job_id: str) -> list[tuple[int, str, bool]]:
    rows = ri.psql_value(db_url, f"SELECT seq, status, dead_lettered FROM job_events WHERE job_id = '{job_id}' ORDER BY seq")
    return [(int(s), st, d == "t") for s, st, d in (ln.split("|") for ln in rows.splitlines() if ln)]


def transitions(events):
    """The events that change status or dead-lettering from the one before (the first stays)."""
    out, prev = [], None
    for seq, status, dead in events:
        if prev is None or (status, dead) != prev:
            out.append((seq, status, dead))
        prev = (status, dead)
    return out


def age(db_url: str, job_id: str, days: int = 40):
    ri.psql_value(db_url, f"UPDATE jobs SET created_at = created_at - interval '{days} days', "
                          f"completed_at = completed_at - interval '{days} days' WHERE id = '{job_id}' RETURNING 1")


def pruned_rows(srv, what: str) -> float:
    return ri.scrape(srv).get(("reel_retention_pruned_rows_total", frozenset({("what", what)})), 0.0)


def test_a_swept_job_keeps_its_transitions_numbered_densely_and_every_read_agrees(reeld_factory):
    srv = reeld_factory("retention", http=True, workers=2, sim_stage_ms=60)
    stub = srv.stub
    job = stub.CreateJob(ri.create_request(ri.unique("ret")), timeout=ri.DEFAULT_TIMEOUT)
    done = ri.wait_for_job(stub, job.id)
    before = stored_events(srv.db_url, job.id)
    kept = transitions(before)
    assert [e[0] for e in before] == list(range(1, len(before) + 1)), before
    assert done.last_event_seq == len(before)
    assert len(kept) < len(before), f"no progress event to prune: {before}"
    # Memory of the job before the pass (the restart drops it, but the reads after must not
    # be answered from anything older than the renumbering).
    assert stub.GetJob(ri.pb.GetJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT).last_event_seq == len(before)

    age(srv.db_url, job.id)
    srv.restart()
    stub = srv.stub
    k = len(kept)
    ri.wait_for("the retention pass to renumber the job's events", lambda: ri.psql_value(
        srv.db_url, f"SELECT last_event_seq FROM jobs WHERE id = '{job.id}'") == str(k), timeout=60)

    after = stored_events(srv.db_url, job.id)
    assert after == [(i + 1, st, d) for i, (_, st, d) in enumerate(kept)], (before, after)
    assert pruned_rows(srv, "events") == len(before) - k

    got = stub.GetJob(ri.pb.GetJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    assert got.last_event_seq == k and got.status == ri.pb.JOB_STATUS_FINAL_READY, got
    assert got.result.video_url == done.result.video_url

    # A watch from the start: the snapshot at the last seq, then the stream ends.
    opening = ri.watch(stub, job.id, after_seq=0)
    assert len(opening) == 1 and opening[0].HasField("snapshot"), [ri.describe_event(e) for e in opening]
    assert opening[0].seq == k and opening[0].snapshot.last_event_seq == k
    # A watch after the first event: every kept event after it, dense and in order.
    replay = ri.watch(stub, job.id, after_seq=1)
    assert [e.seq for e in replay] == list(range(2, k + 1)), [ri.describe_event(e) for e in replay]
    assert [ri.status_name(e.status) for e in replay] == ["JOB_STATUS_" + st.upper() for _, st, _ in kept[1:]]
    assert ri.watch(stub, job.id, after_seq=k) == []

    r = web.call(srv.http_url, "GET", f"/v1/jobs/{job.id}/events", headers={"Accept": "application/json"})
    assert r.status == 200, r
    assert [e["seq"] for e in r.json["events"]] == list(range(1, k + 1)), r.json
    r = web.call(srv.http_url, "GET", f"/v1/jobs/{job.id}")
    assert r.status == 200 and int(r.json["lastEventSeq"]) == k, r

