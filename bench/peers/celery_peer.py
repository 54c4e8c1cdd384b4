"""Celery peer for bench/run: N no-op tasks through a Redis broker (results in Redis too),
a prefork worker with --concurrency processes; prints one JSON line.

Timed from the first task sent until every result is in (enqueue included, as Reel's e2e
includes CreateJob). Celery's defaults: acks early, Redis without fsync (not durable).

    python3 bench/peers/celery_peer.py --redis-url redis://127.0.0.1:6390/0 --jobs 5000
"""
import argparse
import json
import os
import subprocess
import sys
import time

from celery import Celery, group

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("celery_peer", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    result_expires=600,
)


@app.task(name="noop")
def noop(i):
    return i


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()

    env = dict(os.environ, BENCH_REDIS_URL=args.redis_url)
    here = os.path.dirname(os.path.abspath(__file__))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_peer", "worker", "--pool=prefork",
         f"--concurrency={args.concurrency}", "--loglevel=WARNING", "--without-gossip",
         "--without-mingle", "--without-heartbeat", "-n", f"bench{os.getpid()}@localhost"],
        cwd=here, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        app.conf.broker_url = args.redis_url
        app.conf.result_backend = args.redis_url
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise SystemExit("celery worker exited at start")
            if app.control.ping(timeout=0.5):
                break
        else:
            raise SystemExit("celery worker did not answer a ping within 30 s")
        # Warm up the pool processes (not timed).
        group(noop.s(i) for i in range(50)).apply_async().get(timeout=30)

        t0 = time.monotonic()
        res = group(noop.s(i) for i in range(args.jobs)).apply_async()
        done = args.jobs
        try:
            res.get(timeout=args.timeout)
        except Exception:  # timeout: count what finished
            done = res.completed_count()
        elapsed = time.monotonic() - t0
        print(json.dumps({"peer": "celery", "jobs": done, "seconds": round(elapsed, 3),
                          "jobs_per_s": round(done / elapsed, 1), "concurrency": args.concurrency}))
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
