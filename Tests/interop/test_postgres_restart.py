"""A PostgreSQL restart under load (issue #6, item 2): meanwhile RPCs fail with UNAVAILABLE
(never a crash, never a hang), reeld reconnects by itself, and every acknowledged job ends
FINAL_READY exactly once. Uses a Postgres of its own, started with scripts/pg-start."""

import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

import reel_interop as ri
from reel_interop import pb

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def private_postgres(tmp_path):
    d = Path(f"/tmp/reel-pgr-{ri.free_port()}")
    port = ri.free_port()
    url = subprocess.run([str(ROOT / "scripts/pg-start"), str(d), str(port)], check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    yield d, port, url
    subprocess.run([str(ROOT / "scripts/pg-stop"), str(d)], capture_output=True)
    subprocess.run(["rm", "-rf", str(d)])


def test_postgres_restart_under_load_loses_nothing(reeld_factory, private_postgres):
    pgdir, port, url = private_postgres
    srv = reeld_factory("pgrestart", db_url=url, workers=4, sim_stage_ms=20, lease_seconds=3)
    stub = srv.stub
    user = ri.unique("pgr")
    acked, codes, stop = [], {}, threading.Event()

    def load():
        i = 0
        while not stop.is_set():
            i += 1
            try:
                acked.append(stub.CreateJob(ri.create_request(user, text=f"restart {i}"), timeout=5).id)
            except grpc.RpcError as e:
                codes[e.code()] = codes.get(e.code(), 0) + 1
            time.sleep(0.02)

    t = threading.Thread(target=load)
    t.start()
    try:
        time.sleep(1.5)
        subprocess.run([str(ROOT / "scripts/pg-stop"), str(pgdir)], check=True, capture_output=True)
        time.sleep(2.0)  # calls now fail: the database is gone
        subprocess.run([str(ROOT / "scripts/pg-start"), str(pgdir), str(port)], check=True, capture_output=True)
        time.sleep(3.0)  # reeld reconnects by itself
    finally:
        stop.set()
        t.join(30)
    assert srv.proc.poll() is None, f"reeld died across the restart:\n{srv.log_tail()}"
    assert set(codes) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}, codes
    assert codes.get(grpc.StatusCode.UNAVAILABLE, 0) > 0, "the restart went unnoticed: did the test stop Postgres?"
    # After the restart new calls succeed again.
    after = stub.CreateJob(ri.create_request(user, text="after the restart"), timeout=ri.DEFAULT_TIMEOUT)
    acked.append(after.id)
    assert len(acked) > 20, f"too little load to mean anything: {len(acked)} acknowledged"
    for job_id in acked:
        ri.wait_for_job(stub, job_id, timeout=90)
    ids = "','".join(acked)
    rows = ri.psql_value(url, f"SELECT count(*), count(DISTINCT job_id) FROM job_events "
                              f"WHERE job_id IN ('{ids}') AND status = 'final_ready'")
    assert rows == f"{len(acked)}|{len(acked)}", f"FINAL_READY events / jobs: {rows} for {len(acked)} acknowledged"
    segments = ri.psql_value(url, f"SELECT count(*) FROM segments WHERE job_id IN ('{ids}')")
    assert segments == str(len(acked))
    r = ri.fault_report("PostgreSQL restart under load", url, acked)
    assert (r["lost"], r["duplicated"], r["completed"]) == (0, 0, len(acked)), r
