"""pgqueuer peer for bench/run: N no-op jobs through pgqueuer on the same PostgreSQL;
prints one JSON line.

Enqueue (in batches, pgqueuer's bulk enqueue) then drain with --consumers processes
(one per core by default), each a QueueManager in drain mode (it exits once the queue is
empty and its job-status buffer is flushed). Timed from the first enqueue until every
consumer has exited; the enqueue and drain parts are reported separately too.

    python3 bench/peers/pgqueuer_peer.py --dsn postgresql://postgres@127.0.0.1:5432/pgq --jobs 5000
"""
import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from datetime import timedelta

import asyncpg
from pgqueuer import AsyncpgDriver, QueueManager
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode


async def install(dsn):
    conn = await asyncpg.connect(dsn)
    try:
        q = Queries(AsyncpgDriver(conn))
        if await q.schema_is_installed():
            await q.uninstall()
        await q.install()
    finally:
        await conn.close()


async def enqueue(dsn, jobs, batch):
    conn = await asyncpg.connect(dsn)
    try:
        q = Queries(AsyncpgDriver(conn))
        for start in range(0, jobs, batch):
            n = min(batch, jobs - start)
            await q.enqueue(["noop"] * n, [str(start + i).encode() for i in range(n)], [0] * n)
    finally:
        await conn.close()


async def consume(dsn, batch_size):
    conn = await asyncpg.connect(dsn)
    done = 0
    try:
        qm = QueueManager(Queries(AsyncpgDriver(conn)))

        @qm.entrypoint("noop")
        async def noop(job):
            nonlocal done
            done += 1

        await qm.run(batch_size=batch_size, mode=QueueExecutionMode.drain,
                     dequeue_timeout=timedelta(seconds=1), log_aggregation_interval=timedelta(0))
    finally:
        await conn.close()
    return done


def consumer_process(dsn, batch_size, out):
    out.put(asyncio.run(consume(dsn, batch_size)))


async def remaining(dsn):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM pgqueuer")
    finally:
        await conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument("--consumers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--batch-size", type=int, default=10, help="pgqueuer dequeue batch (its default: 10)")
    ap.add_argument("--enqueue-batch", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()

    asyncio.run(install(args.dsn))
    t0 = time.monotonic()
    asyncio.run(enqueue(args.dsn, args.jobs, args.enqueue_batch))
    t1 = time.monotonic()
    out = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=consumer_process, args=(args.dsn, args.batch_size, out))
             for _ in range(args.consumers)]
    for p in procs:
        p.start()
    deadline = t1 + args.timeout
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    t2 = time.monotonic()
    timed_out = any(p.is_alive() for p in procs)
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(5)
    left = asyncio.run(remaining(args.dsn))
    done = args.jobs - left
    elapsed = t2 - t0
    print(json.dumps({"peer": "pgqueuer", "jobs": done, "seconds": round(elapsed, 3),
                      "jobs_per_s": round(done / elapsed, 1), "enqueue_s": round(t1 - t0, 3),
                      "drain_s": round(t2 - t1, 3), "consumers": args.consumers,
                      "batch_size": args.batch_size, "timed_out": timed_out}))


if __name__ == "__main__":
    main()
