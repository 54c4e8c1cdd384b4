"""Tests of the strict fake Kling itself: python3 -m pytest -q -p no:cacheprovider Tests/fake_kling"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from fake_kling import HTTP_STATUS, FakeKling, make_jwt, make_test_mp4  # noqa: E402

SCRIPT = os.path.join(HERE, "fake_kling.py")
T2V = "/v1/videos/text2video"
I2V = "/v1/videos/image2video"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="ffmpeg/ffprobe not installed (scripts/install-deps)")


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
    with FakeKling(mp4_path=mp4_path) as fk:
        yield fk


@pytest.fixture()
def fk(_shared: FakeKling) -> FakeKling:
    _shared.reset()
    _shared.control(queued_ms=30, processing_ms=120)
    return _shared


class Resp:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


def call(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 10) -> Resp:
    hdrs = dict(headers or {})
    data = None
    if isinstance(body, (dict, list, int, str)) and not isinstance(body, bool):
        data = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif isinstance(body, bytes):
        data = body
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with OPENER.open(req, timeout=timeout) as r:
            return Resp(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Resp(e.code, e.headers, e.read())


def auth(fk: FakeKling, **kw: Any) -> dict[str, str]:
    return {"Authorization": "Bearer " + fk.token(**kw)}


def v1(fk: FakeKling, method: str, path: str, body: Any = None, token: str | None = None) -> Resp:
    hdrs = {"Authorization": "Bearer " + (token or fk.token())}
    return call(fk.url + path, method, body, hdrs)


def t2v_body(**over: Any) -> dict[str, Any]:
    b = {"model_name": "kling-v2-5-turbo", "prompt": "a cat surfing a wave", "duration": "5",
         "aspect_ratio": "16:9", "mode": "std"}
    b.update(over)
    return b


def assert_envelope(r: Resp, code: int, http: int | None = None) -> dict[str, Any]:
    j = r.json()
    assert set(j) >= {"code", "message", "request_id"}, j
    assert j["code"] == code, j
    assert r.status == (http if http is not None else (200 if code == 0 else HTTP_STATUS[code])), (r.status, j)
    assert isinstance(j["message"], str) and j["message"]
    assert re.fullmatch(r"[0-9a-f-]{36}", j["request_id"])
    if code == 0:
        assert j["message"] == "SUCCEED"
    return j


def create(fk: FakeKling, path: str = T2V, **over: Any) -> dict[str, Any]:
    r = v1(fk, "POST", path, t2v_body(**over) if path == T2V else over)
    j = assert_envelope(r, 0)
    d = j["data"]
    assert d["task_status"] == "submitted"
    assert re.fullmatch(r"[0-9]{18}", d["task_id"])
    assert "final_unit_deduction" not in d
    return d


def refused(fk: FakeKling, code: int, path: str = T2V, body: Any = None, **over: Any) -> dict[str, Any]:
    r = v1(fk, "POST", path, body if body is not None else t2v_body(**over))
    return assert_envelope(r, code)


def query(fk: FakeKling, ident: str, endpoint: str = "text2video") -> dict[str, Any]:
    r = v1(fk, "GET", f"/v1/videos/{endpoint}/{ident}")
    return assert_envelope(r, 0)["data"]


def wait_status(fk: FakeKling, ident: str, want: str, endpoint: str = "text2video",
                timeout: float = 5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        d = query(fk, ident, endpoint)
        if d["task_status"] == want:
            return d
        assert time.monotonic() < deadline, f"task {ident} stuck at {d['task_status']}, wanted {want}"
        time.sleep(0.02)


def png_bytes(w: int, h: int) -> bytes:
    """A valid RGB PNG of w x h, written with zlib."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" + b"\x20\x80\xc0" * w
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(row * h, 9)) + chunk(b"IEND", b""))


class CallbackSink:
    """A local HTTP server that records every POST body."""

    def __init__(self, status: int = 200) -> None:
        sink = self
        self.bodies: list[Any] = []
        self.status = status

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                sink.bodies.append((self.path, self.headers.get("Content-Type"), json.loads(raw)))
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def sink():
    s = CallbackSink()
    yield s
    s.close()


# ---------------------------------------------------------------------------------------
# Auth


def test_valid_jwt_is_accepted_and_tokens_are_counted(fk: FakeKling) -> None:
    tok = fk.token()
    header = json.loads(base64.urlsafe_b64decode(tok.split(".")[0] + "=="))
    assert header == {"alg": "HS256", "typ": "JWT"}
    for _ in range(3):
        assert_envelope(v1(fk, "POST", T2V, t2v_body(), token=tok), 0)
        fk.finish_all()
    assert fk.stats()["tokens_seen"] == 1
    assert_envelope(v1(fk, "GET", T2V + "/nope", token=fk.token(exp_in=1799)), 1203)
    s = fk.stats()
    assert s["tokens_seen"] == 2 and s["auth_failures"] == {} and s["creates_ok"] == 3


def _padded_token(fk: FakeKling) -> str:
    """A correctly signed token whose parts carry base64 '=' padding (RFC 7515 forbids it)."""
    now = int(time.time())
    parts = [base64.urlsafe_b64encode(json.dumps(o, separators=(",", ":")).encode()).decode()
             for o in ({"alg": "HS256", "typ": "JWT"},
                       {"iss": fk.access_key, "exp": now + 1800, "nbf": now - 5, "x": "ab"})]
    signing_input = ".".join(parts)
    sig = hmac.new(fk.secret_key.encode(), signing_input.encode(), hashlib.sha256).digest()
    tok = signing_input + "." + base64.urlsafe_b64encode(sig).decode()
    assert "=" in tok
    return tok


def _tamper(tok: str) -> str:
    h, p, s = tok.split(".")
    return f"{h}.{p}.{'A' if s[0] != 'A' else 'B'}{s[1:]}"


@pytest.mark.parametrize("name,header,code", [
    ("missing", None, 1001),
    ("empty bearer", "Bearer ", 1001),
    ("not bearer", "Basic dGVzdDp0ZXN0", 1002),
    ("garbled", "Bearer not-a-jwt", 1002),
    ("two parts", "Bearer abc.def", 1002),
    ("bad base64", "Bearer ab$c.de*f.gh!i", 1002),
    ("tampered signature", "TAMPER", 1002),
    ("wrong secret", "WRONG_SECRET", 1002),
    ("wrong iss", "WRONG_ISS", 1002),
    ("alg none", "ALG_NONE", 1002),
    ("padded", "PADDED", 1002),
    ("expired", "EXPIRED", 1004),
    ("not yet valid", "NOT_YET", 1003),
])
def test_bad_tokens_are_refused_with_401(fk: FakeKling, name: str, header: str | None, code: int) -> None:
    special = {
        "TAMPER": lambda: "Bearer " + _tamper(fk.token()),
        "WRONG_SECRET": lambda: "Bearer " + fk.token(secret_key="not-the-secret"),
        "WRONG_ISS": lambda: "Bearer " + fk.token(access_key="someone-else"),
        "ALG_NONE": lambda: "Bearer " + make_jwt(fk.access_key, fk.secret_key,
                                                 header={"alg": "none", "typ": "JWT"}),
        "PADDED": lambda: "Bearer " + _padded_token(fk),
        "EXPIRED": lambda: "Bearer " + fk.token(exp_in=-1),
        "NOT_YET": lambda: "Bearer " + fk.token(nbf_ago=-60),
    }
    if header in special:
        header = special[header]()
    hdrs = {} if header is None else {"Authorization": header}
    for method, path, body in (("POST", T2V, t2v_body()), ("GET", T2V + "/123", None)):
        r = call(fk.url + path, method, body, hdrs)
        j = assert_envelope(r, code, 401)
        assert j.get("data") is None
    s = fk.stats()
    assert s["auth_failures"] == {str(code): 2}
    assert s["creates_ok"] == 0 and s["tokens_seen"] == 0


def test_small_clock_skew_on_nbf_is_allowed(fk: FakeKling) -> None:
    assert_envelope(v1(fk, "GET", T2V + "/1", token=fk.token(nbf_ago=-3)), 1203)
    assert_envelope(v1(fk, "GET", T2V + "/1", token=fk.token(nbf_ago=-9)), 1003)


# ---------------------------------------------------------------------------------------
# Create validation


def test_integer_duration_is_refused(fk: FakeKling) -> None:
    j = refused(fk, 1201, duration=5)
    assert "duration" in j["message"]
    assert "duration" in refused(fk, 1201, duration="7")["message"]
    assert fk.stats()["creates_ok"] == 0 and fk.stats()["refused"] == {"1201": 2}
    create(fk, duration="10")


def test_prompt_limits(fk: FakeKling) -> None:
    assert "prompt" in refused(fk, 1201, prompt="x" * 2501)["message"]
    assert "negative_prompt" in refused(fk, 1201, negative_prompt="n" * 2501)["message"]
    refused(fk, 1201, prompt="")
    body = t2v_body()
    del body["prompt"]
    refused(fk, 1201, body=body)
    create(fk, prompt="é" * 2500, negative_prompt="blurry")
    t = fk.stats()["tasks"][0]
    assert t["prompt"] == "é" * 2500 and t["negative_prompt"] == "blurry"


@pytest.mark.parametrize("over", [
    {"model_name": "kling-v9"}, {"aspect_ratio": "4:3"}, {"mode": "ultra"}, {"cfg_scale": 1.5},
    {"cfg_scale": "0.5"}, {"callback_url": "ftp://x/y"}, {"external_task_id": 12},
])
def test_other_bad_fields_are_1201(fk: FakeKling, over: dict[str, Any]) -> None:
    j = refused(fk, 1201, **over)
    assert list(over)[0].split("_")[0] in j["message"]


def test_bodies_that_are_not_json_objects_are_1200(fk: FakeKling) -> None:
    tok = fk.token()
    for raw in (b"[1,2]", b"not json", b"", b'"str"'):
        r = call(fk.url + T2V, "POST", raw, {"Authorization": "Bearer " + tok,
                                              "Content-Type": "application/json"})
        assert_envelope(r, 1200)
    r = call(fk.url + T2V, "POST", json.dumps(t2v_body()).encode(),
             {"Authorization": "Bearer " + tok, "Content-Type": "text/plain"})
    assert_envelope(r, 1200)
    assert fk.stats()["creates_ok"] == 0


def test_missing_model_name_defaults_to_kling_v1(fk: FakeKling) -> None:
    body = t2v_body()
    del body["model_name"], body["aspect_ratio"], body["mode"], body["duration"]
    assert_envelope(v1(fk, "POST", T2V, body), 0)
    create(fk, model_name="kling-v1-6", mode="pro", duration="10", aspect_ratio="9:16", cfg_scale=0.5)
    a, b = fk.stats()["tasks"]
    assert (a["model_name"], a["model_name_sent"], a["mode"], a["duration"], a["aspect_ratio"]) == \
        ("kling-v1", False, "std", "5", "16:9")
    assert (b["model_name"], b["model_name_sent"], b["mode"], b["duration"], b["aspect_ratio"]) == \
        ("kling-v1-6", True, "pro", "10", "9:16")


def test_forbidden_model_is_403_1103(fk: FakeKling) -> None:
    fk.control(forbidden_models=["kling-v2-master"])
    j = refused(fk, 1103, model_name="kling-v2-master")
    assert "kling-v2-master" in j["message"]
    create(fk, model_name="kling-v2-1")


def test_content_policy_marker_is_1301(fk: FakeKling) -> None:
    j = refused(fk, 1301, prompt="a scene with FORBIDDEN_CONTENT in it")
    assert "risk control" in j["message"]
    fk.control(content_policy_marker="nasty")
    create(fk, prompt="FORBIDDEN_CONTENT is fine now")
    refused(fk, 1301, prompt="something nasty")
    assert fk.stats()["refused"] == {"1301": 2}


# ---------------------------------------------------------------------------------------
# Create and query


def test_create_and_query_by_task_id_and_external_id(fk: FakeKling) -> None:
    d = create(fk, external_task_id="reel-job1-1")
    assert d["task_info"] == {"external_task_id": "reel-job1-1"}
    assert isinstance(d["created_at"], int) and d["created_at"] > 1_600_000_000_000
    assert isinstance(d["updated_at"], int)
    tid = d["task_id"]
    q = query(fk, tid)
    assert q["task_id"] == tid and q["task_info"] == {"external_task_id": "reel-job1-1"}
    assert q["task_status"] in ("submitted", "processing")
    assert query(fk, "reel-job1-1")["task_id"] == tid
    # not on the other endpoint
    for ident in (tid, "reel-job1-1", "999999999999999999"):
        j = assert_envelope(v1(fk, "GET", f"{I2V}/{ident}"), 1203, 404)
        assert j.get("data") is None
    done = wait_status(fk, tid, "succeed")
    assert done["final_unit_deduction"] == "1" and done["task_status_msg"] == ""
    [video] = done["task_result"]["videos"]
    assert video["url"] == f"{fk.url}/results/{tid}.mp4"
    assert video["duration"] == "5.1" and video["id"]
    assert done["updated_at"] >= done["created_at"]
    s = fk.stats()
    assert s["creates_by_external_id"] == {"reel-job1-1": 1}
    assert s["tasks"][0]["status"] == "succeed" and s["tasks"][0]["endpoint"] == "text2video"
    assert s["queries"] >= 5


def test_status_goes_submitted_processing_succeed_by_time(fk: FakeKling) -> None:
    fk.control(queued_ms=300, processing_ms=300)
    tid = create(fk, mode="pro", duration="10")["task_id"]
    q = query(fk, tid)
    assert q["task_status"] == "submitted" and "final_unit_deduction" not in q
    p = wait_status(fk, tid, "processing")
    assert p["final_unit_deduction"] == "7" and "task_result" not in p
    assert wait_status(fk, tid, "succeed")["task_result"]["videos"][0]["duration"] == "10.1"


def test_list_tasks(fk: FakeKling) -> None:
    a = create(fk)["task_id"]
    b = create(fk)["task_id"]
    j = assert_envelope(v1(fk, "GET", T2V + "?pageNum=1&pageSize=1"), 0)
    assert [d["task_id"] for d in j["data"]] == [b]
    j = assert_envelope(v1(fk, "GET", T2V), 0)
    assert [d["task_id"] for d in j["data"]] == [b, a]
    assert assert_envelope(v1(fk, "GET", I2V), 0)["data"] == []
    assert_envelope(v1(fk, "GET", T2V + "?pageSize=0"), 1201)


def test_wrong_method_and_unknown_path(fk: FakeKling) -> None:
    assert_envelope(v1(fk, "PUT", T2V, t2v_body()), 1202)
    assert_envelope(v1(fk, "GET", "/v1/videos/nope"), 1203)


def test_reused_external_task_id_is_1201_and_makes_no_task(fk: FakeKling) -> None:
    create(fk, external_task_id="reel-j-1")
    j = refused(fk, 1201, external_task_id="reel-j-1")
    assert "external_task_id already exists" in j["message"]
    fk.finish_all()
    refused(fk, 1201, path=I2V, body={"image": "https://example.com/a.png", "external_task_id": "reel-j-1"})
    s = fk.stats()
    assert s["creates_ok"] == 1 and len(s["tasks"]) == 1
    assert s["creates_by_external_id"] == {"reel-j-1": 3}


def test_fail_next_tasks(fk: FakeKling) -> None:
    fk.control(fail_next_tasks=1)
    bad = create(fk)["task_id"]
    good = create(fk)["task_id"]
    d = wait_status(fk, bad, "failed")
    assert d["task_status_msg"] == "video generation failed: internal error"
    assert d["final_unit_deduction"] == "0" and "task_result" not in d
    assert wait_status(fk, good, "succeed")["final_unit_deduction"] == "1"
    assert fk.knobs()["fail_next_tasks"] == 0


def test_stuck_tasks_stay_processing_until_released(fk: FakeKling) -> None:
    fk.control(stuck=True, processing_ms=10)
    tid = create(fk)["task_id"]
    wait_status(fk, tid, "processing")
    time.sleep(0.2)
    assert query(fk, tid)["task_status"] == "processing"
    fk.control(stuck=False)
    wait_status(fk, tid, "succeed", timeout=1)


# ---------------------------------------------------------------------------------------
# Account, concurrency, faults


def test_concurrency_limit_is_per_account(fk: FakeKling) -> None:
    fk.control(processing_ms=400)
    first = create(fk)["task_id"]
    other = fk.create_as_other_client(external_task_id="other-1")
    assert other["code"] == 0 and other["http_status"] == 200
    j = refused(fk, 1303)
    assert j["code"] == 1303
    assert fk.stats()["live"] == 2
    wait_status(fk, first, "succeed")
    create(fk)
    s = fk.stats()
    assert s["max_live"] == 2 and s["refused"] == {"1303": 1} and s["creates_ok"] == 3


def test_concurrency_limit_knob(fk: FakeKling) -> None:
    fk.control(concurrency_limit=1, processing_ms=5000)
    create(fk)
    refused(fk, 1303)
    fk.finish_all()
    create(fk)
    assert fk.stats()["max_live"] == 1


def test_rate_limit_next(fk: FakeKling) -> None:
    fk.control(rate_limit_next=2)
    refused(fk, 1302)
    refused(fk, 1302)
    create(fk)
    assert fk.stats()["refused"] == {"1302": 2}


@pytest.mark.parametrize("code", sorted(HTTP_STATUS))
def test_error_next_codes_map_to_published_http_status(fk: FakeKling, code: int) -> None:
    fk.control(error_next=[code, code])
    for _ in range(2):
        r = v1(fk, "POST", T2V, t2v_body())
        j = assert_envelope(r, code)
        assert r.status == HTTP_STATUS[code]
        assert j.get("data") is None
    create(fk)
    assert fk.knobs()["error_next"] == []


def test_published_http_statuses() -> None:
    # The table itself, as DESIGN.md §5 publishes it (so a typo in the fake can fail).
    want = {401: [1000, 1001, 1002, 1003, 1004], 429: [1100, 1101, 1102, 1302, 1303, 1304],
            403: [1103], 400: [1200, 1201, 1300, 1301], 404: [1202, 1203],
            500: [5000], 503: [5001], 504: [5002]}
    assert HTTP_STATUS == {c: s for s, cs in want.items() for c in cs}


@pytest.mark.parametrize("account,code", [("exception", 1100), ("arrears", 1101),
                                          ("depleted", 1102), ("ip_blocked", 1304)])
def test_account_trouble_refuses_creates_but_queries_work(fk: FakeKling, account: str, code: int) -> None:
    tid = create(fk, external_task_id="before")["task_id"]
    fk.control(account=account)
    r = v1(fk, "POST", T2V, t2v_body())
    assert_envelope(r, code, 429)
    assert query(fk, tid)["task_id"] == tid
    assert query(fk, "before")["task_id"] == tid
    fk.control(account="ok")
    create(fk)


def test_drop_response_creates_the_task_without_answering(fk: FakeKling) -> None:
    fk.control(drop_response_next=1)
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        req = urllib.request.Request(fk.url + T2V, method="POST",
                                     data=json.dumps(t2v_body(external_task_id="lost-1")).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Authorization": "Bearer " + fk.token()})
        OPENER.open(req, timeout=5).read()
    s = fk.stats()
    assert s["dropped_responses"] == 1 and s["creates_ok"] == 1 and s["live"] == 1
    d = query(fk, "lost-1")
    assert d["task_info"] == {"external_task_id": "lost-1"}
    assert d["task_id"] == s["tasks"][0]["task_id"]
    create(fk)  # answered normally again


def test_latency(fk: FakeKling) -> None:
    fk.control(latency_ms=300)
    t0 = time.monotonic()
    assert_envelope(v1(fk, "GET", T2V + "/1"), 1203)
    assert time.monotonic() - t0 >= 0.29
    t0 = time.monotonic()
    call(fk.url + "/_stats")
    assert time.monotonic() - t0 < 0.25


# ---------------------------------------------------------------------------------------
# image2video


def test_image2video_with_a_too_small_png_is_1201(fk: FakeKling) -> None:
    img = base64.b64encode(png_bytes(200, 200)).decode()
    j = refused(fk, 1201, path=I2V, body={"model_name": "kling-v2-5-turbo", "image": img})
    assert "300" in j["message"]


def test_image2video_with_a_data_prefix_is_1201(fk: FakeKling) -> None:
    img = "data:image/png;base64," + base64.b64encode(png_bytes(640, 360)).decode()
    j = refused(fk, 1201, path=I2V, body={"model_name": "kling-v2-5-turbo", "image": img})
    assert "data:" in j["message"]


@pytest.mark.parametrize("image,word", [
    (None, "required"),
    ("!!!not base64!!!", "base64"),
    (base64.b64encode(b"GIF89a" + b"\0" * 100).decode(), "JPG or PNG"),
    (base64.b64encode(png_bytes(1000, 300)).decode(), "aspect"),
    (base64.b64encode(png_bytes(300, 800)).decode(), "aspect"),
])
def test_image2video_other_image_rules(fk: FakeKling, image: str | None, word: str) -> None:
    body: dict[str, Any] = {"model_name": "kling-v2-5-turbo"}
    if image is not None:
        body["image"] = image
    assert word in refused(fk, 1201, path=I2V, body=body)["message"]


def test_image2video_over_10_mb_is_1201(fk: FakeKling) -> None:
    big = png_bytes(640, 360) + b"\0" * (10 * 1024 * 1024)
    j = refused(fk, 1201, path=I2V, body={"image": base64.b64encode(big).decode()})
    assert "10 MB" in j["message"]


def test_image2video_with_a_valid_png_is_created_and_recorded(fk: FakeKling) -> None:
    raw = png_bytes(640, 360)
    d = create(fk, I2V, model_name="kling-v2-5-turbo", image=base64.b64encode(raw).decode(),
               aspect_ratio="16:9", duration="5", mode="pro", external_task_id="i2v-1")
    [t] = fk.stats()["tasks"]
    assert t["endpoint"] == "image2video" and t["task_id"] == d["task_id"]
    assert (t["image_kind"], t["image_format"], t["image_bytes"], t["image_width"], t["image_height"]) == \
        ("base64", "png", len(raw), 640, 360)
    assert t["aspect_ratio_sent"] is True and t["aspect_ratio"] is None
    assert t["prompt"] == ""
    assert query(fk, "i2v-1", "image2video")["task_id"] == d["task_id"]
    assert_envelope(v1(fk, "GET", f"{T2V}/i2v-1"), 1203)
    assert wait_status(fk, d["task_id"], "succeed", "image2video")["final_unit_deduction"] == "3.5"


def test_image2video_with_a_url_and_without_aspect_ratio(fk: FakeKling) -> None:
    create(fk, I2V, image="https://cdn.example.com/frame.png", prompt="walk on")
    [t] = fk.stats()["tasks"]
    assert (t["image_kind"], t["image_url"], t["image_bytes"]) == \
        ("url", "https://cdn.example.com/frame.png", None)
    assert t["aspect_ratio_sent"] is False and t["model_name_sent"] is False


@needs_ffmpeg
def test_image2video_with_a_real_jpeg(fk: FakeKling, tmp_path) -> None:
    jpg = tmp_path / "f.jpg"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=720x480",
                    "-frames:v", "1", str(jpg)], check=True, timeout=30)
    create(fk, I2V, image=base64.b64encode(jpg.read_bytes()).decode())
    [t] = fk.stats()["tasks"]
    assert (t["image_format"], t["image_width"], t["image_height"]) == ("jpeg", 720, 480)


# ---------------------------------------------------------------------------------------
# Callbacks


def test_callbacks_deliver_the_bare_task_object_in_order(fk: FakeKling, sink: CallbackSink) -> None:
    cb = sink.url + "/v1/providers/kling/callback/tok123"
    tid = create(fk, callback_url=cb, external_task_id="cb-1")["task_id"]
    deadline = time.monotonic() + 5
    while len(fk.stats()["callbacks"]) < 3:
        assert time.monotonic() < deadline, fk.stats()["callbacks"]
        time.sleep(0.02)
    time.sleep(0.1)
    assert [b[0] for b in sink.bodies] == ["/v1/providers/kling/callback/tok123"] * 3
    assert all(b[1] == "application/json" for b in sink.bodies)
    objs = [b[2] for b in sink.bodies]
    assert [o["task_status"] for o in objs] == ["submitted", "processing", "succeed"]
    for o in objs:
        assert "code" not in o and "data" not in o, "bare task object, no envelope"
        assert o["task_id"] == tid and o["task_info"] == {"external_task_id": "cb-1"}
    assert "final_unit_deduction" not in objs[0]
    assert objs[1]["final_unit_deduction"] == objs[2]["final_unit_deduction"] == "1"
    assert objs[2]["task_result"]["videos"][0]["url"] == f"{fk.url}/results/{tid}.mp4"
    assert objs[2] == query(fk, tid)
    log = fk.stats()["callbacks"]
    assert [(c["url"], c["task_id"], c["status"], c["http_status"], c["error"]) for c in log] == \
        [(cb, tid, s, 200, None) for s in ("submitted", "processing", "succeed")]
    assert fk.stats()["tasks"][0]["callback_url"] == cb


def test_callbacks_failed_task_and_duplicates(fk: FakeKling, sink: CallbackSink) -> None:
    fk.control(duplicate_callbacks=True, fail_next_tasks=1)
    create(fk, callback_url=sink.url + "/cb")
    deadline = time.monotonic() + 5
    while len(sink.bodies) < 6:
        assert time.monotonic() < deadline, sink.bodies
        time.sleep(0.02)
    assert [b[2]["task_status"] for b in sink.bodies] == \
        ["submitted", "submitted", "processing", "processing", "failed", "failed"]
    assert sink.bodies[-1][2]["task_status_msg"] == "video generation failed: internal error"


def test_callbacks_off_and_unreachable(fk: FakeKling, sink: CallbackSink) -> None:
    fk.control(callbacks=False)
    tid = create(fk, callback_url=sink.url + "/cb")["task_id"]
    wait_status(fk, tid, "succeed")
    time.sleep(0.1)
    assert sink.bodies == [] and fk.stats()["callbacks"] == []
    fk.control(callbacks=True)
    dead = CallbackSink()
    dead.close()  # nothing listens there now
    tid = create(fk, callback_url=dead.url + "/cb")["task_id"]
    wait_status(fk, tid, "succeed")
    deadline = time.monotonic() + 5
    while len(fk.stats()["callbacks"]) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    log = fk.stats()["callbacks"]
    assert all(c["http_status"] is None and c["error"] for c in log)


# ---------------------------------------------------------------------------------------
# Results


@needs_ffmpeg
def test_result_download_then_404_after_delete_results(fk: FakeKling, tmp_path, mp4_path: str) -> None:
    tid = create(fk)["task_id"]
    assert call(f"{fk.url}/results/{tid}.mp4").status == 404, "no result before succeed"
    url = wait_status(fk, tid, "succeed")["task_result"]["videos"][0]["url"]
    r = call(url)  # no Authorization: results are plain CDN URLs
    assert r.status == 200 and r.headers["Content-Type"] == "video/mp4"
    with open(mp4_path, "rb") as f:
        assert r.body == f.read()
    out = tmp_path / "v.mp4"
    out.write_bytes(r.body)
    info = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(out)],
        capture_output=True, text=True, check=True, timeout=20).stdout)
    kinds = {s["codec_type"]: s for s in info["streams"]}
    assert kinds["video"]["width"] == 640 and kinds["video"]["height"] == 360
    assert "audio" in kinds
    assert 1.8 <= float(info["format"]["duration"]) <= 2.3
    rng = call(url, headers={"Range": "bytes=0-99"})
    assert rng.status == 206 and rng.body == r.body[:100]

    knobs = fk.control(delete_results=True)
    assert knobs["delete_results"] is False, "an action, not a state"
    assert call(url).status == 404
    assert query(fk, tid)["task_status"] == "succeed"
    assert call(f"{fk.url}/results/123.mp4").status == 404
    s = fk.stats()
    assert s["result_downloads"] == 2 and s["result_404s"] == 3
    # a task made after the delete has its result
    tid2 = create(fk)["task_id"]
    assert call(wait_status(fk, tid2, "succeed")["task_result"]["videos"][0]["url"]).status == 200


# ---------------------------------------------------------------------------------------
# Control


@pytest.mark.parametrize("bad", [
    {"nope": 1}, {"concurrency_limit": "2"}, {"concurrency_limit": -1}, {"queued_ms": 1.5},
    {"stuck": 1}, {"error_next": [1234]}, {"error_next": 5000}, {"account": "broke"},
    {"forbidden_models": "kling-v1"}, {"content_policy_marker": 3}, {"callbacks": "yes"},
    {"rate_limit_next": True},
])
def test_control_validation(fk: FakeKling, bad: dict[str, Any]) -> None:
    before = call(fk.url + "/_control").json()
    r = call(fk.url + "/_control", "POST", {"latency_ms": 5, **bad})
    assert r.status == 400 and "error" in r.json()
    assert call(fk.url + "/_control").json() == before, "a bad request changes nothing"
    with pytest.raises(ValueError):
        fk.control(**bad)


def test_control_reset_and_stats_over_http(fk: FakeKling) -> None:
    r = call(fk.url + "/_control", "POST", {"concurrency_limit": 5, "error_next": [5000]})
    assert r.status == 200
    knobs = r.json()
    assert knobs["concurrency_limit"] == 5 and knobs["error_next"] == [5000]
    assert set(knobs) == {"concurrency_limit", "queued_ms", "processing_ms", "latency_ms",
                          "fail_next_tasks", "rate_limit_next", "error_next", "account",
                          "drop_response_next", "content_policy_marker", "stuck",
                          "forbidden_models", "callbacks", "duplicate_callbacks", "delete_results"}
    assert call(fk.url + "/_control").json() == knobs
    refused(fk, 5000)
    create(fk, external_task_id="x")
    s = call(fk.url + "/_stats").json()
    assert s["creates_ok"] == 1 and s["refused"] == {"5000": 1}
    assert call(fk.url + "/_reset", "POST").status == 200
    s = call(fk.url + "/_stats").json()
    assert s["creates_ok"] == 0 and s["tasks"] == [] and s["refused"] == {}
    assert s["tokens_seen"] == 0 and s["creates_by_external_id"] == {}
    assert call(fk.url + "/_control").json()["concurrency_limit"] == 2
    create(fk, external_task_id="x")  # the external id is free again after a reset


# ---------------------------------------------------------------------------------------
# The CLI


def _spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    env = dict(os.environ if env is None else env)
    env.pop("PYTHONUNBUFFERED", None)
    return subprocess.Popen([sys.executable, SCRIPT, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _first_line(proc: subprocess.Popen, timeout: float = 20.0) -> str:
    got: list[str] = []
    t = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not got:
        proc.kill()
        pytest.fail(f"no ready line within {timeout}s (is stdout flushed?)")
    return got[0]


@needs_ffmpeg
def test_cli_makes_its_own_video_and_checks_its_keys(tmp_path) -> None:
    proc = _spawn(["--access-key", "ak-1", "--secret-key", "sk-1"])
    try:
        line = _first_line(proc)
        m = re.fullmatch(r"fake-kling listening on (http://127\.0\.0\.1:(\d+))\n", line)
        assert m, repr(line)
        url = m.group(1)
        body = t2v_body()
        wrong = {"Authorization": "Bearer " + make_jwt("test-access-key", "test-secret-key")}
        assert_envelope(call(url + T2V, "POST", body, wrong), 1002)
        right = {"Authorization": "Bearer " + make_jwt("ak-1", "sk-1")}
        call(url + "/_control", "POST", {"queued_ms": 0, "processing_ms": 0})
        tid = assert_envelope(call(url + T2V, "POST", body, right), 0)["data"]["task_id"]
        time.sleep(0.1)
        d = assert_envelope(call(f"{url}{T2V}/{tid}", headers=right), 0)["data"]
        assert d["task_status"] == "succeed"
        video = call(d["task_result"]["videos"][0]["url"])
        assert video.status == 200 and len(video.body) > 1000
        proc.terminate()
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and out == "" and err == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_without_ffmpeg_exits_2(tmp_path) -> None:
    proc = _spawn([], env=dict(os.environ, PATH=str(tmp_path)))
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 2 and out == "" and "ffmpeg" in err


def test_cli_exits_when_orphaned(mp4_path: str) -> None:
    wrapper = subprocess.Popen(
        ["bash", "-c", f'"{sys.executable}" "{SCRIPT}" --mp4 "{mp4_path}" & wait'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = _first_line(wrapper).strip().removeprefix("fake-kling listening on ")
        assert call(url + "/_stats").status == 200
        wrapper.kill()
        wrapper.wait(timeout=5)
        deadline = time.monotonic() + 5
        while True:
            try:
                call(url + "/_stats", timeout=1)
            except OSError:
                break
            assert time.monotonic() < deadline, "the orphaned fake is still serving"
            time.sleep(0.1)
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait()
