"""Tests of the strict fake Runway itself: python3 -m pytest -q -p no:cacheprovider Tests/fake_runway"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from fake_runway import API_VERSION, NO_CREDITS_MESSAGE, FakeRunway  # noqa: E402

SCRIPT = os.path.join(HERE, "fake_runway.py")
KEY = "test-runway-key"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (scripts/install-deps)")


def png(w: int = 64, h: int = 36) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\x00\x80\xff" * w for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def data_uri(data: bytes | None = None, mime: str = "png") -> str:
    return f"data:image/{mime};base64," + base64.b64encode(data or png()).decode()


@pytest.fixture(scope="module")
def server():
    with FakeRunway(api_key=KEY) as fr:
        yield fr


@pytest.fixture
def fr(server):
    server.reset()
    server.control(pending_ms=20, running_ms=100)
    yield server


def call(fr, method, path, body=None, key=KEY, version=API_VERSION, ctype="application/json", raw=None):
    headers = {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if version is not None:
        headers["X-Runway-Version"] = version
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None and ctype:
        headers["Content-Type"] = ctype
    req = urllib.request.Request(fr.url + path, data=data, method=method, headers=headers)
    try:
        with OPENER.open(req, timeout=10) as r:
            text = r.read()
            return r.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, (json.loads(text) if text else None)


def i2v(**over):
    b = {"model": "gen4_turbo", "promptImage": data_uri(), "promptText": "a fox runs", "ratio": "1280:720",
         "duration": 5}
    b.update(over)
    return {k: v for k, v in b.items() if v is not None}


def t2v(**over):
    b = {"model": "gen4.5", "promptText": "a fox runs", "ratio": "1280:720", "duration": 5}
    b.update(over)
    return {k: v for k, v in b.items() if v is not None}


def wait_status(fr, tid, want, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        s, t = call(fr, "GET", f"/v1/tasks/{tid}")
        assert s == 200, t
        if t["status"] in want:
            return t
        assert time.monotonic() < deadline, f"task {tid} still {t['status']}"
        time.sleep(0.01)


# ------------------------------------------------------------------ auth and version


def test_auth_is_checked_first(fr):
    assert call(fr, "POST", "/v1/text_to_video", t2v(), key=None)[0] == 401
    s, b = call(fr, "POST", "/v1/text_to_video", t2v(), key="wrong")
    assert s == 401 and "error" in b
    assert fr.stats()["tasks"] == []


@pytest.mark.parametrize("version", [None, "2024-09-13", ""])
def test_the_version_header_is_required_exactly(fr, version):
    s, b = call(fr, "POST", "/v1/text_to_video", t2v(), version=version)
    assert s == 400 and "version" in b["error"].lower()
    assert call(fr, "GET", "/v1/tasks/x", version=version)[0] == 400
    assert fr.stats()["tasks"] == []


# ------------------------------------------------------------------ validation


def test_a_text_to_video_task_runs_to_succeeded_with_a_real_mp4(fr):
    s, b = call(fr, "POST", "/v1/text_to_video", t2v())
    assert s == 200 and set(b) == {"id"}
    t = wait_status(fr, b["id"], {"RUNNING"})
    assert 0 <= t["progress"] <= 1 and "output" not in t and "failure" not in t
    t = wait_status(fr, b["id"], {"SUCCEEDED"})
    assert "progress" not in t and "failureCode" not in t and t["createdAt"].endswith("Z")
    with OPENER.open(t["output"][0], timeout=10) as r:
        mp4 = r.read()
    assert mp4[4:8] == b"ftyp"
    st = fr.stats()
    assert st["tasks"][0]["statuses"] == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert st["output_downloads"] == 1 and st["requests"][0]["version"] == API_VERSION


def test_image_to_video_accepts_a_png_data_uri_and_an_https_url(fr):
    s, b = call(fr, "POST", "/v1/image_to_video", i2v())
    assert s == 200, b
    s, b = call(fr, "POST", "/v1/image_to_video", i2v(promptImage="https://example.com/a.png", model="gen4.5",
                                                       ratio="960:960", duration=10))
    assert s == 200, b
    images = [t["image"] for t in fr.stats()["tasks"]]
    assert images[0]["kind"] == "data" and images[0]["type"] == "png"
    assert images[1] == {"kind": "url", "url": "https://example.com/a.png"}


@pytest.mark.parametrize("body, word", [
    (t2v(model="gen4_turbo"), "image"),
    (t2v(model="gen3"), "model"),
    (t2v(promptText=None), "promptText"),
    (t2v(promptText="x" * 1001), "promptText"),
    (t2v(ratio="1104:832"), "ratio"),
    (t2v(duration=1), "duration"),
    (t2v(duration=11), "duration"),
    (t2v(duration="5"), "duration"),
    (t2v(duration=5.0), "duration"),
    (t2v(duration=True), "duration"),
    (t2v(seed=3), "unrecognized"),
])
def test_text_to_video_refuses_what_runway_refuses(fr, body, word):
    s, b = call(fr, "POST", "/v1/text_to_video", body)
    assert s == 400 and word.lower() in b["error"].lower(), b
    assert fr.stats()["tasks"] == []


@pytest.mark.parametrize("body, word", [
    (i2v(promptImage=None), "promptImage"),
    (i2v(promptImage="http://example.com/a.png"), "https"),
    (i2v(promptImage="data:image/png;base64,!!!"), "promptImage"),
    (i2v(promptImage=data_uri(b"\xff\xd8\xff\xe0" + b"0" * 50)), "png"),  # a JPEG called PNG
    (i2v(promptImage="data:image/png;base64," + "A" * (5 * 1024 * 1024)), "5 MB"),
    (i2v(promptText="x" * 1001), "promptText"),
    (i2v(ratio="16:9"), "ratio"),
    (i2v(duration=0), "duration"),
    (i2v(negativePrompt="x"), "unrecognized"),
])
def test_image_to_video_refuses_what_runway_refuses(fr, body, word):
    s, b = call(fr, "POST", "/v1/image_to_video", body)
    assert s == 400 and word.lower() in b["error"].lower(), b


def test_bad_json_wrong_method_and_unknown_routes(fr):
    assert call(fr, "POST", "/v1/text_to_video", raw=b"{nope")[0] == 400
    assert call(fr, "POST", "/v1/text_to_video", t2v(), ctype="text/plain")[0] == 400
    assert call(fr, "GET", "/v1/text_to_video")[0] == 405
    assert call(fr, "PUT", "/v1/tasks/abc", {})[0] == 405
    assert call(fr, "GET", "/v1/tasks/does-not-exist")[0] == 404
    assert call(fr, "GET", "/v1/nothing")[0] == 404


# ------------------------------------------------------------------ task states and knobs


def test_failed_tasks_carry_failure_and_code_only_when_failed(fr):
    fr.control(fail_next_tasks=1, fail_code="INTERNAL.BAD_OUTPUT.CODE01")
    _, a = call(fr, "POST", "/v1/text_to_video", t2v())
    _, b = call(fr, "POST", "/v1/text_to_video", t2v(promptText="FORBIDDEN_CONTENT here"))
    _, c = call(fr, "POST", "/v1/text_to_video", t2v())
    ta = wait_status(fr, a["id"], {"FAILED", "SUCCEEDED"})
    tb = wait_status(fr, b["id"], {"FAILED", "SUCCEEDED"})
    tc = wait_status(fr, c["id"], {"FAILED", "SUCCEEDED"})
    assert ta["status"] == "FAILED" and ta["failureCode"] == "INTERNAL.BAD_OUTPUT.CODE01" and ta["failure"]
    assert "output" not in ta and "progress" not in ta
    assert tb["status"] == "FAILED" and tb["failureCode"].startswith("SAFETY.")
    assert tc["status"] == "SUCCEEDED" and "failure" not in tc


def test_a_concurrency_limit_queues_tasks_as_throttled(fr):
    fr.control(concurrency_limit=1, pending_ms=10, running_ms=300)
    ids = [call(fr, "POST", "/v1/text_to_video", t2v())[1]["id"] for _ in range(2)]
    s, t = call(fr, "GET", f"/v1/tasks/{ids[1]}")
    assert t["status"] == "THROTTLED" and "progress" not in t
    for tid in ids:
        wait_status(fr, tid, {"SUCCEEDED"})
    st = fr.stats()
    assert st["max_active"] == 1
    assert st["tasks"][1]["statuses"][:2] == ["THROTTLED", "PENDING"]


def test_injected_429_5xx_and_no_credits_answers(fr):
    fr.control(error_next=[502, 503], rate_limit_next=1)
    assert call(fr, "POST", "/v1/text_to_video", t2v())[0] == 502
    assert call(fr, "POST", "/v1/text_to_video", t2v())[0] == 503
    assert call(fr, "POST", "/v1/text_to_video", t2v())[0] == 429
    fr.control(no_credits=True)
    s, b = call(fr, "POST", "/v1/text_to_video", t2v())
    assert s == 400 and b["error"] == NO_CREDITS_MESSAGE and "credits" in b["error"]
    fr.control(no_credits=False)
    assert call(fr, "POST", "/v1/text_to_video", t2v())[0] == 200
    assert [c["outcome"] for c in fr.stats()["creates"]] == [502, 503, 429, "no_credits", "created"]


def test_a_dropped_response_still_makes_the_task(fr):
    fr.control(drop_response_next=1)
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        call(fr, "POST", "/v1/text_to_video", t2v())
    st = fr.stats()
    assert len(st["tasks"]) == 1 and st["creates"][0]["dropped"] is True


def test_delete_cancels_a_live_task_and_deletes_an_ended_one(fr):
    fr.control(stuck=True)
    _, a = call(fr, "POST", "/v1/text_to_video", t2v())
    wait_status(fr, a["id"], {"RUNNING"})
    assert call(fr, "DELETE", f"/v1/tasks/{a['id']}") == (204, None)
    assert call(fr, "GET", f"/v1/tasks/{a['id']}")[1]["status"] == "CANCELLED"
    fr.control(stuck=False)
    _, b = call(fr, "POST", "/v1/text_to_video", t2v())
    t = wait_status(fr, b["id"], {"SUCCEEDED"})
    assert call(fr, "DELETE", f"/v1/tasks/{b['id']}")[0] == 204
    assert call(fr, "GET", f"/v1/tasks/{b['id']}")[0] == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        OPENER.open(t["output"][0], timeout=10)
    assert e.value.code == 404
    assert call(fr, "DELETE", f"/v1/tasks/{b['id']}")[0] == 404
    assert fr.stats()["deletes"] == [a["id"], b["id"], b["id"]]


def test_control_refuses_unknown_knobs_and_bad_types(fr):
    for bad in ({"nope": 1}, {"pending_ms": -1}, {"stuck": 1}, {"error_next": [404]}, {"fail_code": ""}):
        with pytest.raises(ValueError):
            fr.control(**bad)
    req = urllib.request.Request(fr.url + "/_control", data=b'{"pending_ms": "x"}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        OPENER.open(req, timeout=10)
    assert e.value.code == 400
    assert fr.knobs()["pending_ms"] == 20


def test_the_cli_prints_its_url_and_serves():
    p = subprocess.Popen([sys.executable, SCRIPT, "--port", "0", "--api-key", "k"], stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline().strip()
        assert line.startswith("fake-runway listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        req = urllib.request.Request(url + "/v1/tasks/x", headers={"Authorization": "Bearer k",
                                                                   "X-Runway-Version": API_VERSION})
        with pytest.raises(urllib.error.HTTPError) as e:
            OPENER.open(req, timeout=10)
        assert e.value.code == 404
    finally:
        p.terminate()
        assert p.wait(timeout=10) == 0
