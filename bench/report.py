"""bench/report.py: turns bench/run's raw outputs into one table of ratios and one JSON file.

    python3 bench/report.py --results DIR --config JSON --out bench/last-run.json [--json]

Each row: metric | reel | baseline | ratio | goal | met?. A sub-benchmark that did not run or
failed shows "n/a" and is not met. Nothing here measures; it only reads what bench/run wrote.
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def pgbench_tps(text):
    """(tps, transactions, failed) from pgbench's summary, or None."""
    if not text:
        return None
    m = re.search(r"^tps = ([0-9.]+) \(without initial connection time\)", text, re.M)
    n = re.search(r"^number of transactions actually processed: (\d+)", text, re.M)
    f = re.search(r"^number of failed transactions: (\d+)", text, re.M)
    if not m:
        return None
    return float(m.group(1)), int(n.group(1)) if n else None, int(f.group(1)) if f else 0


def h2load_result(text):
    """{rps, succeeded, failed, errored, status_2xx, ...} from h2load's summary, or None."""
    if not text:
        return None
    m = re.search(r"finished in ([0-9.]+)s, ([0-9.]+) req/s", text)
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text)
    s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if not m or not r:
        return None
    out = {"seconds": float(m.group(1)), "rps": float(m.group(2)), "total": int(r.group(1)),
           "succeeded": int(r.group(4)), "failed": int(r.group(5)), "errored": int(r.group(6)),
           "timeout": int(r.group(7))}
    if s:
        out["status_2xx"] = int(s.group(1))
        out["status_non_2xx"] = int(s.group(2)) + int(s.group(3)) + int(s.group(4))
    return out


def machine(pg_url, psql):
    info = {"nproc": os.cpu_count(), "kernel": platform.release(), "arch": platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            models = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        info["cpu"] = models[0] if models else platform.processor()
    except OSError:
        info["cpu"] = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
        info["memory_gib"] = round(kb / 1024 / 1024, 1)
    except (OSError, StopIteration):
        pass
    try:
        info["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    try:
        host, port = re.search(r"@([^:/]+):(\d+)/", pg_url).groups()
        info["postgres"] = subprocess.run(
            [psql, "-h", host, "-p", port, "-U", "postgres", "-d", "reel", "-XAtqc", "SHOW server_version"],
            capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001 — informational only
        info["postgres"] = "?"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "Sources", "Package.swift"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["commit"] = commit + ("+uncommitted" if dirty else "")
    except Exception:  # noqa: BLE001
        pass
    return info


def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return s + unit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--config", default="{}")
    ap.add_argument("--pg-url", default="")
    ap.add_argument("--psql", default="psql")
    ap.add_argument("--out", default="bench/last-run.json")
    ap.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    args = ap.parse_args()
    R = args.results
    cfg = json.loads(args.config)
    rows = []
    notes = []

    def row(metric, reel, baseline, goal=None, *, ratio=None, met=None, unit="", base_unit=None, detail=None,
            goal_text=None):
        """goal: minimum ratio reel/baseline; or pass ratio/met/goal_text explicitly."""
        if ratio is None and reel is not None and baseline:
            ratio = reel / baseline
        if met is None and goal is not None:
            met = ratio is not None and ratio >= goal
        rows.append({
            "metric": metric, "reel": reel, "baseline": baseline, "ratio": None if ratio is None else round(ratio, 3),
            "goal": goal_text if goal_text is not None else (f">= {goal:g}x" if goal is not None else "-"),
            "met": met, "unit": unit, "baseline_unit": base_unit if base_unit is not None else unit,
            "detail": detail or {},
        })

    def ok_rps(report):
        """reel-bench throughput, or None when the run had failures over 1 %."""
        if not report:
            return None
        total = report["ok"] + report["failed"]
        if report["failed"] and report["failed"] > 0.01 * max(total, 1):
            notes.append(f"reel-bench {report['mode']}: {report['failed']} of {total} failed "
                         f"({report.get('errors_by_code')}); e.g. {report.get('error_examples')}")
            return None
        if report["failed"]:
            notes.append(f"reel-bench {report['mode']}: {report['failed']} of {total} failed "
                         f"({report.get('errors_by_code')})")
        return report["throughput_rps"]

    # 1. CreateJob vs pgbench INSERT, at two concurrencies (equal on both sides); CreateJobs
    create = read_json(f"{R}/create.json")
    ins = pgbench_tps(read_text(f"{R}/pgbench_insert.txt"))
    pairs = [(cfg.get("conc"), create, ins)]
    if cfg.get("conc_low") is not None and cfg.get("conc_low") != cfg.get("conc"):
        pairs.insert(0, (cfg.get("conc_low"), read_json(f"{R}/create_low.json"),
                         pgbench_tps(read_text(f"{R}/pgbench_insert_low.txt"))))
    for conc, rep, pgb in pairs:
        row(f"CreateJob durable req/s, {conc} in flight  vs  pgbench INSERT…RETURNING, {conc} clients",
            ok_rps(rep), pgb[0] if pgb else None, 1.0, unit="/s",
            detail={"in_flight": conc, "reel_latency_ms": rep and rep["latency_ms"], "pgbench_tps": pgb and pgb[0]})

    insn = pgbench_tps(read_text(f"{R}/pgbench_insert_notify.txt"))
    if insn:
        row("  CreateJob  vs  the same INSERT with a per-row NOTIFY trigger (what bounds it)", ok_rps(create), insn[0],
            None, unit="/s", detail={"pgbench_tps": insn[0]})

    batch = read_json(f"{R}/create_batch.json")
    batch_target = 10000.0
    jobs_rate = None
    if batch and ok_rps(batch) is not None:
        jobs_rate = batch.get("jobs_per_s")
    size = (batch and batch.get("batch")) or cfg.get("batch") or 1000
    row(f"CreateJobs committed jobs/s, {size:,} per call, {cfg.get('batch_conc', '?')} calls in flight", jobs_rate, batch_target, ratio=(jobs_rate / batch_target) if jobs_rate else None,
        met=jobs_rate is not None and jobs_rate >= batch_target, goal_text=f">= {batch_target:,.0f}/s", unit="/s",
        detail={"calls_per_s": batch and batch["throughput_rps"], "call_latency_ms": batch and batch["latency_ms"],
                "jobs": batch and batch.get("jobs"), "batch": size})

    # 2. GetJob vs nghttpd
    h2r = h2load_result(read_text(f"{R}/h2load_reel.txt"))
    h2n = h2load_result(read_text(f"{R}/h2load_nghttpd.txt"))
    for name, h in (("reeld", h2r), ("nghttpd", h2n)):
        if h and (h["succeeded"] < 0.99 * max(h["total"], 1) or h.get("status_non_2xx")):
            notes.append(f"h2load on {name}: {h['succeeded']} of {h['total']} succeeded, "
                         f"{h.get('status_non_2xx', 0)} non-2xx — figure not used")
    good = lambda h: h["rps"] if h and h["succeeded"] >= 0.99 * max(h["total"], 1) and not h.get("status_non_2xx") else None
    load = f"h2load -c{cfg.get('h2_c')} -m{cfg.get('h2_m')} -t{cfg.get('h2_t')}"
    row(f"GetJob req/s, {load}  vs  nghttpd static file", good(h2r), good(h2n), 0.6, unit="/s",
        detail={"reel": h2r, "nghttpd": h2n, "nghttpd_threads": cfg.get("nghttpd_threads")})
    get = read_json(f"{R}/get.json")
    row(f"GetJob req/s, reel-bench get (cross-check)  vs  nghttpd", ok_rps(get), good(h2n), None, unit="/s",
        detail={"latency_ms": get and get["latency_ms"]})

    # 3. latency at half the peak
    for name, f in (("GetJob", "latency_get.json"), ("CreateJob", "latency_create.json")):
        rep = read_json(f"{R}/{f}")
        if rep:
            lat = rep["latency_ms"]
            achieved = rep["throughput_rps"]
            row(f"{name} latency p50 / p99 at half peak ({rep.get('rate_rps', 0):,.0f}/s offered, "
                f"{achieved:,.0f}/s done)", f"{fmt(lat['p50'])} / {fmt(lat['p99'])} ms", None,
                goal_text="(report)", met=None, ratio=None,
                detail={"latency_ms": lat, "rate_rps": rep.get("rate_rps"), "throughput_rps": achieved,
                        "late": rep.get("late"), "failed": rep["failed"]})
            if rep.get("late"):
                notes.append(f"{name} at half peak: {rep['late']} of {rep['ok']} calls started over 1 ms behind "
                             "schedule (every client worker was busy; their latency is counted from the late start)")
        else:
            row(f"{name} latency p50 / p99 at half peak", None, None, goal_text="(report)")

    # 4. end to end, against the minimal queue, the peers and the Reel-shaped claim ceiling
    e2e = read_json(f"{R}/e2e.json")
    e2e_rps = ok_rps(e2e)

    def queue_rate(name, knob, what):
        """(jobs/s, tps) of a pgbench queue script: transactions that found no queued row don't count."""
        q = pgbench_tps(read_text(f"{R}/pgbench_{name}.txt"))
        if not q:
            return None, None
        tps, n, _ = q
        done_txt = read_text(f"{R}/{name}_done.txt")
        rows_txt = read_text(f"{R}/{name}_rows.txt")
        done = int(done_txt.strip()) if done_txt and done_txt.strip().isdigit() else None
        preloaded = int(rows_txt.strip()) if rows_txt and rows_txt.strip().isdigit() else None
        rate = tps
        if done is not None and n:
            rate = tps * done / n
            if preloaded and done >= preloaded:
                notes.append(f"{what} ran dry: its figure is a lower bound (raise {knob})")
        return rate, tps

    minq_rate, minq_tps = queue_rate("minq", "BENCH_MINQ_ROWS", "the minimal queue")
    row(f"e2e no-op jobs/s (create→FINAL_READY)  vs  minimal queue (claim+done+event per txn)",
        e2e_rps, minq_rate, 0.5, unit="/s",
        detail={"e2e_latency_ms": e2e and e2e["latency_ms"], "minq_tps": minq_tps, "clients": cfg.get("conc"),
                "rows": cfg.get("minq_rows")})
    for peer, goal in (("pgqueuer", 1.0), ("celery", 5.0)):
        p = read_json(f"{R}/{peer}.json")
        prate = p["jobs_per_s"] if p and p.get("jobs") else None
        if p and p.get("timed_out"):
            notes.append(f"{peer}: timed out; {p['jobs']} jobs done")
        label = {"pgqueuer": "pgqueuer (same PostgreSQL)", "celery": "Celery + Redis"}[peer]
        row(f"e2e no-op jobs/s  vs  {label}", e2e_rps, prate, goal, unit="/s", detail={"peer": p})
    claim_rate, claim_tps = queue_rate("claim", "BENCH_CLAIM_ROWS", "the claim queue")
    row("e2e no-op jobs/s  vs  Reel-shaped claim ceiling (claim.sql on a copy of jobs)",
        e2e_rps, claim_rate, None, unit="/s", detail={"claim_tps": claim_tps, "clients": cfg.get("conc")})

    # 5. WatchJob fan-out
    wr = read_json(f"{R}/watchers.json")
    mem = read_json(f"{R}/watch_mem.json")
    small = read_json(f"{R}/watchers_small.json")
    target = cfg.get("watchers") or 10000
    if wr and wr.get("watchers"):
        w = wr["watchers"]
        n = w["watchers"]
        row(f"WatchJob concurrent watchers on one reeld (target {target:,})", w["open_count"] / max(w["jobs"], 1),
            target, 1.0, detail={"watchers_per_job": n, "jobs": w["jobs"], "streams_ok": w["streams_ok"],
                                 "open_ms": w["open_ms"], "failed": wr["failed"], "errors": wr["errors_by_code"]})
        p99 = wr["latency_ms"]["p99"] if wr["ok"] else None
        row(f"WatchJob event delivery p99 ms at {n:,} watchers ({wr['ok']:,} deliveries)", p99, 50.0,
            ratio=(50.0 / p99) if p99 else None, met=p99 is not None and p99 <= 50.0, goal_text="<= 50 ms", unit=" ms",
            detail={"latency_ms": wr["latency_ms"]})
        if wr["failed"]:
            notes.append(f"watchers: {wr['failed']} failures {wr['errors_by_code']} e.g. {wr['error_examples']}")
        if not mem or not n:
            row("WatchJob memory per watcher (reeld RSS peak − before) / watchers", None, 8.0, met=False,
                goal_text="<= 8 KiB")
        else:
            per = (mem["rss_peak_kb"] - mem["rss_before_kb"]) / n
            row("WatchJob memory per watcher (reeld RSS peak − before) / watchers", round(per, 1), 8.0,
                ratio=(8.0 / per) if per > 0 else None, met=per <= 8.0, goal_text="<= 8 KiB", unit=" KiB", detail=mem)
            if mem.get("wall_s"):
                notes.append(f"during the {n:,}-watcher run ({mem['wall_s']:.0f} s) reeld used "
                             f"{mem.get('reeld_cpu_ticks', 0) / 100 / mem['wall_s']:.2f} cores and reel-bench "
                             f"{mem.get('bench_cpu_ticks', 0) / 100 / mem['wall_s']:.2f} of the {os.cpu_count()}")
    else:
        row(f"WatchJob concurrent watchers on one reeld (target {target:,})", None, target, 1.0)
        row("WatchJob event delivery p99 ms", None, 50.0, met=False, goal_text="<= 50 ms")
        row("WatchJob memory per watcher (reeld RSS peak − before) / watchers", None, 8.0, met=False,
            goal_text="<= 8 KiB")
    if small and small.get("watchers") and small["ok"]:
        row(f"WatchJob event delivery p99 ms at {small['watchers']['watchers']:,} watchers (for comparison)",
            small["latency_ms"]["p99"], None, goal_text="(report)", unit=" ms",
            detail={"latency_ms": small["latency_ms"], "deliveries": small["ok"], "failed": small["failed"]})

    # What reeld's database sessions waited on while CreateJob / e2e ran (sampled every 0.25 s).
    waits = {}
    for name in ("create", "e2e"):
        text = read_text(f"{R}/pgwaits-{name}.txt")
        if text:
            counts = {}
            for line in text.split():
                counts[line] = counts.get(line, 0) + 1
            total = sum(counts.values())
            top = sorted(counts.items(), key=lambda kv: -kv[1])[:4]
            waits[name] = {k: round(v / total, 3) for k, v in top}
            notes.append(f"{name}: reeld's active PostgreSQL sessions were waiting on "
                         + ", ".join(f"{k} {v / total:.0%}" for k, v in top)
                         + f" of {total} samples"
                         + (" (Lock:object is the NOTIFY queue lock, held from a notifying transaction's "
                            "pre-commit until after its WAL flush: notifying commits go one at a time)"
                            if "Lock:object" in counts else ""))

    info = machine(args.pg_url, args.psql)
    fs = read_json(f"{R}/fsync.json")
    if fs:
        info["fdatasync_8k"] = fs
    result = {"when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": info, "config": cfg, "rows": rows, "pg_waits": waits, "notes": notes}
    try:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    except OSError as e:
        notes.append(f"could not write {args.out}: {e}")

    if args.json:
        print(json.dumps(result, indent=2))
        return
    table = [("metric", "reel", "baseline", "ratio", "goal", "met?")]
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        reel = r["reel"] if isinstance(r["reel"], str) else fmt(r["reel"], r["unit"] if r["reel"] is not None else "")
        base = fmt(r["baseline"], r["baseline_unit"] if r["baseline"] is not None else "") if r["baseline"] is not None else "-"
        if r["baseline"] is None and r["goal"] not in ("(report)",):
            base = "n/a"
        table.append((r["metric"], reel, base, ratio, r["goal"], met))
    widths = [max(len(t[i]) for t in table) for i in range(6)]
    out = sys.stdout
    out.write(f"Reel benchmarks — {result['when']} — {info.get('nproc')} cores {info.get('cpu')}, "
              f"PostgreSQL {info.get('postgres')}, commit {info.get('commit', '?')}"
              + (f", fdatasync {fs['fdatasync_us']} µs" if fs else "") + "\n")
    for i, t in enumerate(table):
        out.write("| " + " | ".join(t[j].ljust(widths[j]) if j == 0 else t[j].rjust(widths[j]) for j in range(6)) + " |\n")
        if i == 0:
            out.write("|" + "|".join("-" * (w + 2) for w in widths) + "|\n")
    for n in notes:
        out.write(f"note: {n}\n")
    out.write(f"(JSON: {args.out})\n")


if __name__ == "__main__":
    main()
