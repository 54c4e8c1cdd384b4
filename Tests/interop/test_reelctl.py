"""reelctl, tested by running the binary ($REEL_BIN_DIR/reelctl) against reeld.

What is checked is what `reelctl --help` promises: text for people, JSON with --json in the
HTTP API's one shape (protobuf's JSON mapping: lowerCamelCase, enums by proto name), one JSON line per watch event when stdout is not a terminal,
a live progress bar when it is (run in a pseudo-terminal here), and the exit codes:
0 success, 2 usage, 3 a watched job ended FAILED/CANCELLED (health: not SERVING),
10 + gRPC code for a failed call with one `reelctl: CODE: message` line on stderr.
Jobs are also read back through the Python gRPC stub, so reelctl is checked against the
server rather than against itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import termios
import threading
import time
import uuid
from pathlib import Path

import pytest

import reel_interop as ri
from reel_interop import pb

RUN_TIMEOUT = 60.0  # seconds for one reelctl run that should end by itself
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ERROR_LINE = re.compile(r"^reelctl: ([A-Z_]+): (.+)$")


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def reelctl(bin_dir) -> Path:
    path = Path(bin_dir) / "reelctl"
    if not path.exists():
        pytest.fail(f"no reelctl in {bin_dir}: build first (swift build) or set REEL_BIN_DIR",
                    pytrace=False)
    return path


def clean_env(**extra) -> dict:
    """The test's environment without REEL_* (so REEL_ADDRESS can't leak in), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REEL_")}
    env.update(extra)
    return env


class Run:
    def __init__(self, args, proc: subprocess.CompletedProcess):
        self.args, self.rc, self.out, self.err = args, proc.returncode, proc.stdout, proc.stderr

    def __str__(self):
        return (f"`reelctl {' '.join(self.args)}` exited {self.rc}\n--- stdout:\n{self.out}"
                f"\n--- stderr:\n{self.err}")

    def json(self):
        try:
            return json.loads(self.out)
        except ValueError as e:
            raise AssertionError(f"stdout is not one JSON document ({e}): {self}") from None

    def json_lines(self):
        lines = [l for l in self.out.split("\n") if l]
        try:
            return [json.loads(l) for l in lines]
        except ValueError as e:
            raise AssertionError(f"stdout is not JSON lines ({e}): {self}") from None


def run(reelctl: Path, *args, env: dict | None = None, timeout: float = RUN_TIMEOUT) -> Run:
    args = [str(a) for a in args]
    try:
        proc = subprocess.run([str(reelctl), *args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, env=env or clean_env(), timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"`reelctl {' '.join(args)}` still running after {timeout}s; "
                             f"stdout so far: {e.stdout!r} stderr: {e.stderr!r}") from None
    return Run(args, proc)


def expect_ok(r: Run) -> Run:
    assert r.rc == 0, str(r)
    assert r.err == "", f"a successful run should print nothing on stderr: {r}"
    return r


def expect_call_failure(r: Run, rc: int, code: str) -> re.Match:
    """Exit 10 + code, nothing on stdout, exactly one `reelctl: CODE: message` stderr line."""
    assert r.rc == rc, f"expected exit {rc} ({code}): {r}"
    assert r.out == "", f"a failed call should print nothing on stdout: {r}"
    lines = r.err.splitlines()
    assert len(lines) == 1, f"expected one stderr line: {r}"
    m = ERROR_LINE.match(lines[0])
    assert m and m.group(1) == code, f"expected `reelctl: {code}: message`: {r}"
    assert "\x1b" not in r.err and "\r" not in r.err, f"stderr should be plain text: {r}"
    return m


def create_args(user: str, text: str | None = None, scene: str = "scene-1", *more):
    return ["create", "--user-id", user, "--scene-id", scene, "--type", "scene-creation",
            "--text", text or f"A fox crosses a frozen river {uuid.uuid4().hex[:8]}", *more]


def finished_job(reelctl, server, user=None) -> str:
    """A job created through reelctl and waited to FINAL_READY through the stub: its id."""
    r = expect_ok(run(reelctl, "--address", server.target, "--json",
                      *create_args(user or ri.unique("ctl"))))
    job_id = r.json()["id"]
    ri.wait_for_job(server.stub, job_id)
    return job_id


def dead_address() -> str:
    """A loopback address where nothing listens."""
    return f"127.0.0.1:{ri.free_port()}"


def check_watch_events(events, job_id, final_status):
    """JSON watch lines: one job, seq strictly increasing and gap-free (every event after the
    snapshot, DESIGN §2), ending at `final_status` and only there."""
    assert events, "no watch events"
    assert all(e["jobId"] == job_id for e in events), events
    seqs = [e["seq"] for e in events]
    assert all(b > a for a, b in zip(seqs, seqs[1:])), f"seq not strictly increasing: {seqs}"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"events skipped: {seqs}"
    assert events[-1]["status"] == final_status, f"last event: {events[-1]}"
    for e in events[:-1]:
        assert e["status"] not in ("JOB_STATUS_FINAL_READY", "JOB_STATUS_CANCELLED"), f"terminal before the end: {e}"
    for e in events:
        assert 0 <= e["progress"] <= 100, e


class PtyRun:
    """reelctl with a pseudo-terminal as stdin and stdout (TERM=xterm, 200 columns); stderr
    goes to a pipe. A thread collects everything written to the terminal."""

    def __init__(self, reelctl: Path, *args, env: dict | None = None, columns: int = 200):
        self.args = [str(a) for a in args]
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
        self.master = master
        self.proc = subprocess.Popen(
            [str(reelctl), *self.args], stdin=slave, stdout=slave, stderr=subprocess.PIPE,
            env=env or clean_env(TERM="xterm"), start_new_session=True)
        os.close(slave)  # only the child holds it now: EOF/EIO on the master when it exits
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while True:
            try:
                ready, _, _ = select.select([self.master], [], [], 0.5)
                if not ready:
                    if self.proc.poll() is not None:
                        # Exited: drain whatever is left, then stop.
                        ready, _, _ = select.select([self.master], [], [], 0.2)
                        if not ready:
                            break
                    continue
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the slave side is closed
                break
            if not chunk:
                break
            with self._lock:
                self._buf += chunk

    @property
    def output(self) -> str:
        with self._lock:
            return self._buf.decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.output)
            if m:
                return m
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"{pattern!r} never appeared on the terminal of `reelctl "
                             f"{' '.join(self.args)}`; output: {self.output!r}")

    def finish(self, timeout: float = RUN_TIMEOUT) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"`reelctl {' '.join(self.args)}` still running after "
                                 f"{timeout}s; terminal: {self.output!r}") from None
        self._reader.join(5)
        self.err = self.proc.stderr.read().decode("utf-8", "replace")
        self.proc.stderr.close()
        os.close(self.master)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish(10)

    def describe(self) -> str:
        return (f"`reelctl {' '.join(self.args)}`\n--- terminal:\n{self.output!r}\n"
                f"--- stderr:\n{getattr(self, 'err', '')}")


class LineReader(threading.Thread):
    """Reads a pipe's lines in the background (for a watch that must be seen running)."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.lines = stream, []
        self.first = threading.Event()

    def run(self):
        for line in self.stream:
            self.lines.append(line)
            self.first.set()
        self.first.set()


# --------------------------------------------------------------------------- help and usage


def test_help_documents_exit_codes(reelctl):
    r = expect_ok(run(reelctl, "--help"))
    text = r.out
    for needle in ("Exit codes", "create", "get", "list", "cancel", "retry", "watch", "health",
                   "--address", "REEL_ADDRESS", "--json", "10 + code",
                   "13 INVALID_ARGUMENT", "15 NOT_FOUND", "19 FAILED_PRECONDITION",
                   "24 UNAVAILABLE"):
        assert needle in text, f"--help does not mention {needle!r}:\n{text}"
    for code, meaning in (("0", "success"), ("2", "usage"), ("3", "FAILED or CANCELLED")):
        assert re.search(rf"^\s*{code}\s+.*{meaning}", text, re.M), (
            f"--help does not document exit {code} ({meaning}):\n{text}")


def test_usage_error_exits_2(reelctl, reeld):
    # --user-id missing: nothing is sent, the exit code says usage.
    r = run(reelctl, "--address", reeld.target, "create", "--scene-id", "s",
            "--type", "scene-creation", "--text", "t")
    assert r.rc == 2, str(r)
    assert "--user-id" in r.err, str(r)
    assert r.out == "", str(r)


# --------------------------------------------------------------------------- create / get / list


def test_create_json_prints_a_queued_job(reelctl, reeld):
    user = ri.unique("ctl-create")
    text = "A lighthouse keeper finds a door in the sea"
    r = expect_ok(run(reelctl, "--address", reeld.target, "--json",
                      *create_args(user, text, "scene-7", "--tier", "premium",
                                   "--style", "palette=teal", "--duration", "8")))
    job = r.json()
    assert UUID_RE.match(job["id"]), job
    assert job["status"] == "JOB_STATUS_QUEUED", job
    assert job["stage"] == "STAGE_PENDING", job
    assert (job["userId"], job["sceneId"], job["inputText"]) == (user, "scene-7", text), job
    assert job["type"] == "JOB_TYPE_SCENE_CREATION" and job["tier"] == "TIER_PREMIUM", job
    assert job["config"]["styleOverrides"] == {"palette": "teal"}, job
    assert job["config"]["targetDurationSeconds"] == 8, job
    assert job["lastEventSeq"] == 1 and job["idempotencyKey"].startswith("idem_"), job
    # The server has it, as printed.
    got = reeld.stub.GetJob(pb.GetJobRequest(id=job["id"]), timeout=ri.DEFAULT_TIMEOUT)
    assert (got.user_id, got.scene_id, got.tier) == (user, "scene-7", pb.TIER_PREMIUM)


def test_create_text_prints_the_id_first(reelctl, reeld):
    user = ri.unique("ctl-create-text")
    r = expect_ok(run(reelctl, "--address", reeld.target, *create_args(user)))
    first = r.out.splitlines()[0]
    m = re.match(r"^id:\s+(\S+)$", first)
    assert m and UUID_RE.match(m.group(1)), f"first line should be `id: UUID`: {r}"
    assert re.search(r"^status:\s+queued$", r.out, re.M), str(r)
    assert re.search(rf"^user:\s+{re.escape(user)}$", r.out, re.M), str(r)
    reeld.stub.GetJob(pb.GetJobRequest(id=m.group(1)), timeout=ri.DEFAULT_TIMEOUT)


def test_get_text_and_json(reelctl, reeld):
    user = ri.unique("ctl-get")
    job_id = finished_job(reelctl, reeld, user)
    want = reeld.stub.GetJob(pb.GetJobRequest(id=job_id), timeout=ri.DEFAULT_TIMEOUT)

    r = expect_ok(run(reelctl, "--address", reeld.target, "get", job_id))
    assert re.search(rf"^id:\s+{job_id}$", r.out, re.M), str(r)
    assert re.search(r"^status:\s+final_ready$", r.out, re.M), str(r)
    assert re.search(r"^progress:\s+100%$", r.out, re.M), str(r)
    assert re.search(rf"^last event:\s+{want.last_event_seq}$", r.out, re.M), str(r)
    assert "{" not in r.out.splitlines()[0], f"text output expected without --json: {r}"

    # --json before the subcommand, and after it (global options go either side).
    for args in (["--json", "get", job_id], ["get", job_id, "--json"]):
        r = expect_ok(run(reelctl, "--address", reeld.target, *args))
        job = r.json()
        assert job["id"] == job_id and job["userId"] == user, job
        assert job["status"] == "JOB_STATUS_FINAL_READY" and job["stage"] == "STAGE_COMPLETED", job
        assert job["progress"] == 100, job
        assert job["lastEventSeq"] == want.last_event_seq, job
        assert job["result"] and job["result"]["videoUrl"] == want.result.video_url, job
        assert job["completedAtUnixMs"] == want.completed_at_unix_ms, job
        assert "error" not in job and job["deadLettered"] is False, job


def test_list_by_user(reelctl, reeld):
    user = ri.unique("ctl-list")
    first = finished_job(reelctl, reeld, user)
    second = finished_job(reelctl, reeld, user)
    other = finished_job(reelctl, reeld)  # another user's job

    r = expect_ok(run(reelctl, "--address", reeld.target, "list", "--user-id", user))
    lines = r.out.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATUS", "STAGE"], str(r)
    rows = [l.split() for l in lines[1:] if UUID_RE.match(l.split()[0] if l.split() else "")]
    assert [row[0] for row in rows] == [second, first], f"newest first, this user only: {r}"
    assert all(row[1] == "final_ready" and user in row for row in rows), str(r)
    assert other not in r.out, str(r)

    r = expect_ok(run(reelctl, "--address", reeld.target, "--json", "list", "--user-id", user))
    page = r.json()
    assert [j["id"] for j in page["jobs"]] == [second, first], page
    assert page["nextPageToken"] == "", page

    r = expect_ok(run(reelctl, "--address", reeld.target, "list", "--user-id",
                      ri.unique("ctl-nobody")))
    assert "(no jobs)" in r.out, str(r)


# --------------------------------------------------------------------------- errors


def test_cancel_of_a_finished_job_is_failed_precondition(reelctl, reeld):
    job_id = finished_job(reelctl, reeld)
    r = run(reelctl, "--address", reeld.target, "cancel", job_id, "--reason", "too late")
    m = expect_call_failure(r, 19, "FAILED_PRECONDITION")
    assert job_id in m.group(2) or "final_ready" in m.group(2), str(r)
    job = reeld.stub.GetJob(pb.GetJobRequest(id=job_id), timeout=ri.DEFAULT_TIMEOUT)
    assert job.status == pb.JOB_STATUS_FINAL_READY, ri.describe_job(job)


def test_retry_of_a_finished_job_is_failed_precondition(reelctl, reeld):
    job_id = finished_job(reelctl, reeld)
    expect_call_failure(run(reelctl, "--address", reeld.target, "retry", job_id),
                        19, "FAILED_PRECONDITION")


def test_get_of_a_malformed_id_is_invalid_argument(reelctl, reeld):
    for bad in ("not-a-uuid", "1234"):
        m = expect_call_failure(run(reelctl, "--address", reeld.target, "get", bad),
                                13, "INVALID_ARGUMENT")
        assert "id" in m.group(2), m.group(0)


def test_get_of_an_unknown_id_is_not_found(reelctl, reeld):
    unknown = str(uuid.uuid4())
    m = expect_call_failure(run(reelctl, "--address", reeld.target, "get", unknown),
                            15, "NOT_FOUND")
    assert unknown in m.group(2), m.group(0)
    # watch and cancel report it the same way.
    expect_call_failure(run(reelctl, "--address", reeld.target, "watch", unknown),
                        15, "NOT_FOUND")
    expect_call_failure(run(reelctl, "--address", reeld.target, "cancel", unknown),
                        15, "NOT_FOUND")


def test_unreachable_address_is_unavailable(reelctl):
    addr = dead_address()
    for args in (["get", str(uuid.uuid4())], ["health"], ["watch", str(uuid.uuid4())],
                 ["--json", *create_args("ctl-unreachable")]):
        started = time.monotonic()
        r = run(reelctl, "--address", addr, *args, timeout=30)
        m = expect_call_failure(r, 24, "UNAVAILABLE")
        assert addr in m.group(2) or "connect" in m.group(2), f"should say what failed: {r}"
        assert time.monotonic() - started < 15, f"a refused connection should fail fast: {r}"


# --------------------------------------------------------------------------- health / address


def test_health_serving(reelctl, reeld):
    r = expect_ok(run(reelctl, "--address", reeld.target, "health"))
    assert r.out == "SERVING\n", str(r)
    r = expect_ok(run(reelctl, "--address", reeld.target, "--json", "health"))
    assert r.json() == {"status": "SERVING"}, str(r)


def test_reel_address_environment_variable(reelctl, reeld):
    job_id = finished_job(reelctl, reeld)
    # No --address: REEL_ADDRESS is where the job is found (not the default 127.0.0.1:50051).
    r = expect_ok(run(reelctl, "--json", "get", job_id, env=clean_env(REEL_ADDRESS=reeld.target)))
    assert r.json()["id"] == job_id, str(r)
    r = expect_ok(run(reelctl, "health", env=clean_env(REEL_ADDRESS=reeld.target)))
    assert r.out.strip() == "SERVING", str(r)
    # The variable is really what is used: pointed at nothing, the call fails there.
    dead = dead_address()
    m = expect_call_failure(run(reelctl, "health", env=clean_env(REEL_ADDRESS=dead)),
                            24, "UNAVAILABLE")
    assert dead in m.group(2), m.group(0)
    # --address beats the variable.
    expect_ok(run(reelctl, "--address", reeld.target, "health",
                  env=clean_env(REEL_ADDRESS=dead)))


# --------------------------------------------------------------------------- watch


@pytest.fixture
def slower_reeld(reeld_factory):
    """A private reeld whose jobs take a few seconds (200 ms stages): long enough for a
    watch started after CreateJob to see them live."""
    return reeld_factory("ctl-watch", workers=2, sim_stage_ms=200)


def test_watch_json_lines_live(reelctl, slower_reeld):
    srv = slower_reeld
    job = srv.stub.CreateJob(ri.create_request(ri.unique("ctl-watch")),
                             timeout=ri.DEFAULT_TIMEOUT)
    r = expect_ok(run(reelctl, "--address", srv.target, "watch", job.id, "--json"))
    events = r.json_lines()
    check_watch_events(events, job.id, "JOB_STATUS_FINAL_READY")
    assert len(events) >= 5, f"the job should have been followed live, got {len(events)} events"
    assert "snapshot" in events[0] and events[0]["snapshot"]["id"] == job.id, events[0]
    assert events[0]["seq"] == events[0]["snapshot"]["lastEventSeq"], events[0]
    assert all("snapshot" not in e for e in events[1:]), events
    assert {"STAGE_VIDEO_GENERATION", "STAGE_COMPLETED"} <= {e["stage"] for e in events}, events
    assert events[-1]["progress"] == 100, events[-1]
    assert "\r" not in r.out and "\x1b" not in r.out, "no terminal drawing on a pipe"
    final = srv.stub.GetJob(pb.GetJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
    assert events[-1]["seq"] == final.last_event_seq, ri.describe_job(final)


def test_watch_on_a_pipe_writes_json_without_the_flag(reelctl, reeld):
    job_id = finished_job(reelctl, reeld)
    r = expect_ok(run(reelctl, "--address", reeld.target, "watch", job_id))
    events = r.json_lines()
    # A finished job: the snapshot is the only event.
    assert len(events) == 1, str(r)
    check_watch_events(events, job_id, "JOB_STATUS_FINAL_READY")
    assert events[0]["snapshot"]["status"] == "JOB_STATUS_FINAL_READY", events[0]


def test_watch_after_seq_replays_the_rest(reelctl, reeld):
    job_id = finished_job(reelctl, reeld)
    history = [ev for ev in ri.watch(reeld.stub, job_id, after_seq=1)]
    last = history[-1].seq
    assert last >= 4, [ri.describe_event(e) for e in history]
    r = expect_ok(run(reelctl, "--address", reeld.target, "--json", "watch", job_id,
                      "--after-seq", 2))
    events = r.json_lines()
    check_watch_events(events, job_id, "JOB_STATUS_FINAL_READY")
    assert [e["seq"] for e in events] == list(range(3, last + 1)), str(r)
    assert all("snapshot" not in e for e in events), str(r)
    want = {ev.seq: ev for ev in history}
    for e in events:
        ev = want[e["seq"]]
        assert (e["progress"], e["message"], e["atUnixMs"]) == (
            ev.progress, ev.message, ev.at_unix_ms), (e, ri.describe_event(ev))


def _bar_redraws(output: str):
    """(percent, stage, status) of every progress-bar drawing on the terminal."""
    draws = re.findall(r"\r\x1b\[2K\[([#.]{20})\]\s+(\d{1,3})%  (\w+)  (\w+)  ", output)
    for bar, percent, _, _ in draws:
        assert bar.count("#") == int(percent) * 20 // 100, f"bar {bar} does not show {percent}%"
    return [(int(p), stage, status) for _, p, stage, status in draws]


def test_create_watch_draws_a_progress_bar_on_a_terminal(reelctl, reeld):
    user = ri.unique("ctl-pty")
    t = PtyRun(reelctl, "--address", reeld.target, *create_args(user, None, "scene-1", "--watch"))
    rc = t.finish()
    out = t.output
    assert rc == 0, t.describe()
    assert t.err == "", t.describe()
    m = re.match(r"job (\S+) created\r\n", out)
    assert m and UUID_RE.match(m.group(1)), f"first line should be `job ID created`: {t.describe()}"
    job_id = m.group(1)

    draws = _bar_redraws(out)
    assert len(draws) >= 3, f"expected the bar to be redrawn in place: {t.describe()}"
    percents = [p for p, _, _ in draws]
    assert percents == sorted(percents), f"progress went backwards: {percents}"
    assert percents[-1] == 100 and draws[-1][2] == "final_ready", t.describe()
    stages = {stage for _, stage, _ in draws}
    assert {"script_expansion", "video_generation"} <= stages, f"stages drawn: {stages}"
    assert re.search(r"\d+\.\ds", out), f"no elapsed time on the bar: {t.describe()}"

    assert re.search(r"ETA \d+\.\ds", out), f"no ETA on the bar while the job runs: {t.describe()}"

    # After the bar: a newline, the video URL, and last the summary naming FINAL_READY.
    after_bar = out[out.rindex("\r\x1b[2K"):].split("\r\n")[1:]
    after_bar = [l for l in after_bar if l]
    assert after_bar, t.describe()
    job = ri.wait_for_job(reeld.stub, job_id)
    assert after_bar[:-1] == [f"video: {job.result.video_url}"], after_bar
    assert re.match(rf"^job {job_id} FINAL_READY after \d+\.\ds$", after_bar[-1]), (
        f"expected the FINAL_READY summary as the last line: {after_bar}")


def test_watch_of_a_cancelled_job_exits_3(reelctl, slow_reeld):
    srv = slow_reeld  # 1 worker, 3 s stages: the job is still queued or running when cancelled
    job = srv.stub.CreateJob(ri.create_request(ri.unique("ctl-cancel")),
                             timeout=ri.DEFAULT_TIMEOUT)
    proc = subprocess.Popen([str(reelctl), "--address", srv.target, "watch", job.id, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=clean_env())
    reader = LineReader(proc.stdout)
    reader.start()
    try:
        assert reader.first.wait(30), "watch printed nothing"
        assert reader.lines, f"watch ended at once: {proc.wait()} {proc.stderr.read()}"
        srv.stub.CancelJob(pb.CancelJobRequest(id=job.id, reason="ctl test"),
                           timeout=ri.DEFAULT_TIMEOUT)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    err = proc.stderr.read()
    assert rc == 3, f"exit {rc}; stdout {reader.lines} stderr {err!r}"
    assert err == "", err
    events = [json.loads(l) for l in reader.lines]
    check_watch_events(events, job.id, "JOB_STATUS_CANCELLED")


def test_create_watch_of_a_cancelled_job_on_a_terminal_exits_3(reelctl, slow_reeld):
    srv = slow_reeld
    t = PtyRun(reelctl, "--address", srv.target,
               *create_args(ri.unique("ctl-pty-cancel"), None, "scene-1", "--watch"))
    try:
        job_id = t.wait_for(r"job (\S+) created\r\n").group(1)
        t.wait_for(r"\r\x1b\[2K\[")  # the bar is up
        srv.stub.CancelJob(pb.CancelJobRequest(id=job_id, reason="changed my mind"),
                           timeout=ri.DEFAULT_TIMEOUT)
    except BaseException:
        t.kill()
        raise
    rc = t.finish(30)
    assert rc == 3, t.describe()
    assert re.search(rf"\r\njob {job_id} CANCELLED after \d+\.\ds: changed my mind\r\n", t.output), (
        t.describe())
