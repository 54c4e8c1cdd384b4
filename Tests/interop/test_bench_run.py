"""bench/run's pieces that can be checked in seconds (issues 7, 14): reel-bench --rate holds the
offered rate and says so in its JSON; bench/report.py turns raw outputs into the table and
bench JSON, judging each goal; the minimal-queue baseline's SQL claims every queued row exactly
once. The benchmark itself (minutes) is not part of the test suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import reel_interop as ri


@pytest.fixture(scope="module")
def bench_bin(bin_dir) -> Path:
    path = Path(os.environ.get("REEL_BENCH_BIN") or Path(bin_dir) / "reel-bench")
    if not path.exists():
        pytest.fail(f"no reel-bench at {path}: build it (swift build) or set REEL_BENCH_BIN", pytrace=False)
    return path


def test_rate_paces_the_calls_and_reports_it(bench_bin, reeld_factory):
    srv = reeld_factory("bench-rate", workers=0, sim_stage_ms=0)
    r = subprocess.run([str(bench_bin), "get", "--address", srv.target, "--json", "--rate", "200",
                        "--duration", "2", "--concurrency", "8", "--scenes", "3"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["rate_rps"] == 200
    assert report["failed"] == 0, report["errors_by_code"]
    # A closed loop of 8 would do thousands per second here; the pacer holds it near 200.
    assert 150 <= report["throughput_rps"] <= 250, report
    assert report["late"] >= 0

    bad = subprocess.run([str(bench_bin), "watchers", "--address", srv.target, "--rate", "10"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--rate" in bad.stderr


def test_report_turns_raw_outputs_into_judged_rows(tmp_path):
    res = tmp_path / "res"
    res.mkdir()

    def bench_json(name, mode, rps, ok=1000, failed=0, **extra):
        lat = {"p50": 1.0, "p90": 2.0, "p99": 3.0, "p999": 4.0, "max": 5.0, "mean": 1.5}
        (res / f"{name}.json").write_text(json.dumps({
            "mode": mode, "ok": ok, "failed": failed, "errors_by_code": {}, "error_examples": {},
            "throughput_rps": rps, "latency_ms": lat, **extra}))

    bench_json("create", "create", 4000.0)
    (res / "pgbench_insert.txt").write_text(
        "number of transactions actually processed: 20000\nnumber of failed transactions: 0 (0.000%)\n"
        "tps = 2000.5 (without initial connection time)\n")
    bench_json("create_low", "create", 1500.0)
    (res / "pgbench_insert_low.txt").write_text(
        "number of transactions actually processed: 20000\ntps = 2000.0 (without initial connection time)\n")
    bench_json("create_batch", "create-batch", 12.0, ok=60, batch=1000, jobs=60000, jobs_per_s=12000.0)
    h2 = ("finished in 10.00s, {rps} req/s, 1MB/s\n"
          "requests: 1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed, 0 errored, 0 timeout\n"
          "status codes: 1000 2xx, 0 3xx, 0 4xx, 0 5xx\n")
    (res / "h2load_reel.txt").write_text(h2.format(rps="30000.00"))
    (res / "h2load_nghttpd.txt").write_text(h2.format(rps="100000.00"))
    bench_json("e2e", "e2e", 500.0)
    (res / "pgbench_claim.txt").write_text(
        "number of transactions actually processed: 10000\ntps = 1000.0 (without initial connection time)\n")
    (res / "claim_done.txt").write_text("10000\n")
    (res / "claim_rows.txt").write_text("150000\n")
    # The minimal queue: 4,000 transactions, of which 3,000 found a row (it ran dry).
    (res / "pgbench_minq.txt").write_text(
        "number of transactions actually processed: 4000\ntps = 2000.0 (without initial connection time)\n")
    (res / "minq_done.txt").write_text("3000\n")
    (res / "minq_rows.txt").write_text("3000\n")
    (res / "pgqueuer.json").write_text(json.dumps({"peer": "pgqueuer", "jobs": 3000, "jobs_per_s": 1000.0}))
    bench_json("watchers", "watchers", 100.0, ok=5000, latency_ms=None,
               watchers={"watchers": 10000, "jobs": 1, "streams_ok": 10000, "open_count": 10000,
                         "open_ms": {}})
    data = json.loads((res / "watchers.json").read_text())
    data["latency_ms"] = {"p50": 10.0, "p90": 20.0, "p99": 40.0, "p999": 45.0, "max": 50.0, "mean": 12.0}
    (res / "watchers.json").write_text(json.dumps(data))
    (res / "watch_mem.json").write_text(json.dumps({"rss_before_kb": 50000, "rss_peak_kb": 150000}))
    (res / "pgwaits-e2e.txt").write_text("Lock:object\nLock:object\nIO:WALSync\nCPU\n")

    out = tmp_path / "last-run.json"
    r = subprocess.run([sys.executable, str(ri.REPO_ROOT / "bench" / "report.py"), "--results", str(res),
                        "--config", json.dumps({"conc": 32, "conc_low": 8, "batch": 1000, "batch_conc": 4,
                                                "watchers": 10000}), "--out", str(out)],
                       capture_output=True, text=True, timeout=30, cwd=ri.REPO_ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].startswith("| metric")
    rows = json.loads(out.read_text())["rows"]

    def find(prefix):
        return [row for row in rows if row["metric"].startswith(prefix)]

    low, high = find("CreateJob durable req/s")                                # 8 in flight first, then 32
    assert "8 in flight" in low["metric"] and "8 clients" in low["metric"]
    assert low["ratio"] == pytest.approx(0.75) and low["met"] is False and low["goal"] == ">= 1x"
    assert "32 in flight" in high["metric"]
    assert high["ratio"] == pytest.approx(4000 / 2000.5, rel=1e-3) and high["met"] is True
    batch = find("CreateJobs committed jobs/s")[0]
    assert batch["reel"] == 12000.0 and batch["met"] is True and batch["goal"] == ">= 10,000/s"
    get = find("GetJob req/s, h2load")[0]
    assert get["ratio"] == pytest.approx(0.3) and get["met"] is False and get["goal"] == ">= 0.6x"
    e2e = find("e2e no-op jobs/s")
    assert ["minimal queue" in e2e[0]["metric"], "pgqueuer" in e2e[1]["metric"], "Celery" in e2e[2]["metric"],
            "claim ceiling" in e2e[3]["metric"]] == [True] * 4
    # minimal queue: 2,000 tps × 3,000 done / 4,000 transactions = 1,500 jobs/s; 500/1,500 < 0.5
    assert e2e[0]["baseline"] == pytest.approx(1500.0) and e2e[0]["goal"] == ">= 0.5x" and e2e[0]["met"] is False
    assert e2e[1]["ratio"] == pytest.approx(0.5) and e2e[1]["met"] is False    # goal 1x
    assert e2e[2]["baseline"] is None and e2e[2]["goal"] == ">= 5x" and e2e[2]["met"] is False  # no Celery run
    assert e2e[3]["ratio"] == pytest.approx(0.5) and e2e[3]["met"] is None and e2e[3]["goal"] == "-"
    watch = find("WatchJob concurrent watchers")[0]
    assert watch["met"] is True
    p99 = find("WatchJob event delivery p99")[0]
    assert p99["reel"] == 40.0 and p99["met"] is True and "10,000 watchers" in p99["metric"]
    mem = find("WatchJob memory")[0]
    assert mem["reel"] == pytest.approx(10.0) and mem["goal"] == "<= 8 KiB" and mem["met"] is False
    result = json.loads(out.read_text())
    assert result["config"]["conc_low"] == 8
    assert any("Lock:object 50%" in n for n in result["notes"])
    assert any("minimal queue ran dry" in n for n in result["notes"])
    assert "CreateJobs committed jobs/s" in r.stdout and "minimal queue" in r.stdout


@pytest.fixture
def scratch_db(database_url):
    name, url = ri.create_database(database_url)
    yield url
    ri.drop_database(database_url, name)


def test_minimal_queue_claims_every_row_once(scratch_db):
    """bench/sql/minq_setup.sql and minq.sql under pgbench, as bench/run runs them: concurrent
    clients claim each queued row exactly once, each claim marks it done and appends one event,
    and a transaction that finds the queue empty writes nothing."""
    rows = 400
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")
    setup = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"rows={rows}", "-d", scratch_db,
                            "-f", str(ri.REPO_ROOT / "bench" / "sql" / "minq_setup.sql")],
                           capture_output=True, text=True, timeout=60, env=env)
    assert setup.returncode == 0, setup.stderr
    assert ri.psql_value(scratch_db, "SELECT count(*) FROM minq_jobs WHERE status = 'queued'") == str(rows)
    indexes = ri.psql_value(scratch_db, "SELECT indexdef FROM pg_indexes WHERE tablename = 'minq_jobs' "
                                        "AND indexname <> 'minq_jobs_pkey'")
    assert indexes.count("\n") == 0 and "WHERE (status = 'queued'::text)" in indexes, indexes
    # 4 clients × 125 transactions: 500 claims for 400 rows, so the last ones find nothing.
    r = subprocess.run(["pgbench", "-n", "-M", "prepared", "-c", "4", "-j", "2", "-t", "125",
                        "-f", str(ri.REPO_ROOT / "bench" / "sql" / "minq.sql"), scratch_db],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "number of transactions actually processed: 500/500" in r.stdout, r.stdout
    counts = ri.psql_value(scratch_db, "SELECT (SELECT count(*) FROM minq_events), "
                                       "(SELECT count(DISTINCT job_id) FROM minq_events), "
                                       "(SELECT count(*) FROM minq_jobs WHERE status = 'done'), "
                                       "(SELECT count(*) FROM minq_jobs j JOIN minq_events e ON e.job_id = j.id "
                                       " WHERE j.status = 'done')")
    assert counts == f"{rows}|{rows}|{rows}|{rows}", counts
