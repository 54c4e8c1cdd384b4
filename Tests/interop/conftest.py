"""Interop suite: reeld driven by the stock Python grpcio client.

Run it through ./scripts/test, or by hand against binaries that already exist:

    REEL_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:PORT/reel \
    REEL_BIN_DIR=.build/debug python3 -m pytest -q Tests/interop

REEL_TEST_DATABASE_URL  a PostgreSQL the suite may create databases on (one
                        `reel_interop_<random>` per reeld instance, dropped afterwards).
REEL_BIN_DIR            where `reeld` is (default: <repo>/.build/debug).

Stubs are generated from proto/ with grpc_tools.protoc at session start (reel_interop.py).
Servers: `reeld` is one shared instance (4 workers, 50 ms simulated stages, 3 s leases);
`slow_reeld` has 1 worker and 3 s stages, so jobs stay queued or running long enough to be
cancelled or outlived by a deadline; `reeld_factory` starts private instances (durability).
A failing test shows what every reeld logged while it ran. Each test is bounded by a
watchdog (REEL_INTEROP_TEST_TIMEOUT, default 180 s) that kills the servers and the run
rather than let CI hang.
"""

from __future__ import annotations

import faulthandler
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

import pytest

import reel_interop as ri

TEST_TIMEOUT = float(os.environ.get("REEL_INTEROP_TEST_TIMEOUT", "180"))


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# SIGTERM (from ./scripts/test's trap, or CI) stops the run like Ctrl-C does: fixtures tear
# down, so no reeld outlives the suite.
signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


# --------------------------------------------------------------------------- environment


@pytest.fixture(scope="session")
def database_url() -> str:
    url = os.environ.get("REEL_TEST_DATABASE_URL")
    if not url:
        pytest.fail("REEL_TEST_DATABASE_URL is not set (run ./scripts/test, or point it at a "
                    "PostgreSQL where this suite may create databases)", pytrace=False)
    return url


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    d = Path(os.environ.get("REEL_BIN_DIR") or ri.REPO_ROOT / ".build" / "debug")
    if not (d / "reeld").exists():
        pytest.fail(f"no reeld in {d}: build first (swift build) or set REEL_BIN_DIR",
                    pytrace=False)
    return d


@pytest.fixture(scope="session")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="reel-interop-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------- servers


class _Factory:
    def __init__(self, bin_dir, database_url, workdir):
        self.bin_dir, self.base_url, self.workdir = bin_dir, database_url, workdir
        self.servers: list[ri.ReelServer] = []
        self.databases: list[str] = []

    def new_database(self) -> str:
        name, url = ri.create_database(self.base_url)
        self.databases.append(name)
        return url

    def __call__(self, name: str, db_url: str | None = None, start: bool = True, **kw):
        srv = ri.ReelServer(name, self.bin_dir, db_url or self.new_database(), self.workdir, **kw)
        self.servers.append(srv)
        if start:
            srv.start()
        return srv

    def close(self):
        for s in self.servers:
            try:
                s.stop()
            except Exception as e:
                print(f"warning: stopping reeld {s.name}: {e}", file=sys.stderr)
        for name in self.databases:
            ri.drop_database(self.base_url, name)


@pytest.fixture(scope="session")
def _session_factory(bin_dir, database_url, workdir):
    f = _Factory(bin_dir, database_url, workdir)
    yield f
    f.close()


@pytest.fixture(scope="session")
def reeld(_session_factory) -> ri.ReelServer:
    """The shared server: --workers 4 --sim-stage-ms 50 --lease-seconds 3."""
    return _session_factory("main", workers=4, sim_stage_ms=50, lease_seconds=3)


@pytest.fixture(scope="session")
def slow_reeld(_session_factory) -> ri.ReelServer:
    """One worker, 3 s stages: a second job stays QUEUED while the first runs."""
    return _session_factory("slow", workers=1, sim_stage_ms=3000, lease_seconds=3)


@pytest.fixture
def reeld_factory(bin_dir, database_url, workdir):
    """Private reeld instances for one test (each on its own database unless db_url given)."""
    f = _Factory(bin_dir, database_url, workdir)
    yield f
    f.close()


@pytest.fixture
def stub(reeld):
    return reeld.stub


# --------------------------------------------------------------------------- reporting


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Watchdog: a test (with its setup) that runs past TEST_TIMEOUT ends the run."""

    def fire():
        sys.stderr.write(f"\n\nINTEROP WATCHDOG: {item.nodeid} still running after "
                         f"{TEST_TIMEOUT:.0f}s; thread stacks:\n")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        for s in ri.ALL_SERVERS:
            sys.stderr.write(f"\n--- reeld {s.name} log tail ---\n{s.log_tail(60)}\n")
        sys.stderr.flush()
        ri.kill_all_servers()
        os._exit(3)

    timer = threading.Timer(TEST_TIMEOUT, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    item._reel_log_marks = {id(s): s.log_size() for s in ri.ALL_SERVERS}
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    marks = getattr(item, "_reel_log_marks", {})
    for s in ri.ALL_SERVERS:
        since = marks.get(id(s), 0)
        if s.log_size() > since:
            rep.sections.append((f"reeld {s.name} log during this test ({s.log_path.name})",
                                 s.log_tail(150, since)))


# --------------------------------------------------------------------------- fake Kling


@pytest.fixture(scope="session")
def _fake_kling_server():
    fk = ri.fake_kling_class()(port=0, access_key=ri.KLING_ACCESS_KEY, secret_key=ri.KLING_SECRET_KEY).start()
    yield fk
    fk.stop()


@pytest.fixture
def fake_kling(_fake_kling_server):
    """The strict fake of Kling's API (Tests/fake_kling), shared by the session, with knobs,
    tasks and stats reset for this test. Use with ri.kling_reeld."""
    _fake_kling_server.reset()
    yield _fake_kling_server


@pytest.fixture(scope="session")
def _fake_runway_server():
    fr = ri.fake_runway_class()(port=0, api_key=ri.RUNWAY_API_KEY).start()
    yield fr
    fr.stop()


@pytest.fixture
def fake_runway(_fake_runway_server):
    """The strict fake of Runway's task API (Tests/fake_runway), shared by the session, with
    knobs, tasks and stats reset for this test. Use with ri.runway_reeld."""
    _fake_runway_server.reset()
    yield _fake_runway_server


def pytest_terminal_summary(terminalreporter):
    """The fault tests' outcomes (acknowledged / completed / lost / duplicated jobs) in one table."""
    lines = ri.fault_table()
    if lines:
        terminalreporter.section("fault reports")
        for ln in lines:
            terminalreporter.write_line(ln)
