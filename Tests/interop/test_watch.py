"""WatchJob: snapshot, ordering, replay and fan-out (DESIGN §2)."""

import grpc

import reel_interop as ri
from reel_interop import pb


def _check_stream_from_start(job_id, events):
    """Shape of a complete after_seq=0 stream that ended OK."""
    assert events, "WatchJob(after_seq=0) ended without any event"
    first = events[0]
    assert first.HasField("snapshot"), f"first event has no snapshot: {ri.describe_event(first)}"
    snap = first.snapshot
    assert snap.id == job_id
    assert first.seq == snap.last_event_seq, (
        f"snapshot event seq {first.seq} != snapshot.last_event_seq {snap.last_event_seq}")
    assert (first.status, first.stage, first.progress, first.message) == (
        snap.status, snap.stage, snap.progress, snap.message), (
        f"snapshot event fields differ from the snapshot: {ri.describe_event(first)} vs "
        f"{ri.describe_job(snap)}")
    for prev, ev in zip(events, events[1:]):
        assert not ev.HasField("snapshot"), f"snapshot on a later event: {ri.describe_event(ev)}"
        assert ev.seq == prev.seq + 1, (
            f"seq jumped {prev.seq} -> {ev.seq}: {[ri.describe_event(e) for e in events]}")
    for ev in events:
        assert ev.job_id == job_id, f"event job_id {ev.job_id!r} != {job_id}"
        assert 0 <= ev.progress <= 100, ri.describe_event(ev)
    progress = [ev.progress for ev in events]
    assert progress == sorted(progress), f"progress went backwards: {progress}"
    last = events[-1]
    assert last.status == pb.JOB_STATUS_FINAL_READY, (
        f"stream ended OK but its last event is not FINAL_READY: "
        f"{[ri.describe_event(e) for e in events]}")
    assert last.progress == 100
    assert all(not ri.is_terminal(ev) for ev in events[:-1]), (
        f"stream went on after a terminal event: {[ri.describe_event(e) for e in events]}")


def test_watch_from_start_streams_snapshot_then_every_event_until_final_ready(stub):
    job = stub.CreateJob(ri.create_request(ri.unique("watch")), timeout=ri.DEFAULT_TIMEOUT)
    events = ri.watch(stub, job.id, after_seq=0, timeout=60)
    _check_stream_from_start(job.id, events)

    # What was streamed live is what is stored: replay from the snapshot's seq.
    replay = ri.watch(stub, job.id, after_seq=events[0].seq, timeout=30)
    assert [ri.event_key(e) for e in replay] == [ri.event_key(e) for e in events[1:]]
    final = stub.GetJob(pb.GetJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    assert final.last_event_seq == events[-1].seq


def test_watch_on_a_terminal_job_yields_only_the_snapshot(stub):
    job = stub.CreateJob(ri.create_request(ri.unique("watchdone")), timeout=ri.DEFAULT_TIMEOUT)
    done = ri.wait_for_job(stub, job.id)
    events = ri.watch(stub, job.id, after_seq=0, timeout=10)
    assert len(events) == 1, [ri.describe_event(e) for e in events]
    ev = events[0]
    assert ev.HasField("snapshot")
    assert ev.status == pb.JOB_STATUS_FINAL_READY
    assert ev.seq == done.last_event_seq == ev.snapshot.last_event_seq
    assert ev.snapshot.result.video_url == done.result.video_url


def test_watch_after_seq_replays_stored_events_without_snapshot(stub):
    job = stub.CreateJob(ri.create_request(ri.unique("replay")), timeout=ri.DEFAULT_TIMEOUT)
    done = ri.wait_for_job(stub, job.id)
    last = done.last_event_seq
    assert last >= 4, f"a finished job should have several events: {ri.describe_job(done)}"

    from1 = ri.watch(stub, job.id, after_seq=1, timeout=10)
    from2 = ri.watch(stub, job.id, after_seq=2, timeout=10)
    assert [e.seq for e in from2] == list(range(3, last + 1))
    assert [e.seq for e in from1] == list(range(2, last + 1))
    assert not any(e.HasField("snapshot") for e in from1 + from2)
    assert [ri.event_key(e) for e in from2] == [ri.event_key(e) for e in from1[1:]], (
        "replaying the same stored events twice gave different events")
    assert from2[-1].status == pb.JOB_STATUS_FINAL_READY
    progress = [e.progress for e in from1]
    assert progress == sorted(progress) and 0 <= progress[0] and progress[-1] == 100, progress


def test_watch_after_the_last_seq_on_a_terminal_job_ends_at_once(stub):
    job = stub.CreateJob(ri.create_request(ri.unique("past")), timeout=ri.DEFAULT_TIMEOUT)
    done = ri.wait_for_job(stub, job.id)
    for after in (done.last_event_seq, done.last_event_seq + 10):
        events = ri.watch(stub, job.id, after_seq=after, timeout=10)
        assert events == [], f"after_seq={after}: {[ri.describe_event(e) for e in events]}"


def test_concurrent_watchers_on_separate_connections_see_the_same_sequence(reeld):
    stub = reeld.stub
    channels = [grpc.insecure_channel(reeld.target,
                                      options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(20)]
    try:
        for c in channels:  # connect first, so every watcher is there while the job runs
            ri.health_pb2_grpc.HealthStub(c).Check(ri.health_pb2.HealthCheckRequest(),
                                                   timeout=ri.DEFAULT_TIMEOUT)
        job = stub.CreateJob(ri.create_request(ri.unique("fanout")), timeout=ri.DEFAULT_TIMEOUT)
        watchers = [ri.Watcher(ri.pb_grpc.JobServiceStub(c), job.id, after_seq=0, timeout=60)
                    for c in channels]
        for w in watchers:
            w.start()
        for w in watchers:
            w.finish(60)
    finally:
        for c in channels:
            c.close()
    for i, w in enumerate(watchers):
        assert w.error is None, f"watcher {i}: {w.error.code().name} {w.error.details()}"
        _check_stream_from_start(job.id, w.events)

    stored = {e.seq: ri.event_key(e) for e in ri.watch(stub, job.id, after_seq=1, timeout=10)}
    for i, w in enumerate(watchers):
        live = [ri.event_key(e) for e in w.events[1:]]
        assert live == [stored[e.seq] for e in w.events[1:]], (
            f"watcher {i} saw events that differ from the stored ones")
    # Every watcher ends on the same final event (a lone snapshot carries only its seq/status).
    finals = {(w.events[-1].seq, w.events[-1].status) for w in watchers}
    assert len(finals) == 1, f"watchers ended on different events: {finals}"


def test_watchers_on_one_channel_share_it(reeld):
    """20 watch streams multiplexed on one HTTP/2 connection, plus unary calls alongside."""
    stub = reeld.stub
    job = stub.CreateJob(ri.create_request(ri.unique("mux")), timeout=ri.DEFAULT_TIMEOUT)
    calls = [stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=60) for _ in range(20)]
    got = stub.GetJob(pb.GetJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    assert got.id == job.id
    results = []
    for c in calls:
        try:
            results.append(list(c))
        except grpc.RpcError as e:
            raise AssertionError(f"watch failed: {e.code().name} {e.details()}")
    for events in results:
        _check_stream_from_start(job.id, events)


def test_reconnecting_watcher_with_after_seq_misses_nothing(reeld):
    """Read part of a live stream, drop it, resume with after_seq = last seen seq."""
    stub = reeld.stub
    job = stub.CreateJob(ri.create_request(ri.unique("resume")), timeout=ri.DEFAULT_TIMEOUT)
    call = stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=60)
    first_part = []
    for ev in call:
        first_part.append(ev)
        if len(first_part) >= 3 or ri.is_terminal(ev):
            break
    call.cancel()  # the client goes away mid-stream (RST_STREAM CANCEL)
    last_seen = first_part[-1].seq
    if ri.is_terminal(first_part[-1]):
        rest = ri.watch(stub, job.id, after_seq=last_seen, timeout=30)
        assert rest == []
    else:
        rest = ri.watch(stub, job.id, after_seq=last_seen, timeout=60)
        assert rest, "resumed watch of an unfinished job ended without events"
        assert not any(e.HasField("snapshot") for e in rest)
    combined = first_part + rest
    _check_stream_from_start(job.id, combined)
    stored = ri.watch(stub, job.id, after_seq=first_part[0].seq, timeout=30)
    assert [ri.event_key(e) for e in combined[1:]] == [ri.event_key(e) for e in stored]
