"""reel-bench (DESIGN §7, issue 5 item 6): each mode runs briefly against a private reeld and
reports numbers that hold together; the run is bounded by count and by time; setup failures
and usage errors have their own exit codes; calls beyond the server's
SETTINGS_MAX_CONCURRENT_STREAMS wait on the client instead of being refused.

The binary is $REEL_BENCH_BIN if set, else reel-bench next to reeld in $REEL_BIN_DIR.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from concurrent import futures
from pathlib import Path

import grpc
import pytest

import reel_interop as ri
from reel_interop import health_pb2, health_pb2_grpc, pb, pb_grpc

LATENCY_KEYS = ("p50", "p90", "p99", "p999", "max", "mean")


@pytest.fixture(scope="module")
def bench_bin(bin_dir) -> Path:
    path = Path(os.environ.get("REEL_BENCH_BIN") or Path(bin_dir) / "reel-bench")
    if not path.exists():
        pytest.fail(f"no reel-bench at {path}: build it (swift build) or set REEL_BENCH_BIN",
                    pytrace=False)
    return path


@pytest.fixture
def fast_reeld(reeld_factory):
    """A private reeld (own database: counts are this test's) with no-op jobs (--sim-stage-ms 0)."""
    return reeld_factory("bench-fast", workers=8, sim_stage_ms=0)


def run_bench(bench_bin, *args, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(bench_bin), *args], capture_output=True, text=True, timeout=timeout)


def bench_json(bench_bin, mode: str, target: str, *args, timeout: float = 60.0) -> dict:
    r = run_bench(bench_bin, mode, "--address", target, "--json", *args, timeout=timeout)
    assert r.returncode == 0, (f"reel-bench {mode} exited {r.returncode}\nstdout: {r.stdout}\n"
                               f"stderr: {r.stderr}")
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, f"--json should print exactly one line, got {r.stdout!r}"
    try:
        report = json.loads(lines[0])
    except json.JSONDecodeError as e:
        raise AssertionError(f"--json output is not JSON ({e}): {lines[0]!r}")
    return report


def check_report(report: dict, mode: str, connections: int, concurrency: int):
    """The invariants every report keeps, whatever the mode."""
    for key in ("mode", "connections", "concurrency", "ok", "failed", "errors_by_code",
                "elapsed_s", "throughput_rps", "latency_ms", "histogram"):
        assert key in report, f"report lacks {key!r}: {report}"
    assert report["mode"] == mode
    assert report["connections"] == connections
    assert report["concurrency"] == concurrency
    assert report["ok"] > 0, f"no successful requests: {report}"
    assert report["failed"] == 0 and report["errors_by_code"] == {}, f"failures: {report}"
    lat = report["latency_ms"]
    assert set(LATENCY_KEYS) <= set(lat), f"latency_ms keys: {lat}"
    assert all(isinstance(lat[k], (int, float)) and lat[k] >= 0 for k in LATENCY_KEYS), lat
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"], (
        f"percentiles not monotone: {lat}")
    assert lat["p50"] > 0, f"a zero median latency is not a measurement: {lat}"
    assert 0 < lat["mean"] <= lat["max"], lat
    elapsed = report["elapsed_s"]
    assert elapsed > 0
    expected = report["ok"] / elapsed
    assert abs(report["throughput_rps"] - expected) <= max(0.01 * expected, 0.5), (
        f"throughput {report['throughput_rps']} != ok/elapsed {expected:.3f}")
    hist = report["histogram"]
    assert hist, "empty histogram"
    bounds = [b["le_ms"] for b in hist]
    assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), f"bucket bounds: {bounds}"
    assert sum(b["count"] for b in hist) == report["ok"], (
        f"histogram counts {sum(b['count'] for b in hist)} != ok {report['ok']}")
    assert bounds[-1] >= lat["max"], f"max {lat['max']} above the last bucket {bounds[-1]}"
    assert len(bounds) == 1 or bounds[-2] <= lat["max"], "the last bucket should hold the max"


def job_counts(db_url: str) -> dict[str, int]:
    rows = ri.psql_value(db_url, "SELECT status, count(*) FROM jobs GROUP BY status")
    return {s: int(n) for s, n in (r.split("|") for r in rows.splitlines() if r)}


# --------------------------------------------------------------------------- modes


def test_create_mode_reports_durable_creates(bench_bin, fast_reeld):
    before = sum(job_counts(fast_reeld.db_url).values())
    start = time.monotonic()
    report = bench_json(bench_bin, "create", fast_reeld.target, "--duration", "2",
                        "--connections", "2", "--concurrency", "8", "--users", "5")
    wall = time.monotonic() - start
    check_report(report, "create", 2, 8)
    assert 2.0 <= report["elapsed_s"] <= 2.0 + 10.0, f"elapsed {report['elapsed_s']}"
    assert wall < 2.0 + 30.0, f"bounded by --duration 2 yet ran {wall:.1f}s"
    created = sum(job_counts(fast_reeld.db_url).values()) - before
    # Each OK CreateJob is a new committed job (unique inputs): the database agrees with the count.
    assert created == report["ok"], f"{created} jobs stored, report says {report['ok']} created"
    users = ri.psql_value(fast_reeld.db_url, "SELECT count(DISTINCT user_id) FROM jobs "
                                             "WHERE user_id LIKE 'bench-user-%'")
    assert int(users) == min(5, report["ok"]), f"jobs should spread over --users 5, got {users}"


def test_create_batch_mode_reports_committed_jobs(bench_bin, fast_reeld):
    before = sum(job_counts(fast_reeld.db_url).values())
    report = bench_json(bench_bin, "create-batch", fast_reeld.target, "--batch", "50", "--duration", "2",
                        "--connections", "2", "--concurrency", "2", "--users", "7", "--scenes", "3")
    check_report(report, "create-batch", 2, 2)   # ok, latency and histogram count calls
    assert report["batch"] == 50
    # Every OK call is 50 new committed jobs (unique inputs), and nothing failed.
    assert report["jobs"] == 50 * report["ok"], report
    assert report["jobs_per_s"] == pytest.approx(report["jobs"] / report["elapsed_s"], rel=0.01), report
    created = sum(job_counts(fast_reeld.db_url).values()) - before
    # The warmup is 0, so every call the run made was measured: the database agrees.
    assert created == report["jobs"], f"{created} jobs stored, report says {report['jobs']}"
    users = ri.psql_value(fast_reeld.db_url, "SELECT count(DISTINCT user_id) || '|' || count(DISTINCT scene_id) "
                                             "FROM jobs WHERE user_id LIKE 'bench-user-%'")
    assert users == "7|3", f"jobs should spread over --users 7 and --scenes 3: {users}"


def test_create_batch_mode_counts_refused_batches(bench_bin, fast_reeld):
    # Over the server's 1,000-item limit: every call is INVALID_ARGUMENT, no job is committed.
    report = bench_json(bench_bin, "create-batch", fast_reeld.target, "--batch", "1001", "--requests", "3",
                        "--concurrency", "1")
    assert report["ok"] == 0 and report["jobs"] == 0, report
    assert report["errors_by_code"] == {"INVALID_ARGUMENT": 3}, report


def test_get_mode_stops_at_requests_count(bench_bin, fast_reeld):
    before = sum(job_counts(fast_reeld.db_url).values())
    report = bench_json(bench_bin, "get", fast_reeld.target, "--requests", "300",
                        "--duration", "30", "--connections", "3", "--concurrency", "7")
    check_report(report, "get", 3, 7)
    assert report["ok"] == 300, f"--requests 300 should give exactly 300, got {report}"
    assert report["elapsed_s"] < 30, "the count bound should end the run long before --duration"
    assert sum(job_counts(fast_reeld.db_url).values()) - before == 1, "get creates exactly one job"


def test_e2e_mode_waits_for_final_ready(bench_bin, fast_reeld):
    before = job_counts(fast_reeld.db_url)
    report = bench_json(bench_bin, "e2e", fast_reeld.target, "--duration", "2",
                        "--concurrency", "8", "--timeout", "30")
    check_report(report, "e2e", 1, 8)
    after = job_counts(fast_reeld.db_url)
    finals = after.get("final_ready", 0) - before.get("final_ready", 0)
    created = sum(after.values()) - sum(before.values())
    assert created == report["ok"] and finals == report["ok"], (
        f"every e2e job counted OK must be FINAL_READY: ok={report['ok']} created={created} "
        f"final_ready={finals} ({after})")
    # create → FINAL_READY is a create plus every stage: slower than no time at all.
    assert report["latency_ms"]["p50"] >= 1.0, report["latency_ms"]


def test_watchers_mode_measures_event_delivery(bench_bin, reeld_factory):
    srv = reeld_factory("bench-watch", workers=4, sim_stage_ms=100)
    report = bench_json(bench_bin, "watchers", srv.target, "--duration", "3",
                        "--connections", "2", "--watchers", "40", "--timeout", "30")
    check_report(report, "watchers", 2, 20)
    w = report.get("watchers")
    assert w, f"watchers mode reports its streams: {report}"
    assert w["watchers"] == 40 and w["jobs"] >= 1, w
    # Every stream opens with a snapshot (the last job's may be cut by the 3 s limit).
    assert 40 * (w["jobs"] - 1) <= w["open_count"] <= 40 * w["jobs"] and w["open_count"] >= 40, w
    assert w["streams_ok"] >= 40, f"the first job's 40 streams should all end OK: {w}"
    open_ms = w["open_ms"]
    assert open_ms["p50"] <= open_ms["p99"] <= open_ms["max"], open_ms
    # Each fully watched job delivers every live event to every watcher: at least one each.
    assert report["ok"] >= w["streams_ok"], f"{report['ok']} events for {w['streams_ok']} streams"
    assert report["latency_ms"]["max"] < 10_000, f"delivery latency implausible: {report['latency_ms']}"


def test_watchers_mode_on_given_job_id_watches_only_it(bench_bin, reeld_factory):
    srv = reeld_factory("bench-watch-id", workers=2, sim_stage_ms=100)
    job = srv.stub.CreateJob(ri.create_request(ri.unique("benchwatch")), timeout=ri.DEFAULT_TIMEOUT)
    report = bench_json(bench_bin, "watchers", srv.target, "--job-id", job.id, "--duration", "3",
                        "--watchers", "10")
    check_report(report, "watchers", 1, 10)
    assert report["watchers"]["jobs"] == 1
    assert ri.psql_value(srv.db_url, "SELECT count(*) FROM jobs") == "1", "no jobs of its own"
    final = ri.wait_for_job(srv.stub, job.id, timeout=30)
    # No watcher can see more live events than the job has.
    assert report["ok"] <= 10 * final.last_event_seq, (report["ok"], final.last_event_seq)


def test_table_output_names_the_numbers(bench_bin, fast_reeld):
    r = run_bench(bench_bin, "get", "--address", fast_reeld.target, "--requests", "50")
    assert r.returncode == 0, r.stderr
    for word in ("get", "50 ok, 0 failed", "throughput", "p50", "p99.9", "histogram"):
        assert word in r.stdout, f"table lacks {word!r}:\n{r.stdout}"


# --------------------------------------------------------------------------- exit codes


def test_unreachable_server_is_a_setup_failure(bench_bin):
    port = ri.free_port()  # nothing listens there
    r = run_bench(bench_bin, "create", "--address", f"127.0.0.1:{port}", "--duration", "1", "--json")
    assert r.returncode == 1, f"exit {r.returncode}, stderr {r.stderr!r}"
    assert r.stdout.strip() == "", f"no report without a run: {r.stdout!r}"
    assert "cannot connect" in r.stderr and f"127.0.0.1:{port}" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, f"one clear line: {r.stderr!r}"


def test_non_grpc_server_is_a_setup_failure(bench_bin, fast_reeld):
    # The metrics port speaks HTTP/1.1: connected, but no health answer.
    r = run_bench(bench_bin, "get", "--address", f"127.0.0.1:{fast_reeld.metrics_port}",
                  "--duration", "1", "--timeout", "2")
    assert r.returncode == 1, f"exit {r.returncode}, stderr {r.stderr!r}"
    assert "health" in r.stderr, r.stderr


def test_unknown_job_id_is_a_setup_failure(bench_bin, fast_reeld):
    missing = str(uuid.uuid4())
    r = run_bench(bench_bin, "watchers", "--address", fast_reeld.target, "--job-id", missing,
                  "--duration", "1")
    assert r.returncode == 1, f"exit {r.returncode}, stderr {r.stderr!r}"
    assert missing in r.stderr and "NOT_FOUND" in r.stderr, r.stderr


@pytest.mark.parametrize("args, says", [
    (["create", "--address", "10.1.2.3:50051"], "--allow-remote"),
    (["create", "--address", "127.0.0.1:notaport"], "port"),
    (["nosuchmode"], "nosuchmode"),
    (["get", "--connections", "0"], "--connections"),
    (["get", "--job-id", "x"], "--job-id"),
    (["create", "--batch", "10"], "--batch"),
    (["create-batch", "--batch", "0"], "--batch"),
])
def test_usage_errors_exit_2(bench_bin, args, says):
    r = run_bench(bench_bin, *args)
    assert r.returncode == 2, f"{args}: exit {r.returncode}, stderr {r.stderr!r}"
    assert says in r.stderr, f"{args}: {r.stderr!r}"


# --------------------------------------------------------------------------- stream limit


class _SlowJobService(pb_grpc.JobServiceServicer):
    """GetJob takes 20 ms and records how many run at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.calls = 0

    def CreateJob(self, request, context):
        return pb.Job(id=str(uuid.uuid4()), user_id=request.user_id, status=pb.JOB_STATUS_QUEUED)

    def GetJob(self, request, context):
        with self.lock:
            self.running += 1
            self.calls += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(0.02)
            return pb.Job(id=request.id, status=pb.JOB_STATUS_QUEUED)
        finally:
            with self.lock:
                self.running -= 1


class _Health(health_pb2_grpc.HealthServicer):
    def Check(self, request, context):
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
def slow_grpc_server():
    """A grpcio JobService (GetJob takes 20 ms) that allows 4 concurrent streams per connection."""
    service = _SlowJobService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64),
                         options=[("grpc.max_concurrent_streams", 4)])
    pb_grpc.add_JobServiceServicer_to_server(service, server)
    health_pb2_grpc.add_HealthServicer_to_server(_Health(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield service, f"127.0.0.1:{port}", 4
    server.stop(grace=None)


def test_calls_beyond_max_concurrent_streams_wait_on_the_client(bench_bin, slow_grpc_server):
    service, target, limit = slow_grpc_server
    report = bench_json(bench_bin, "get", target, "--concurrency", "32", "--requests", "200",
                        "--duration", "30", "--timeout", "30")
    # 32 calls in flight against a limit of 4: the other 28 wait for a stream on the client
    # (a client that opened them anyway would have them refused and fail).
    check_report(report, "get", 1, 32)
    assert report["ok"] == 200, report
    assert service.peak <= limit, f"{service.peak} GetJob ran at once; the server allows {limit}"
    assert service.peak == limit, f"the queue should keep all {limit} streams busy, peak {service.peak}"
    # 200 calls of 20 ms, 4 at a time: at least 1 s; the latency includes the wait in the queue.
    assert report["elapsed_s"] >= 200 * 0.02 / limit * 0.9, report["elapsed_s"]
    assert report["latency_ms"]["p50"] >= 20 * 32 / limit * 0.5, report["latency_ms"]


def test_failed_calls_are_counted_by_code_and_the_run_still_exits_0(bench_bin, slow_grpc_server):
    service, target, limit = slow_grpc_server
    # 32 in flight, 4 served at a time, 20 ms each: most calls wait ~160 ms; a 60 ms deadline
    # (counting from the call, queue included) fails them with DEADLINE_EXCEEDED.
    report = bench_json(bench_bin, "get", target, "--concurrency", "32", "--requests", "200",
                        "--duration", "30", "--timeout", "0.06")
    codes = report["errors_by_code"]
    assert set(codes) == {"DEADLINE_EXCEEDED"}, codes
    assert report["failed"] == codes["DEADLINE_EXCEEDED"] > 0, report
    assert report["ok"] + report["failed"] == 200, f"--requests 200 counts failures too: {report}"
    lat = report["latency_ms"]
    if report["ok"]:
        assert lat["max"] <= 60 + 50, f"an OK call took longer than its deadline: {lat}"
