"""Tests of the fake provider itself: python3 -m pytest -q Tests/fake_provider"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from fake_provider import FakeProvider, make_test_mp4  # noqa: E402

SCRIPT = os.path.join(HERE, "fake_provider.py")
SUBMIT = "/v1/videos/text-to-video"
KEY = "sk-test-123"

needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="ffmpeg/ffprobe not installed (scripts/install-deps installs them)")


# ---------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="session")
def mp4_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed (scripts/install-deps installs it)")
    path = str(tmp_path_factory.mktemp("mp4") / "video.mp4")
    make_test_mp4(path)
    return path


@pytest.fixture(scope="module")
def _shared(mp4_path: str):
    fp = FakeProvider("127.0.0.1", 0, mp4_path=mp4_path).start()
    yield fp
    fp.stop()


@pytest.fixture()
def fp(_shared: FakeProvider) -> FakeProvider:
    _shared.reset()
    return _shared


class Resp:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def call(base: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
         conn: http.client.HTTPConnection | None = None) -> Resp:
    """One request; body may be a dict (sent as JSON), bytes/str (sent raw) or None."""
    own = conn is None
    if conn is None:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
    hdrs = dict(headers or {})
    data: bytes | None = None
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        data = body.encode()
    elif isinstance(body, bytes):
        data = body
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        payload = r.read()
        assert r.getheader("Content-Length") is not None, "every response has Content-Length"
        if method != "HEAD":
            assert r.getheader("Content-Length") == str(len(payload))
        return Resp(r.status, r.headers, payload)
    finally:
        if own:
            conn.close()


def submit(fp: FakeProvider, prompt: str = "a cat surfing", ext: str = "") -> Resp:
    body = {"prompt": prompt, "duration": 5, "quality": "std", "model": "kling-v1",
            "external_task_id": ext}
    return call(fp.url, "POST", SUBMIT, body)


def submit_ok(fp: FakeProvider, prompt: str = "a cat surfing", ext: str = "") -> str:
    r = submit(fp, prompt, ext)
    assert r.status == 200, r.body
    j = r.json()
    assert j["code"] == 0 and j["message"] == "SUCCEED"
    assert j["data"]["task_status"] == "submitted"
    assert isinstance(j["data"]["task_id"], str) and j["data"]["task_id"]
    return j["data"]["task_id"]


def poll(fp: FakeProvider, task_id: str) -> dict[str, Any]:
    r = call(fp.url, "GET", f"/v1/videos/{task_id}")
    assert r.status == 200, r.body
    j = r.json()
    assert j["code"] == 0 and j["data"]["task_id"] == task_id
    return j["data"]


def stats(fp: FakeProvider) -> dict[str, Any]:
    r = call(fp.url, "GET", "/_stats")
    assert r.status == 200
    return r.json()


def control(fp: FakeProvider, **knobs: Any) -> dict[str, Any]:
    r = call(fp.url, "POST", "/_control", knobs)
    assert r.status == 200, r.body
    return r.json()


def ffprobe(path: str) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", path],
        capture_output=True, text=True, check=True, timeout=20).stdout
    return json.loads(out)


# ---------------------------------------------------------------------------------------
# The happy path


@needs_ffmpeg
def test_submit_poll_succeed_and_download_a_real_video(fp: FakeProvider, tmp_path) -> None:
    tid = submit_ok(fp)
    assert call(fp.url, "GET", f"/files/{tid}.mp4").status == 404, "no file before succeed"

    first = poll(fp, tid)
    second = poll(fp, tid)
    assert first["task_status"] == "processing" and second["task_status"] == "processing"
    assert 0 < first["progress"] < second["progress"] < 100
    assert "task_result" not in first and "task_result" not in second

    done = poll(fp, tid)  # processing_polls defaults to 3
    assert done["task_status"] == "succeed"
    assert done["progress"] == 100
    assert isinstance(done["task_status_msg"], str)
    videos = done["task_result"]["videos"]
    assert len(videos) == 1
    assert videos[0]["url"] == f"{fp.url}/files/{tid}.mp4"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/files/.+\.mp4", videos[0]["url"])
    assert videos[0]["duration"] == "2.0"
    assert videos[0]["id"]
    assert poll(fp, tid)["task_status"] == "succeed", "terminal state is stable"

    r = call(fp.url, "GET", f"/files/{tid}.mp4")
    assert r.status == 200
    assert r.headers["Content-Type"] == "video/mp4"
    assert int(r.headers["Content-Length"]) == len(r.body) > 1000
    out = tmp_path / "got.mp4"
    out.write_bytes(r.body)
    info = ffprobe(str(out))
    assert any(s["codec_type"] == "video" for s in info["streams"])
    assert 1.8 <= float(info["format"]["duration"]) <= 2.2

    # HEAD and a byte range (what players and ffmpeg-over-http use)
    h = call(fp.url, "HEAD", f"/files/{tid}.mp4")
    assert h.status == 200 and h.headers["Content-Length"] == str(len(r.body))
    rng = call(fp.url, "GET", f"/files/{tid}.mp4", headers={"Range": "bytes=0-99"})
    assert rng.status == 206 and rng.body == r.body[:100]

    s = stats(fp)
    assert s["submissions"] == 1 and s["tasks_created"] == 1 and s["polls"] == 4
    assert s["status_counts"] == {"200": 5}
    assert s["requests"] == 5, "/v1 requests only; /files and /_stats are not counted"
    assert s["last_submit"]["prompt"] == "a cat surfing" and s["last_submit"]["duration"] == 5


def test_processing_polls_knob(fp: FakeProvider) -> None:
    control(fp, processing_polls=1)
    tid = submit_ok(fp)
    assert poll(fp, tid)["task_status"] == "succeed"

    control(fp, processing_polls=5)
    tid = submit_ok(fp)
    seen = [poll(fp, tid) for _ in range(5)]
    assert [d["task_status"] for d in seen] == ["processing"] * 4 + ["succeed"]
    progress = [d["progress"] for d in seen]
    assert progress == sorted(progress) and len(set(progress)) == 5


def test_unknown_task_is_404(fp: FakeProvider) -> None:
    r = call(fp.url, "GET", "/v1/videos/task-nope")
    assert r.status == 404
    assert r.json() == {"code": 1201, "message": "task not found"}
    assert call(fp.url, "GET", "/files/task-nope.mp4").status == 404


# ---------------------------------------------------------------------------------------
# Idempotency and counting


def test_idempotent_submit_by_external_task_id(fp: FakeProvider) -> None:
    a = submit_ok(fp, "a dog", ext="job-1")
    again = submit_ok(fp, "a dog", ext="job-1")
    assert again == a, "same external_task_id -> the same task"
    poll(fp, a)
    r = submit(fp, "a dog", ext="job-1")
    assert r.json()["data"]["task_id"] == a
    assert r.json()["data"]["task_status"] == "processing", "the repeat reports the task's state"

    b = submit_ok(fp, "a dog", ext="job-2")
    assert b != a
    c1 = submit_ok(fp, "no ext")
    c2 = submit_ok(fp, "no ext")
    assert c1 != c2, "an empty external_task_id is never deduplicated"

    s = stats(fp)
    assert s["submissions"] == 6
    assert s["tasks_created"] == 4
    assert s["submissions_by_prompt"] == {"a dog": 4, "no ext": 2}
    assert s["submissions_by_external_id"] == {"job-1": 3, "job-2": 1}
    assert fp.stats() == s, "the Python API sees the same numbers"


# ---------------------------------------------------------------------------------------
# Auth and bad input


@pytest.fixture()
def keyed(mp4_path: str):
    fp = FakeProvider("127.0.0.1", 0, api_key=KEY, mp4_path=mp4_path).start()
    yield fp
    fp.stop()


def test_api_key_required(keyed: FakeProvider) -> None:
    body = {"prompt": "p", "duration": 5, "quality": "std", "model": "m", "external_task_id": "x"}
    r = call(keyed.url, "POST", SUBMIT, body)
    assert r.status == 401 and r.json()["code"] != 0
    r = call(keyed.url, "POST", SUBMIT, body, {"Authorization": "Bearer wrong"})
    assert r.status == 401
    r = call(keyed.url, "GET", "/v1/videos/whatever")
    assert r.status == 401

    r = call(keyed.url, "POST", SUBMIT, body, {"Authorization": f"Bearer {KEY}"})
    assert r.status == 200
    tid = r.json()["data"]["task_id"]
    r = call(keyed.url, "GET", f"/v1/videos/{tid}", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status == 200

    # test control needs no key
    s = call(keyed.url, "GET", "/_stats").json()
    assert s["submissions"] == 1
    assert s["status_counts"] == {"401": 3, "200": 2}


def test_bad_bodies_are_400(fp: FakeProvider) -> None:
    for raw in ["not json at all", "{\"prompt\": ", "[1, 2]", "{}", "{\"prompt\": \"\"}",
                "{\"prompt\": 42}", ""]:
        r = call(fp.url, "POST", SUBMIT, raw, {"Content-Type": "application/json"})
        assert r.status == 400, raw
        j = r.json()
        assert j["code"] == 1001 and j["message"], raw
    s = stats(fp)
    assert s["submissions"] == 0 and s["tasks_created"] == 0
    assert s["status_counts"] == {"400": 7}


def test_bad_control_is_400_and_changes_nothing(fp: FakeProvider) -> None:
    for bad in [{"nope": 1}, {"fail_rate": 2.0}, {"stuck": "yes"}, {"latency_ms": -5},
                {"latency_ms": 10, "bogus": True}]:
        r = call(fp.url, "POST", "/_control", bad)
        assert r.status == 400, bad
    assert fp.knobs()["latency_ms"] == 0
    with pytest.raises(ValueError):
        fp.control(garbage_rate=-1)


# ---------------------------------------------------------------------------------------
# Faults


def test_rate_limit_next_then_normal(fp: FakeProvider) -> None:
    knobs = control(fp, rate_limit_next=2, retry_after_s=3)
    assert knobs["rate_limit_next"] == 2 and knobs["retry_after_s"] == 3
    for _ in range(2):
        r = submit(fp)
        assert r.status == 429
        assert r.headers["Retry-After"] == "3"
        assert r.json()["code"] != 0
        # steering endpoints are never rate limited
        assert call(fp.url, "GET", "/_stats").status == 200
    tid = submit_ok(fp)
    assert poll(fp, tid)["task_status"] == "processing"
    s = stats(fp)
    assert s["status_counts"] == {"429": 2, "200": 2}
    assert s["submissions"] == 1 and s["requests"] == 4
    assert fp.knobs()["rate_limit_next"] == 0


def test_fail_rate_one_is_500(fp: FakeProvider) -> None:
    tid = submit_ok(fp)
    control(fp, fail_rate=1.0)
    for r in [submit(fp), call(fp.url, "GET", f"/v1/videos/{tid}"),
              call(fp.url, "POST", f"/v1/videos/{tid}/cancel")]:
        assert r.status == 500
        assert r.json()["code"] == 5000
    # control, stats, reset-free steering still work
    assert call(fp.url, "GET", "/_stats").status == 200
    control(fp, fail_rate=0.0)
    assert poll(fp, tid)["task_status"] == "processing", "failed polls did not advance the task"
    s = stats(fp)
    assert s["status_counts"]["500"] == 3 and s["submissions"] == 1 and s["polls"] == 1


def test_garbage_rate_one_is_non_json_200(fp: FakeProvider) -> None:
    tid = submit_ok(fp)
    control(fp, garbage_rate=1.0)
    for r in [submit(fp), call(fp.url, "GET", f"/v1/videos/{tid}")]:
        assert r.status == 200
        with pytest.raises(ValueError):
            json.loads(r.body)
    control(fp, garbage_rate=0)
    assert poll(fp, tid)["task_status"] == "processing"


def test_seeded_randomness_is_deterministic(fp: FakeProvider) -> None:
    def run() -> list[int]:
        control(fp, fail_rate=0.5, seed=42)
        return [submit(fp).status for _ in range(20)]

    a, b = run(), run()
    assert a == b
    assert set(a) == {200, 500}, "a 0.5 fail rate gives both outcomes over 20 tries"


def test_stuck_tasks_stay_processing(fp: FakeProvider) -> None:
    control(fp, stuck=True, processing_polls=1)
    tid = submit_ok(fp)
    seen = [poll(fp, tid) for _ in range(10)]
    assert all(d["task_status"] == "processing" for d in seen)
    assert all(d["progress"] < 100 for d in seen)
    control(fp, stuck=False)
    assert poll(fp, tid)["task_status"] == "succeed"


def test_fail_tasks(fp: FakeProvider) -> None:
    control(fp, fail_tasks=True, processing_polls=2)
    tid = submit_ok(fp)
    assert poll(fp, tid)["task_status"] == "processing"
    d = poll(fp, tid)
    assert d["task_status"] == "failed"
    assert d["task_status_msg"] == "generation failed"
    assert "task_result" not in d
    control(fp, fail_tasks=False)
    assert poll(fp, tid)["task_status"] == "failed", "failed is terminal"
    assert call(fp.url, "GET", f"/files/{tid}.mp4").status == 404


def test_reject_next(fp: FakeProvider) -> None:
    control(fp, reject_next=2)
    for _ in range(2):
        r = submit(fp, "forbidden", ext="e1")
        assert r.status == 400
        assert r.json() == {"code": 1102, "message": "content policy violation"}
    submit_ok(fp, "allowed", ext="e1")
    s = stats(fp)
    assert s["submissions"] == 1 and s["tasks_created"] == 1
    assert s["submissions_by_prompt"] == {"allowed": 1}
    assert s["rejected"] == 2


def test_latency_applies_to_v1_only(fp: FakeProvider) -> None:
    control(fp, latency_ms=300)
    t0 = time.monotonic()
    submit_ok(fp)
    assert time.monotonic() - t0 >= 0.29
    t0 = time.monotonic()
    stats(fp)
    call(fp.url, "POST", "/_control", {"seed": 1})
    assert time.monotonic() - t0 < 0.25, "steering endpoints are never slowed"


def test_slow_requests_are_served_concurrently(fp: FakeProvider) -> None:
    control(fp, latency_ms=400)
    results: list[int] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        r = submit(fp, f"p{i}")
        with lock:
            results.append(r.status)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    assert results == [200] * 8
    assert elapsed < 1.5, f"8 requests of 400 ms took {elapsed:.2f}s: not concurrent"
    assert stats(fp)["tasks_created"] == 8


# ---------------------------------------------------------------------------------------
# Cancel


def test_cancel(fp: FakeProvider) -> None:
    tid = submit_ok(fp)
    poll(fp, tid)
    r = call(fp.url, "POST", f"/v1/videos/{tid}/cancel")
    assert r.status == 200
    assert r.json() == {"code": 0, "message": "SUCCEED",
                        "data": {"task_id": tid, "task_status": "cancelled"}}
    for _ in range(4):
        assert poll(fp, tid)["task_status"] == "cancelled"
    assert call(fp.url, "GET", f"/files/{tid}.mp4").status == 404

    control(fp, processing_polls=1)
    done = submit_ok(fp)
    assert poll(fp, done)["task_status"] == "succeed"
    r = call(fp.url, "POST", f"/v1/videos/{done}/cancel")
    assert r.status == 409 and r.json()["code"] != 0
    assert poll(fp, done)["task_status"] == "succeed"

    control(fp, fail_tasks=True)
    failed = submit_ok(fp)
    assert poll(fp, failed)["task_status"] == "failed"
    assert call(fp.url, "POST", f"/v1/videos/{failed}/cancel").status == 409

    r = call(fp.url, "POST", "/v1/videos/task-unknown/cancel")
    assert r.status == 404 and r.json()["code"] == 1201

    assert stats(fp)["cancels"] == [tid]


# ---------------------------------------------------------------------------------------
# Reset, keep-alive


def test_reset(fp: FakeProvider) -> None:
    tid = submit_ok(fp, "x", ext="e")
    poll(fp, tid)
    call(fp.url, "POST", f"/v1/videos/{tid}/cancel")
    control(fp, latency_ms=5, fail_tasks=True, processing_polls=7, reject_next=3,
            retry_after_s=9, rate_limit_next=4, stuck=True, seed=3)
    before = stats(fp)
    assert before["submissions"] == 1 and before["polls"] == 1 and before["cancels"] == [tid]

    r = call(fp.url, "POST", "/_reset")
    assert r.status == 200
    knobs = call(fp.url, "GET", "/_control").json()
    assert knobs == {"latency_ms": 0, "fail_rate": 0.0, "garbage_rate": 0.0, "rate_limit_next": 0,
                     "retry_after_s": 1, "stuck": False, "fail_tasks": False, "reject_next": 0,
                     "processing_polls": 3, "seed": 0}
    s = stats(fp)
    assert s["submissions"] == 0 and s["tasks_created"] == 0 and s["polls"] == 0
    assert s["submissions_by_prompt"] == {} and s["submissions_by_external_id"] == {}
    assert s["cancels"] == [] and s["requests"] == 0 and s["status_counts"] == {}
    assert call(fp.url, "GET", f"/v1/videos/{tid}").status == 404, "tasks are cleared"
    again = submit_ok(fp, "x", ext="e")
    assert again != tid, "the external_task_id map is cleared too"


def test_keep_alive_connection_survives_errors(fp: FakeProvider) -> None:
    host, port = fp.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        statuses = []
        for method, path, body in [
            ("POST", SUBMIT, "garbage"),
            ("GET", "/v1/videos/nope", None),
            ("POST", SUBMIT, {"prompt": "kept alive"}),
            ("GET", "/_stats", None),
            ("POST", "/_control", {"latency_ms": 0}),
            ("GET", "/nowhere", None),
            ("POST", SUBMIT, {"prompt": "kept alive"}),
        ]:
            statuses.append(call(fp.url, method, path, body, conn=conn).status)
        assert statuses == [400, 404, 200, 200, 200, 404, 200]
        assert conn.sock is not None, "the server kept the connection open"
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------
# The CLI


def _spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    # Without PYTHONUNBUFFERED, as Swift tests spawn it: the ready line must be flushed.
    env = dict(os.environ if env is None else env)
    env.pop("PYTHONUNBUFFERED", None)
    return subprocess.Popen([sys.executable, SCRIPT, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _first_line(proc: subprocess.Popen, timeout: float = 15.0) -> str:
    """The first stdout line, or a test failure (not a hang) if none comes in time."""
    got: list[str] = []
    t = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not got:
        proc.kill()
        pytest.fail(f"no ready line within {timeout}s (is stdout flushed?)")
    return got[0]


@needs_ffmpeg
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_makes_its_own_video_prints_one_line_and_stops_on_signal(sig: int, tmp_path) -> None:
    proc = _spawn(["--port", "0", "--api-key", KEY])
    try:
        line = _first_line(proc)
        m = re.fullmatch(r"fake-provider listening on (http://127\.0\.0\.1:(\d+))\n", line)
        assert m, repr(line)
        url = m.group(1)
        body = {"prompt": "cli", "duration": 5, "quality": "std", "model": "m", "external_task_id": ""}
        auth = {"Authorization": f"Bearer {KEY}"}
        assert call(url, "POST", SUBMIT, body).status == 401
        call(url, "POST", "/_control", {"processing_polls": 1})
        tid = call(url, "POST", SUBMIT, body, auth).json()["data"]["task_id"]
        d = call(url, "GET", f"/v1/videos/{tid}", headers=auth).json()["data"]
        assert d["task_status"] == "succeed"
        video = call(url, "GET", f"/files/{tid}.mp4")
        assert video.status == 200
        (tmp_path / "v.mp4").write_bytes(video.body)
        assert 1.8 <= float(ffprobe(str(tmp_path / "v.mp4"))["format"]["duration"]) <= 2.2
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert out == "", "exactly one line on stdout"
        assert err == "", "no per-request log noise"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_with_mp4_serves_that_file(mp4_path: str) -> None:
    proc = _spawn(["--mp4", mp4_path])
    try:
        url = _first_line(proc).strip().removeprefix("fake-provider listening on ")
        call(url, "POST", "/_control", {"processing_polls": 1})
        tid = call(url, "POST", SUBMIT, {"prompt": "x"}).json()["data"]["task_id"]
        call(url, "GET", f"/v1/videos/{tid}")
        with open(mp4_path, "rb") as f:
            assert call(url, "GET", f"/files/{tid}.mp4").body == f.read()
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_without_ffmpeg_exits_2(tmp_path) -> None:
    env = dict(os.environ, PATH=str(tmp_path))  # an empty PATH: no ffmpeg
    proc = _spawn([], env=env)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 2
    assert out == ""
    assert "ffmpeg" in err


def test_cli_with_missing_mp4_exits_2(tmp_path) -> None:
    proc = _spawn(["--mp4", str(tmp_path / "absent.mp4")])
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 2 and out == "" and "absent.mp4" in err


def _refused(url: str) -> bool:
    try:
        call(url, "GET", "/_stats")
        return False
    except OSError:
        return True


def test_cli_exits_when_orphaned(mp4_path: str) -> None:
    # A parent (here a wrapper shell) that dies by SIGKILL must not leave the fake running.
    wrapper = subprocess.Popen(
        ["bash", "-c", f'"{sys.executable}" "{SCRIPT}" --mp4 "{mp4_path}" & wait'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = _first_line(wrapper).strip().removeprefix("fake-provider listening on ")
        assert not _refused(url)
        wrapper.kill()
        wrapper.wait(timeout=5)
        deadline = time.monotonic() + 5
        while not _refused(url):
            assert time.monotonic() < deadline, "the orphaned fake is still serving"
            time.sleep(0.1)
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait()
