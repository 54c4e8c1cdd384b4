"""bench/run's pieces that can be checked in seconds (issue 7): reel-bench --rate holds the
offered rate and says so in its JSON; bench/report.py turns raw outputs into the table and
bench JSON, judging each goal. The benchmark itself (minutes) is not part of the test suite.
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
                        "--config", json.dumps({"conc": 32, "watchers": 10000}), "--out", str(out)],
                       capture_output=True, text=True, timeout=30, cwd=ri.REPO_ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].startswith("| metric")
    rows = json.loads(out.read_text())["rows"]

    def find(prefix):
        return [row for row in rows if row["metric"].startswith(prefix)]

    create = find("CreateJob durable req/s")[0]
    assert create["ratio"] == pytest.approx(4000 / 2000.5, rel=1e-3) and create["met"] is True
    get = find("GetJob req/s, h2load")[0]
    assert get["ratio"] == pytest.approx(0.3) and get["met"] is False          # goal 0.5x
    e2e = find("e2e no-op jobs/s")
    assert [row["met"] for row in e2e] == [False, False, False]               # 0.5x claim, 0.5x pgqueuer, no Celery run
    assert e2e[2]["baseline"] is None
    watch = find("WatchJob concurrent watchers")[0]
    assert watch["met"] is True
    p99 = find("WatchJob event delivery p99")[0]
    assert p99["reel"] == 40.0 and p99["met"] is True
    mem = find("WatchJob memory")[0]
    assert mem["reel"] == pytest.approx(10.0)
    assert any("Lock:object 50%" in n for n in json.loads(out.read_text())["notes"])
