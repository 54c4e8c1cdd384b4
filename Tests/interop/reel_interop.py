"""Shared helpers for the interop suite: generated stubs, a reeld process wrapper, polling.

Importing this module generates the Python protobuf/gRPC stubs from ../../proto into a
temporary directory (removed at exit) and puts it on sys.path. The standard health proto is
compiled under a private module name (reel_interop_health) because the top-level name `grpc`
belongs to grpcio itself; the wire names (grpc.health.v1.Health) are unchanged.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "proto"

DEFAULT_TIMEOUT = 10.0  # seconds, for every unary call
MIB = 1024 * 1024


# --------------------------------------------------------------------------- stubs


def _generate_stubs() -> Path:
    from grpc_tools import protoc
    import importlib.resources

    gen = Path(tempfile.mkdtemp(prefix="reel-interop-stubs-"))
    atexit.register(shutil.rmtree, gen, True)
    src = gen / "src"
    out = gen / "py"
    (src / "reel_interop_health").mkdir(parents=True)
    out.mkdir()
    shutil.copy(PROTO_DIR / "grpc" / "health" / "v1" / "health.proto",
                src / "reel_interop_health" / "health.proto")
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{src}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "reel/v1/jobs.proto",
        "reel_interop_health/health.proto",
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed ({rc}) for {args}")
    sys.path.insert(0, str(out))
    return out


STUBS_DIR = _generate_stubs()

from reel.v1 import jobs_pb2 as pb  # noqa: E402
from reel.v1 import jobs_pb2_grpc as pb_grpc  # noqa: E402
from reel_interop_health import health_pb2  # noqa: E402
from reel_interop_health import health_pb2_grpc  # noqa: E402

TERMINAL = {pb.JOB_STATUS_FINAL_READY, pb.JOB_STATUS_CANCELLED}


def status_name(s: int) -> str:
    return pb.JobStatus.Name(s) if s in pb.JobStatus.values() else str(s)


def stage_name(s: int) -> str:
    return pb.Stage.Name(s) if s in pb.Stage.values() else str(s)


def is_terminal(job_or_event) -> bool:
    """FINAL_READY, CANCELLED, or FAILED with dead_lettered (DESIGN §2)."""
    return job_or_event.status in TERMINAL or (
        job_or_event.status == pb.JOB_STATUS_FAILED and job_or_event.dead_lettered)


def describe_job(job) -> str:
    err = ""
    if job.HasField("error") and (job.error.code or job.error.message):
        err = f" error={job.error.code}:{job.error.message!r}"
    return (f"job {job.id} status={status_name(job.status)} stage={stage_name(job.stage)} "
            f"progress={job.progress} seq={job.last_event_seq} retries={job.retry_count}/"
            f"{job.max_retries} dead_lettered={job.dead_lettered} msg={job.message!r}{err}")


def describe_event(ev) -> str:
    snap = " +snapshot" if ev.HasField("snapshot") else ""
    return (f"seq={ev.seq} {status_name(ev.status)}/{stage_name(ev.stage)} "
            f"p={ev.progress} dl={ev.dead_lettered} msg={ev.message!r}{snap}")


def event_key(ev):
    """What a stored event is: compared between live and replayed streams."""
    return (ev.job_id, ev.seq, ev.status, ev.stage, ev.progress, ev.message, ev.at_unix_ms,
            ev.dead_lettered)


# --------------------------------------------------------------------------- misc helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    """A fresh id matching [A-Za-z0-9_.-]{1,128}: one user per test keeps tests apart."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_request(user_id: str, scene_id: str = "scene-1", text: str | None = None,
                   **fields) -> "pb.CreateJobRequest":
    fields.setdefault("type", pb.JOB_TYPE_SCENE_CREATION)
    return pb.CreateJobRequest(
        user_id=user_id, scene_id=scene_id,
        input_text=text if text is not None else f"A short scene {uuid.uuid4().hex[:8]}",
        **fields)


def rpc_error(fn, *args, **kwargs) -> grpc.RpcError:
    """Calls fn and returns the RpcError it raises; fails the test if it succeeds."""
    try:
        result = fn(*args, **kwargs)
        if hasattr(result, "__iter__") and not hasattr(result, "SerializeToString"):
            result = list(result)  # a server stream: errors surface while reading
    except grpc.RpcError as e:
        return e
    raise AssertionError(f"expected an RPC error, got a success: {result!r:.500}")


def assert_code(err: grpc.RpcError, code: grpc.StatusCode, mentions: str | None = None,
                what: str = ""):
    assert err.code() == code, (
        f"{what}: expected {code.name}, got {err.code().name} details={err.details()!r}")
    if mentions is not None:
        assert mentions in (err.details() or ""), (
            f"{what}: {code.name} details should name {mentions!r}, got {err.details()!r}")


def wait_for_job(stub, job_id: str, want=(pb.JOB_STATUS_FINAL_READY,), timeout: float = 60.0,
                 poll: float = 0.05):
    """Polls GetJob until the job's status is in `want`; fails on another terminal state or
    when `timeout` passes, describing the last state seen."""
    want = set(want)
    deadline = time.monotonic() + timeout
    job = None
    while True:
        job = stub.GetJob(pb.GetJobRequest(id=job_id), timeout=DEFAULT_TIMEOUT)
        if job.status in want:
            return job
        if is_terminal(job):
            raise AssertionError(
                f"job reached {status_name(job.status)} while waiting for "
                f"{[status_name(w) for w in want]}: {describe_job(job)}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"job not in {[status_name(w) for w in want]} after {timeout}s: "
                f"{describe_job(job)}")
        time.sleep(poll)


def job_diag(srv, job_id: str, *extra: str) -> str:
    """For failure messages: the job as GetJob has it (or why GetJob failed), its events
    straight from Postgres, then the `extra` lines (what a fake saw, say)."""
    parts = []
    try:
        parts.append(describe_job(srv.stub.GetJob(pb.GetJobRequest(id=job_id), timeout=DEFAULT_TIMEOUT)))
    except Exception as e:  # diagnostics only
        parts.append(f"(GetJob failed: {e})")
    parts.append(stored_history(srv.db_url, job_id))
    return "\n".join([*parts, *extra])


def fake_stats_text(fake, label: str, last: tuple[str, int], limit: int) -> str:
    """A fake's stats for a failure message: prompts cut to 60 characters, the list named by
    `last` to its last N entries, the JSON to `limit` characters."""
    st = fake.stats()
    for t in st["tasks"]:
        t["prompt"] = (t["prompt"] or "")[:60]
    key, n = last
    st[key] = st[key][-n:]
    return f"{label} stats: {json.dumps(st)[:limit]}"


def wait_job_explained(srv, job_id: str, explain, want=(pb.JOB_STATUS_FINAL_READY,),
                       timeout: float = 30.0):
    """wait_for_job on a ReelServer, with `explain()` (diagnostics) added to a failure."""
    try:
        return wait_for_job(srv.stub, job_id, want=want, timeout=timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{explain()}") from None


def wait_terminal_explained(srv, job_id: str, explain, timeout: float = 30.0):
    """Polls GetJob until the job is terminal (any end); fails after `timeout` s with
    `explain()` (diagnostics)."""
    deadline = time.monotonic() + timeout
    while True:
        j = srv.stub.GetJob(pb.GetJobRequest(id=job_id), timeout=DEFAULT_TIMEOUT)
        if is_terminal(j):
            return j
        assert time.monotonic() < deadline, f"not terminal after {timeout}s:\n{explain()}"
        time.sleep(0.05)


def wait_for(what: str, predicate, timeout: float = 30.0, poll: float = 0.05):
    """The first truthy value of `predicate()`, polled every `poll` s; AssertionError naming
    `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def wait_until_running(stub, job_id: str, timeout: float = 60.0):
    """Polls until the job has left QUEUED (claimed by a worker) and is not terminal."""
    deadline = time.monotonic() + timeout
    while True:
        job = stub.GetJob(pb.GetJobRequest(id=job_id), timeout=DEFAULT_TIMEOUT)
        if job.status != pb.JOB_STATUS_QUEUED:
            assert not is_terminal(job), f"job finished before it was seen running: {describe_job(job)}"
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job still QUEUED after {timeout}s: {describe_job(job)}")
        time.sleep(0.05)


def watch(stub, job_id: str, after_seq: int = 0, timeout: float = 60.0):
    """The whole WatchJob stream as a list (raises grpc.RpcError on a non-OK end)."""
    return list(stub.WatchJob(pb.WatchJobRequest(id=job_id, after_seq=after_seq),
                              timeout=timeout))


def cancel_quietly(stub, ids):
    """Best-effort cancel of jobs a test created in bulk, so they don't keep workers busy."""
    futures = [stub.CancelJob.future(pb.CancelJobRequest(id=i, reason="test cleanup"),
                                     timeout=30) for i in ids]
    for f in futures:
        try:
            f.result()
        except grpc.RpcError:
            pass


class Watcher(threading.Thread):
    """Reads a WatchJob stream in the background; .events, .error, .first_event (Event)."""

    def __init__(self, stub, job_id, after_seq=0, timeout=60.0):
        super().__init__(daemon=True)
        self.stub, self.job_id, self.after_seq, self.timeout = stub, job_id, after_seq, timeout
        self.events = []
        self.error: grpc.RpcError | None = None
        self.first_event = threading.Event()
        self.call = None

    def run(self):
        try:
            self.call = self.stub.WatchJob(
                pb.WatchJobRequest(id=self.job_id, after_seq=self.after_seq),
                timeout=self.timeout)
            for ev in self.call:
                self.events.append(ev)
                self.first_event.set()
        except grpc.RpcError as e:
            self.error = e
        finally:
            self.first_event.set()

    def finish(self, timeout=30.0):
        self.join(timeout)
        assert not self.is_alive(), (
            f"watch stream of {self.job_id} still open after {timeout}s; events so far: "
            f"{[describe_event(e) for e in self.events]}")
        return self.events


# --------------------------------------------------------------------------- postgres


def _psql(url: str, sql: str):
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")
    r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                       capture_output=True, text=True, timeout=60, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"psql {sql!r} on {url} failed: {r.stderr.strip()}")
    return r.stdout


def create_database(base_url: str) -> tuple[str, str]:
    """Creates reel_interop_<random> on the server of base_url; returns (name, url)."""
    name = f"reel_interop_{uuid.uuid4().hex[:12]}"
    _psql(base_url, f'CREATE DATABASE "{name}"')
    parts = urllib.parse.urlsplit(base_url)
    return name, urllib.parse.urlunsplit(parts._replace(path="/" + name))


def drop_database(base_url: str, name: str):
    try:
        _psql(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as e:  # cleanup only: the cluster is usually throwaway anyway
        print(f"warning: could not drop database {name}: {e}", file=sys.stderr)


# --------------------------------------------------------------------------- reeld


ALL_SERVERS: list["ReelServer"] = []


class ReelServer:
    """One reeld subprocess (DESIGN §8) on a loopback port, with a gRPC channel to it."""

    def __init__(self, name: str, bin_dir: Path, db_url: str, workdir: Path, *,
                 workers: int = 4, sim_stage_ms: int = 50, lease_seconds: int = 3,
                 extra_args=(), http: bool = False):
        self.name = name
        self.binary = Path(bin_dir) / "reeld"
        self.db_url = db_url
        self.port = free_port()
        self.metrics_port = free_port()
        # The HTTP/1.1 side (JSON API, SSE, WebSocket, dashboard) only when asked for: its
        # default address (127.0.0.1:8080) would collide between servers.
        self.http_port = free_port() if http else None
        self.http_url = f"http://127.0.0.1:{self.http_port}" if http else None
        self.target = f"127.0.0.1:{self.port}"
        self.log_path = Path(workdir) / f"reeld-{name}.log"
        self.args = [
            str(self.binary),
            "--listen", self.target,
            "--database-url", db_url,
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            "--provider", "simulated",
            "--workers", str(workers),
            "--sim-stage-ms", str(sim_stage_ms),
            "--lease-seconds", str(lease_seconds),
            *(() if "--http-listen" in extra_args else
              ("--http-listen", f"127.0.0.1:{self.http_port}" if http else "")),
            *extra_args,
        ]
        self.proc: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None
        self.stub = None
        self.health = None
        self.starts = 0
        ALL_SERVERS.append(self)

    # -- process control

    def start(self, ready_timeout: float = 60.0):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if not self.binary.exists():
            raise RuntimeError(f"{self.binary} does not exist: build first (swift build), or "
                               f"set REEL_BIN_DIR")
        env = {k: v for k, v in os.environ.items() if not k.startswith("REEL_")}
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n----- start #{self.starts}: {' '.join(self.args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        self._open_channel()
        self.wait_ready(ready_timeout)
        return self

    def _open_channel(self):
        if self.channel is not None:
            self.channel.close()
        self.channel = grpc.insecure_channel(self.target, options=[
            ("grpc.max_send_message_length", 64 * MIB),
            ("grpc.max_receive_message_length", 64 * MIB),
            ("grpc.use_local_subchannel_pool", 1),
            # Poll a starting server briskly instead of backing off for seconds.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 500),
        ])
        self.stub = pb_grpc.JobServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def wait_ready(self, timeout: float):
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError(f"reeld {self.name} exited with {rc} during start\n"
                                   f"{self.log_tail()}")
            try:
                r = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0,
                                      wait_for_ready=False)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    if self._http_listening():
                        return
                    last = f"SERVING, but nothing listens on HTTP port {self.http_port} yet"
                else:
                    last = f"health status {r.status}"
            except grpc.RpcError as e:
                last = f"{e.code().name}: {e.details()}"
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"reeld {self.name} not SERVING after {timeout}s (last: {last})\n"
                           f"{self.log_tail()}")

    def _http_listening(self) -> bool:
        """reeld opens its HTTP port in a task of its own after gRPC says SERVING."""
        if not self.http_port:
            return True
        try:
            socket.create_connection(("127.0.0.1", self.http_port), timeout=1.0).close()
            return True
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with open(self.log_path, "ab") as log:
                    log.write(f"\n----- no exit {timeout}s after SIGTERM: SIGKILL\n".encode())
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, ready_timeout: float = 60.0):
        self.kill()
        return self.start(ready_timeout)

    # -- logs

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, since: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80, since: int = 0) -> str:
        text = self.log_text(since).splitlines()
        cut = len(text) - lines
        head = [f"... ({cut} earlier lines in {self.log_path})"] if cut > 0 else []
        return "\n".join(head + text[-lines:])


def kill_all_servers():
    for s in ALL_SERVERS:
        try:
            s.kill()
        except Exception:
            pass


atexit.register(kill_all_servers)


# --------------------------------------------------------------------------- Kling provider
# reeld with `--provider kling` against the strict fake of Kling's published API in
# Tests/fake_kling (JWT checked on every call, string durations, account concurrency, callbacks).

FAKE_KLING_DIR = REPO_ROOT / "Tests" / "fake_kling"
FAKE_RUNWAY_DIR = REPO_ROOT / "Tests" / "fake_runway"
FAKE_OPENAI_DIR = REPO_ROOT / "Tests" / "fake_openai"
KLING_ACCESS_KEY = "test-access-key"
KLING_SECRET_KEY = "test-secret-key"
RUNWAY_API_KEY = "test-runway-key"


def _fake_class(fake_dir: Path, class_name: str):
    """The class `class_name` of the fake `fake_dir`/`fake_dir.name`.py (`fake_dir` is put on
    sys.path; the fake puts Tests/fake_common, which it shares, there itself)."""
    if str(fake_dir) not in sys.path:
        sys.path.insert(0, str(fake_dir))
    return getattr(importlib.import_module(fake_dir.name), class_name)


def fake_kling_class():
    """fake_kling.FakeKling (Tests/fake_kling is put on sys.path)."""
    return _fake_class(FAKE_KLING_DIR, "FakeKling")


def fake_runway_class():
    """fake_runway.FakeRunway (Tests/fake_runway is put on sys.path)."""
    return _fake_class(FAKE_RUNWAY_DIR, "FakeRunway")


def fake_openai_class():
    """fake_openai.FakeOpenAI (Tests/fake_openai is put on sys.path)."""
    return _fake_class(FAKE_OPENAI_DIR, "FakeOpenAI")


def provider_reeld(factory, provider: str, name: str, provider_url: str, artifacts_dir,
                   keys: dict, *, workers: int = 2, sim_stage_ms: int = 0, lease_seconds: int = 3,
                   poll_ms: int = 100, retry_base_ms: int = 50, concurrency: int = 2,
                   callbacks: bool = False, probe_ms: int | None = None, extra_args=(),
                   env: dict | None = None, start: bool = True) -> ReelServer:
    """A private reeld (from `reeld_factory`) with `--provider PROVIDER --provider-url URL`,
    `keys` in its environment, an HTTP listener and, with `callbacks`, `--public-url` pointing
    at it (so the provider POSTs status changes there). Later flags win, so these replace
    ReelServer's `--provider simulated`. `env` adds or replaces variables (a key of None
    removes it); the command runs through env(1), which execs reeld (SIGKILL still hits it)."""
    http_port = free_port()
    args = ["--provider", provider, "--provider-url", provider_url,
            "--provider-concurrency", str(concurrency), "--provider-poll-ms", str(poll_ms),
            "--http-listen", f"127.0.0.1:{http_port}", "--artifacts-dir", str(artifacts_dir),
            "--retry-base-ms", str(retry_base_ms)]
    if callbacks:
        args += ["--public-url", f"http://127.0.0.1:{http_port}"]
    if probe_ms is not None:
        args += ["--provider-probe-ms", str(probe_ms)]
    srv = factory(name, workers=workers, sim_stage_ms=sim_stage_ms, lease_seconds=lease_seconds,
                  start=False, extra_args=(*args, *extra_args))
    srv.http_port = http_port
    srv.http_url = f"http://127.0.0.1:{http_port}"
    keys = dict(keys)
    keys.update(env or {})
    set_env(srv, {k: v for k, v in keys.items() if v is not None})
    if start:
        srv.start()
    return srv


def kling_reeld(factory, name: str, kling_url: str, artifacts_dir, *, callbacks: bool = True,
                **kw) -> ReelServer:
    """provider_reeld with `--provider kling`, the fake's keys in KLING_ACCESS_KEY and
    KLING_SECRET_KEY and, by default, callbacks (`--public-url`). The same keywords as
    provider_reeld (workers, sim_stage_ms, lease_seconds, poll_ms, retry_base_ms, concurrency,
    probe_ms, extra_args, env, start)."""
    return provider_reeld(factory, "kling", name, kling_url, artifacts_dir,
                          {"KLING_ACCESS_KEY": KLING_ACCESS_KEY, "KLING_SECRET_KEY": KLING_SECRET_KEY},
                          callbacks=callbacks, **kw)


def runway_reeld(factory, name: str, runway_url: str, artifacts_dir, **kw) -> ReelServer:
    """provider_reeld with `--provider runway` and the fake's key in RUNWAYML_API_SECRET
    (Runway sends no callbacks: polling only). The same keywords as provider_reeld."""
    return provider_reeld(factory, "runway", name, runway_url, artifacts_dir,
                          {"RUNWAYML_API_SECRET": RUNWAY_API_KEY}, **kw)


def set_env(srv: ReelServer, env: dict | None):
    """Sets (replaces) the extra environment reeld is started with (see kling_reeld)."""
    args = list(srv.args)
    if args and args[0] == "env":
        args = args[args.index(str(srv.binary)):]
    if env:
        args = ["env", *[f"{k}={v}" for k, v in env.items()], *args]
    srv.args = args


def psql_value(url: str, sql: str) -> str:
    """The unaligned, tuples-only output of one query (rows joined by newlines)."""
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")
    r = subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                       capture_output=True, text=True, timeout=60, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"psql {sql!r} on {url} failed: {r.stderr.strip()}")
    return r.stdout.strip()


def stored_history(db_url: str, job_id: str) -> str:
    """A job's event history straight from Postgres (works while reeld is down): for
    failure messages."""
    try:
        rows = psql_value(db_url, (
            "SELECT seq || ' ' || to_char(at, 'HH24:MI:SS.MS') || ' ' || status || '/' || "
            "stage || ' p=' || progress || ' dl=' || "
            "dead_lettered || ' ' || quote_literal(message) FROM job_events "
            f"WHERE job_id = '{job_id}' ORDER BY seq"))
    except Exception as e:  # diagnostics only
        return f"(could not read the history of {job_id}: {e})"
    return f"event history of {job_id}:\n  " + rows.replace("\n", "\n  ")


# --------------------------------------------------------------------------- fault reports

FAULT_REPORTS: list[dict] = []


def fault_report(name: str, db_url: str, acknowledged: list[str]) -> dict:
    """What became of the jobs a fault test got acknowledged, counted from Postgres: completed
    (FINAL_READY), lost (acknowledged but not stored), duplicated (more than one segment or
    more than one FINAL_READY event), and the rest by status. Recorded for the end-of-run table
    (conftest prints it); the caller asserts lost == duplicated == 0."""
    ids = sorted(set(acknowledged))
    assert len(ids) == len(acknowledged), "an id was acknowledged twice for two creates"
    in_list = "'" + "','".join(ids) + "'" if ids else "NULL"
    stored = dict(ln.split("|") for ln in psql_value(
        db_url, f"SELECT id, status FROM jobs WHERE id::text IN ({in_list})").splitlines() if ln)
    dup_seg = psql_value(db_url, f"SELECT count(*) FROM (SELECT job_id FROM segments WHERE job_id::text IN ({in_list}) "
                                 "GROUP BY job_id HAVING count(*) > 1) d")
    dup_final = psql_value(db_url, f"SELECT count(*) FROM (SELECT job_id FROM job_events WHERE job_id::text IN ({in_list}) "
                                   "AND status = 'final_ready' GROUP BY job_id HAVING count(*) > 1) d")
    by_status: dict[str, int] = {}
    for st in stored.values():
        by_status[st] = by_status.get(st, 0) + 1
    report = {
        "fault": name, "acknowledged": len(ids), "completed": by_status.get("final_ready", 0),
        "lost": len([i for i in ids if i not in stored]),
        "duplicated": int(dup_seg or 0) + int(dup_final or 0),
        "other": ", ".join(f"{k} {v}" for k, v in sorted(by_status.items()) if k != "final_ready") or "-",
    }
    FAULT_REPORTS.append(report)
    print(f"fault report: {report}")
    return report


def fault_table() -> list[str]:
    if not FAULT_REPORTS:
        return []
    cols = ("fault", "acknowledged", "completed", "lost", "duplicated", "other")
    rows = [cols] + [tuple(str(r[c]) for c in cols) for r in FAULT_REPORTS]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]


# --------------------------------------------------------------------------- shared checks
# Used by the Kling, provider-fault, crash and metrics tests.

PROM_SAMPLE = __import__("re").compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def scrape(srv) -> dict:
    """{(name, frozenset(labels)): value} of one /metrics scrape of `srv`'s metrics port."""
    import re
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = PROM_SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def file_path(url: str) -> Path:
    """The local path of a file:// artifact URL."""
    parts = urllib.parse.urlsplit(url)
    assert parts.scheme == "file", f"expected a file:// URL, got {url!r}"
    return Path(urllib.parse.unquote(parts.path))


def assert_dead_lettered(job, code, d):
    assert job.status == pb.JOB_STATUS_FAILED and job.dead_lettered, f"not dead-lettered:\n{d}"
    assert job.error.code == code, f"error.code {job.error.code!r}, want {code!r}:\n{d}"
    assert job.error.message, f"no error message:\n{d}"


def retry_pairs(events):
    """(FAILED not dead-lettered, the QUEUED that follows it) pairs in an event list."""
    return [(a, b) for a, b in zip(events, events[1:])
            if a.status == pb.JOB_STATUS_FAILED and not a.dead_lettered
            and b.status == pb.JOB_STATUS_QUEUED]


def kling_stats(fake) -> dict:
    """The fake Kling's stats without the bulky per-task fields: for failure messages."""
    st = fake.stats()
    st["tasks"] = [{k: t[k] for k in ("task_id", "external_task_id", "status")} for t in st["tasks"]]
    st.pop("callbacks", None)
    return st


def kling_tasks_of(stats: dict, job_id: str) -> list[dict]:
    """The Kling tasks made for a job: those whose external id is reel-<job id>-<attempt>."""
    return [t for t in stats["tasks"] if (t["external_task_id"] or "").startswith(f"reel-{job_id}-")]
