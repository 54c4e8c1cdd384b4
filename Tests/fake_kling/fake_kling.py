#!/usr/bin/env python3
"""A strict fake of Kling's published video API (text2video / image2video), for Reel's tests.

Standalone, standard library only (Python 3.11+). It follows the protocol in DESIGN.md §5
"Providers / Kling" exactly and refuses what Kling refuses, so a client that passes against
it speaks real Kling. Tests steer it through POST /_control and read what it saw through
GET /_stats.

Kling API (every /v1 call needs "Authorization: Bearer <JWT>"):

  Every /v1 answer: {"code": int, "message": str, "request_id": uuid, "data": ... | null}
  code 0 = success ("SUCCEED"). Error codes and HTTP statuses as published:
    401: 1000-1004   429: 1100 1101 1102 1302 1303 1304   403: 1103
    400: 1200 1201 1300 1301   404: 1202 1203   500: 5000  503: 5001  504: 5002
  JWT: HS256, header {"alg":"HS256","typ":"JWT"}, payload {"iss": access key, "exp", "nbf"},
    signed with the secret key. Missing -> 1001; malformed, bad signature, wrong iss -> 1002;
    nbf more than 5 s in the future -> 1003; exp <= now -> 1004.

  POST /v1/videos/text2video   {model_name, prompt, negative_prompt, duration "5"|"10",
                                aspect_ratio, mode, cfg_scale, callback_url, external_task_id}
  POST /v1/videos/image2video  the same without aspect_ratio (ignored if sent), plus image
                                (http(s) URL, or plain base64 of a JPEG/PNG)
       -> {task_id, task_status: "submitted", task_info: {external_task_id}, created_at, updated_at}
  GET  /v1/videos/{text2video|image2video}/{task_id or external_task_id}
       -> {task_id, task_status, task_status_msg, task_info, created_at, updated_at,
           [final_unit_deduction], [task_result: {videos: [{id, url, duration}]}]}
  GET  /v1/videos/{text2video|image2video}?pageNum=1&pageSize=30  -> list of task objects
  GET|HEAD /results/{task_id}.mp4   the MP4 of a succeeded task (no auth); 404 once deleted.

  Create checks, in order: Content-Type JSON; injected faults (error_next, rate_limit_next,
  account); body a JSON object (1200); fields (1201); forbidden model (1103); content policy
  marker (1301); external_task_id reused (1201); concurrency (1303); then the task is made
  (and with drop_response_next the connection is closed with no answer).

  Tasks advance by time on a background thread: submitted for queued_ms, processing for
  processing_ms, then succeed (or failed when chosen by fail_next_tasks). With callback_url,
  every status change is POSTed (the bare task object) to it, in order, from a background
  thread.

Test control (no auth, never faulted): POST /_control (JSON subset of knobs; unknown knob or
bad type -> 400, nothing changed; answers the whole knob set; GET answers it too),
GET /_stats, POST /_reset.

CLI:  python3 fake_kling.py [--host 127.0.0.1] [--port 0] [--access-key K] [--secret-key S]
                            [--mp4 PATH] [--no-exit-with-parent]
      prints exactly one line "fake-kling listening on http://HOST:PORT" once ready, serves
      until SIGTERM/SIGINT or its parent dies, then exits 0. Without --mp4 it makes a 2 s
      640x360 H.264/AAC test video with ffmpeg (exit 2 when ffmpeg is missing or fails).

Python:  from fake_kling import FakeKling
         fk = FakeKling().start(); fk.url; fk.token(); fk.control(queued_ms=10); fk.stats()
         fk.create_as_other_client(prompt="x"); fk.finish_all(); fk.reset(); fk.stop()
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import queue
import random
import re
import struct
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

_COMMON = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fake_common"))
if _COMMON not in sys.path:
    sys.path.insert(0, _COMMON)
import fake_http  # noqa: E402  (the scaffolding the fakes share: server, lifecycle, CLI)
from fake_http import FakeError, FakeHandler, FakeServer, FakeService  # noqa: E402

__all__ = ["FakeKling", "FakeKlingError", "make_test_mp4", "make_jwt", "DEFAULT_KNOBS",
           "HTTP_STATUS", "MESSAGES", "MODELS"]


class FakeKlingError(FakeError):
    """Raised when the fake cannot start (e.g. ffmpeg missing, bad --mp4)."""


# ---------------------------------------------------------------------------------------
# Kling's published codes

HTTP_STATUS: dict[int, int] = {
    1000: 401, 1001: 401, 1002: 401, 1003: 401, 1004: 401,
    1100: 429, 1101: 429, 1102: 429,
    1103: 403,
    1200: 400, 1201: 400,
    1202: 404, 1203: 404,
    1300: 400, 1301: 400,
    1302: 429, 1303: 429, 1304: 429,
    5000: 500, 5001: 503, 5002: 504,
}

MESSAGES: dict[int, str] = {
    1000: "Authentication failed",
    1001: "Authorization is empty",
    1002: "Authorization is invalid",
    1003: "Authorization is not yet valid",
    1004: "Authorization has expired",
    1100: "Account exception",
    1101: "Account in arrears (postpaid scenario)",
    1102: "Resource pack depleted or expired (prepaid scenario)",
    1103: "Unauthorized access to requested resource, such as API/model",
    1200: "Invalid request parameters",
    1201: "Invalid parameters, such as incorrect key or illegal value",
    1202: "The requested method is invalid",
    1203: "The requested resource does not exist, such as the model",
    1300: "Trigger strategy of the platform",
    1301: "Failure to pass the risk control system",
    1302: "The API request is too fast, exceeding the platform's rate limit",
    1303: "Concurrency or QPS exceeds the prepaid resource package limit",
    1304: "Trigger the platform's IP whitelisting policy",
    5000: "Server internal error",
    5001: "Server temporarily unavailable, usually due to maintenance",
    5002: "Server internal timeout, usually due to a backlog",
}

MODELS: tuple[str, ...] = ("kling-v1", "kling-v1-5", "kling-v1-6", "kling-v2-master",
                           "kling-v2-1", "kling-v2-1-master", "kling-v2-5-turbo")

ENDPOINTS = ("text2video", "image2video")
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
MODES = ("std", "pro")
DURATIONS = ("5", "10")
MAX_PROMPT = 2500
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MIN_IMAGE_SIDE = 300
MAX_ASPECT = 2.5
CLOCK_SKEW_S = 5
CALLBACK_TIMEOUT_S = 2.0

_ACCOUNT_CODES = {"ok": 0, "exception": 1100, "arrears": 1101, "depleted": 1102,
                  "ip_blocked": 1304}

# final_unit_deduction per (mode, duration), a decimal string
_UNITS = {("std", "5"): "1", ("std", "10"): "2", ("pro", "5"): "3.5", ("pro", "10"): "7"}

FAIL_MSG = "video generation failed: internal error"


# ---------------------------------------------------------------------------------------
# Knobs

DEFAULT_KNOBS: dict[str, Any] = {
    "concurrency_limit": 2,
    "queued_ms": 200,
    "processing_ms": 1000,
    "latency_ms": 0,
    "fail_next_tasks": 0,
    "rate_limit_next": 0,
    "error_next": [],
    "account": "ok",
    "drop_response_next": 0,
    "content_policy_marker": "FORBIDDEN_CONTENT",
    "stuck": False,
    "forbidden_models": [],
    "callbacks": True,
    "duplicate_callbacks": False,
    "delete_results": False,  # an action: true deletes every current result; never stays set
}

_INT_KNOBS = {"concurrency_limit", "queued_ms", "processing_ms", "latency_ms",
              "fail_next_tasks", "rate_limit_next", "drop_response_next"}
_BOOL_KNOBS = {"stuck", "callbacks", "duplicate_callbacks", "delete_results"}


def _coerce_knob(name: str, value: Any) -> Any:
    """Validates one knob value; raises ValueError with a readable message."""
    if name not in DEFAULT_KNOBS:
        raise ValueError(f"unknown knob {name!r} (known: {', '.join(sorted(DEFAULT_KNOBS))})")
    if name in _INT_KNOBS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"knob {name!r} must be an integer")
        if value < 0:
            raise ValueError(f"knob {name!r} must be >= 0")
        return value
    if name in _BOOL_KNOBS:
        if not isinstance(value, bool):
            raise ValueError(f"knob {name!r} must be a boolean")
        return value
    if name == "error_next":
        if not isinstance(value, list) or any(
                isinstance(c, bool) or not isinstance(c, int) or c not in HTTP_STATUS for c in value):
            raise ValueError(f"knob 'error_next' must be a list of Kling error codes "
                             f"({', '.join(str(c) for c in sorted(HTTP_STATUS))})")
        return list(value)
    if name == "forbidden_models":
        if not isinstance(value, list) or any(not isinstance(m, str) for m in value):
            raise ValueError("knob 'forbidden_models' must be a list of strings")
        return list(value)
    if name == "account":
        if value not in _ACCOUNT_CODES:
            raise ValueError(f"knob 'account' must be one of {', '.join(_ACCOUNT_CODES)}")
        return value
    if name == "content_policy_marker":
        if not isinstance(value, str):
            raise ValueError("knob 'content_policy_marker' must be a string")
        return value
    raise AssertionError(name)  # pragma: no cover


# ---------------------------------------------------------------------------------------
# JWT


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_RE_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


def _b64url_decode(s: str) -> bytes:
    """Strict base64url without padding (RFC 7515); ValueError otherwise."""
    if not _RE_B64URL.match(s) or len(s) % 4 == 1:
        raise ValueError("not base64url without padding")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def make_jwt(access_key: str, secret_key: str, exp_in: float = 1800, nbf_ago: float = 5,
             now: float | None = None, header: dict[str, Any] | None = None) -> str:
    """A Kling API token: HS256 JWT {"iss", "exp": now+exp_in, "nbf": now-nbf_ago}."""
    now = time.time() if now is None else now
    hdr = header if header is not None else {"alg": "HS256", "typ": "JWT"}
    payload = {"iss": access_key, "exp": int(now + exp_in), "nbf": int(now - nbf_ago)}
    signing_input = (_b64url(json.dumps(hdr, separators=(",", ":")).encode()) + "." +
                     _b64url(json.dumps(payload, separators=(",", ":")).encode()))
    sig = hmac.new(secret_key.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + _b64url(sig)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def verify_jwt(authorization: str | None, access_key: str, secret_key: str,
               now: float | None = None) -> tuple[int, str]:
    """(0, token) when valid, else (Kling auth code, message)."""
    now = time.time() if now is None else now
    if authorization is None or authorization.strip() == "":
        return 1001, "Authorization is empty"
    scheme, _, token = authorization.partition(" ")
    if scheme != "Bearer" or token.strip() == "":
        if scheme == "Bearer":
            return 1001, "Authorization is empty"
        return 1002, "Authorization is invalid: expected 'Bearer <JWT>'"
    if token != token.strip():
        return 1002, "Authorization is invalid: stray whitespace around the token"
    parts = token.split(".")
    if len(parts) != 3:
        return 1002, "Authorization is invalid: a JWT has three parts"
    try:
        header = json.loads(_b64url_decode(parts[0]))
        payload = json.loads(_b64url_decode(parts[1]))
        sig = _b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError):
        return 1002, "Authorization is invalid: malformed JWT"
    if not isinstance(header, dict) or not isinstance(payload, dict):
        return 1002, "Authorization is invalid: malformed JWT"
    if header.get("alg") != "HS256" or header.get("typ") != "JWT":
        return 1002, "Authorization is invalid: header must be {\"alg\":\"HS256\",\"typ\":\"JWT\"}"
    want = hmac.new(secret_key.encode(), f"{parts[0]}.{parts[1]}".encode("ascii"),
                    hashlib.sha256).digest()
    if not hmac.compare_digest(want, sig):
        return 1002, "Authorization is invalid: signature does not verify"
    if payload.get("iss") != access_key:
        return 1002, "Authorization is invalid: unknown access key (iss)"
    nbf, exp = payload.get("nbf"), payload.get("exp")
    if not _is_number(nbf) or not _is_number(exp):
        return 1002, "Authorization is invalid: nbf and exp must be numbers"
    if nbf > now + CLOCK_SKEW_S:
        return 1003, "Authorization is not yet valid"
    if exp <= now:
        return 1004, "Authorization has expired"
    return 0, token


# ---------------------------------------------------------------------------------------
# Images


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_size(data: bytes) -> tuple[str, int, int]:
    """("png"|"jpeg", width, height) read from the PNG IHDR or the JPEG SOF marker."""
    if data.startswith(_PNG_MAGIC):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ValueError("image is a truncated PNG (no IHDR)")
        w, h = struct.unpack(">II", data[16:24])
        return "png", w, h
    if data.startswith(b"\xff\xd8\xff"):
        i = 2
        n = len(data)
        while i < n:
            if data[i] != 0xFF:
                raise ValueError("image is a malformed JPEG (bad marker)")
            while i < n and data[i] == 0xFF:  # fill bytes
                i += 1
            if i >= n:
                break
            marker = data[i]
            i += 1
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                continue  # no length
            if marker in (0xD9, 0xDA):
                break  # end of image / start of scan before any SOF
            if i + 2 > n:
                break
            (seg_len,) = struct.unpack(">H", data[i:i + 2])
            if seg_len < 2:
                raise ValueError("image is a malformed JPEG (bad segment length)")
            if marker in _SOF_MARKERS:
                if i + 7 > n:
                    break
                h, w = struct.unpack(">HH", data[i + 3:i + 7])
                return "jpeg", w, h
            i += seg_len
        raise ValueError("image is a JPEG without a readable SOF marker")
    raise ValueError("image must be a JPG or PNG")


# ---------------------------------------------------------------------------------------
# The test video


def make_test_mp4(out_path: str) -> None:
    """Writes a 2 s 640x360 test-pattern MP4 with a sine tone (H.264/AAC, yuv420p)."""
    fake_http.make_test_mp4(out_path, FakeKlingError, "the fake Kling")


# ---------------------------------------------------------------------------------------
# State


class _Refusal(Exception):
    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message or MESSAGES[code])
        self.code = code
        self.message = message or MESSAGES[code]


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Task:
    def __init__(self, task_id: str, endpoint: str, fields: dict[str, Any], will_fail: bool,
                 now: float) -> None:
        self.task_id = task_id
        self.endpoint = endpoint
        self.f = fields
        self.ext: str | None = fields["external_task_id"]
        self.will_fail = will_fail
        self.status = "submitted"
        self.status_msg = ""
        self.entered = now  # monotonic time the current status began
        self.created_at = self.updated_at = _now_ms()
        self.video_id = str(uuid.uuid4())
        self.result_deleted = False

    @property
    def live(self) -> bool:
        return self.status in ("submitted", "processing")

    def data(self, base_url: str) -> dict[str, Any]:
        d: dict[str, Any] = {
            "task_id": self.task_id,
            "task_status": self.status,
            "task_status_msg": self.status_msg,
            "task_info": {"external_task_id": self.ext} if self.ext is not None else {},
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if self.status == "failed":
            d["final_unit_deduction"] = "0"
        elif self.status != "submitted":
            d["final_unit_deduction"] = _UNITS[(self.f["mode"], self.f["duration"])]
        if self.status == "succeed":
            d["task_result"] = {"videos": [{
                "id": self.video_id,
                "url": f"{base_url}/results/{self.task_id}.mp4",
                "duration": f"{self.f['duration']}.1",
            }]}
        return d

    def stats_entry(self) -> dict[str, Any]:
        f = self.f
        return {
            "task_id": self.task_id,
            "external_task_id": self.ext,
            "endpoint": self.endpoint,
            "status": self.status,
            "model_name": f["model_name"],
            "model_name_sent": f["model_name_sent"],
            "mode": f["mode"],
            "duration": f["duration"],
            "prompt": f["prompt"],
            "negative_prompt": f["negative_prompt"],
            "aspect_ratio": f["aspect_ratio"],
            "aspect_ratio_sent": f["aspect_ratio_sent"],
            "cfg_scale": f["cfg_scale"],
            "image_kind": f["image_kind"],
            "image_url": f["image_url"],
            "image_format": f["image_format"],
            "image_bytes": f["image_bytes"],
            "image_width": f["image_width"],
            "image_height": f["image_height"],
            "callback_url": f["callback_url"],
            "result_deleted": self.result_deleted,
        }


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generation = 0
        self.callback_queue: "queue.Queue[tuple[int, str, str, str, dict[str, Any]] | None]" = queue.Queue()
        self.base_url = ""
        self._reset_locked()

    def _reset_locked(self) -> None:
        self.generation += 1
        self.knobs: dict[str, Any] = json.loads(json.dumps(DEFAULT_KNOBS))
        self.tasks: dict[str, _Task] = {}
        self.order: list[_Task] = []
        self.by_external: dict[str, _Task] = {}
        self.creates_ok = 0
        self.creates_by_external_id: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.auth_failures: dict[str, int] = {}
        self.tokens: set[str] = set()
        self.max_live = 0
        self.queries = 0
        self.queries_not_found = 0
        self.requests = 0
        self.callbacks: list[dict[str, Any]] = []
        self.dropped_responses = 0
        self.result_downloads = 0
        self.result_404s = 0

    def reset(self) -> None:
        with self.lock:
            self._reset_locked()

    # --- knobs and stats ---

    def control(self, updates: dict[str, Any]) -> dict[str, Any]:
        coerced = {k: _coerce_knob(k, v) for k, v in updates.items()}  # all or nothing
        with self.lock:
            if coerced.pop("delete_results", False):
                for t in self.order:
                    t.result_deleted = True
            self.knobs.update(coerced)
            self._advance_locked(time.monotonic())
            return self._knobs_locked()

    def _knobs_locked(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.knobs))

    def get_knobs(self) -> dict[str, Any]:
        with self.lock:
            return self._knobs_locked()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            self._advance_locked(time.monotonic())
            return {
                "creates_ok": self.creates_ok,
                "creates_by_external_id": dict(self.creates_by_external_id),
                "refused": dict(self.refused),
                "auth_failures": dict(self.auth_failures),
                "tokens_seen": len(self.tokens),
                "max_live": self.max_live,
                "live": self._live_locked(),
                "queries": self.queries,
                "queries_not_found": self.queries_not_found,
                "requests": self.requests,
                "tasks": [t.stats_entry() for t in self.order],
                "callbacks": [dict(c) for c in self.callbacks],
                "dropped_responses": self.dropped_responses,
                "result_downloads": self.result_downloads,
                "result_404s": self.result_404s,
            }

    # --- auth and counters ---

    def begin_request(self) -> float:
        with self.lock:
            self.requests += 1
            return self.knobs["latency_ms"] / 1000.0

    def auth_result(self, code: int, token: str) -> None:
        with self.lock:
            if code == 0:
                self.tokens.add(token)
            else:
                key = str(code)
                self.auth_failures[key] = self.auth_failures.get(key, 0) + 1

    def _refuse_locked(self, code: int, message: str | None = None) -> _Refusal:
        key = str(code)
        self.refused[key] = self.refused.get(key, 0) + 1
        return _Refusal(code, message)

    # --- the lifecycle ---

    def _live_locked(self) -> int:
        return sum(1 for t in self.order if t.live)

    def _transition_locked(self, t: _Task, status: str, now: float) -> None:
        t.status = status
        t.entered = now
        t.updated_at = max(_now_ms(), t.updated_at)
        if status == "failed":
            t.status_msg = FAIL_MSG
        self._emit_callback_locked(t)

    def _emit_callback_locked(self, t: _Task) -> None:
        url = t.f["callback_url"]
        if url is None or not self.knobs["callbacks"]:
            return
        body = t.data(self.base_url)
        times = 2 if self.knobs["duplicate_callbacks"] else 1
        for _ in range(times):
            self.callback_queue.put((self.generation, url, t.task_id, t.status, body))

    def _advance_locked(self, now: float, force_end: bool = False) -> None:
        queued = self.knobs["queued_ms"] / 1000.0
        processing = self.knobs["processing_ms"] / 1000.0
        stuck = self.knobs["stuck"]
        for t in self.order:
            if t.status == "submitted" and (force_end or now - t.entered >= queued):
                self._transition_locked(t, "processing", now)
            if t.status == "processing" and (force_end or (
                    not stuck and now - t.entered >= processing)):
                self._transition_locked(t, "failed" if t.will_fail else "succeed", now)

    def tick(self) -> None:
        with self.lock:
            self._advance_locked(time.monotonic())

    def finish_all(self) -> None:
        with self.lock:
            self._advance_locked(time.monotonic(), force_end=True)

    # --- the API ---

    def create(self, endpoint: str, content_type: str, raw: bytes) -> tuple[dict[str, Any], bool]:
        """(answer data, drop the response?) or raises _Refusal."""
        try:
            body = json.loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            body = None
        ext_raw = body.get("external_task_id") if isinstance(body, dict) else None
        with self.lock:
            now = time.monotonic()
            self._advance_locked(now)
            if isinstance(ext_raw, str) and ext_raw != "":
                self.creates_by_external_id[ext_raw] = self.creates_by_external_id.get(ext_raw, 0) + 1
            k = self.knobs
            if content_type.split(";", 1)[0].strip().lower() != "application/json":
                raise self._refuse_locked(1200, "Invalid request parameters: Content-Type must be application/json")
            if k["error_next"]:
                code = k["error_next"].pop(0)
                raise self._refuse_locked(code)
            if k["rate_limit_next"] > 0:
                k["rate_limit_next"] -= 1
                raise self._refuse_locked(1302)
            if k["account"] != "ok":
                raise self._refuse_locked(_ACCOUNT_CODES[k["account"]])
            if not isinstance(body, dict):
                raise self._refuse_locked(1200, "Invalid request parameters: the body must be a JSON object")
            try:
                fields = _validate(endpoint, body)
            except _Refusal as r:
                raise self._refuse_locked(r.code, r.message) from None
            if fields["model_name"] in k["forbidden_models"]:
                raise self._refuse_locked(
                    1103, f"Unauthorized access to requested resource: model {fields['model_name']}")
            marker = k["content_policy_marker"]
            if marker and (marker in fields["prompt"] or marker in fields["negative_prompt"]):
                raise self._refuse_locked(1301, "Failure to pass the risk control system")
            ext = fields["external_task_id"]
            if ext is not None and ext in self.by_external:
                raise self._refuse_locked(1201, "external_task_id already exists")
            if self._live_locked() >= k["concurrency_limit"]:
                raise self._refuse_locked(1303)
            task_id = str(random.randrange(10 ** 17, 10 ** 18))
            while task_id in self.tasks:
                task_id = str(random.randrange(10 ** 17, 10 ** 18))
            will_fail = k["fail_next_tasks"] > 0
            if will_fail:
                k["fail_next_tasks"] -= 1
            t = _Task(task_id, endpoint, fields, will_fail, now)
            self.tasks[task_id] = t
            self.order.append(t)
            if ext is not None:
                self.by_external[ext] = t
            self.creates_ok += 1
            self.max_live = max(self.max_live, self._live_locked())
            self._emit_callback_locked(t)
            drop = k["drop_response_next"] > 0
            if drop:
                k["drop_response_next"] -= 1
                self.dropped_responses += 1
            data = {
                "task_id": t.task_id,
                "task_status": t.status,
                "task_info": {"external_task_id": ext} if ext is not None else {},
                "created_at": t.created_at,
                "updated_at": t.updated_at,
            }
            return data, drop

    def query(self, endpoint: str, ident: str) -> dict[str, Any]:
        with self.lock:
            self._advance_locked(time.monotonic())
            self.queries += 1
            t = self.tasks.get(ident)
            if t is None or t.endpoint != endpoint:
                t = self.by_external.get(ident)
            if t is None or t.endpoint != endpoint:
                self.queries_not_found += 1
                raise _Refusal(1203, f"task not found: {ident}")
            return t.data(self.base_url)

    def list_tasks(self, endpoint: str, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        def num(name: str, default: int, hi: int) -> int:
            vals = query.get(name)
            if not vals:
                return default
            try:
                v = int(vals[-1])
            except ValueError:
                raise _Refusal(1201, f"{name} must be an integer") from None
            if not 1 <= v <= hi:
                raise _Refusal(1201, f"{name} must be between 1 and {hi}")
            return v

        page = num("pageNum", 1, 1000)
        size = num("pageSize", 30, 500)
        with self.lock:
            self._advance_locked(time.monotonic())
            self.queries += 1
            mine = [t for t in reversed(self.order) if t.endpoint == endpoint]
            return [t.data(self.base_url) for t in mine[(page - 1) * size:page * size]]

    def result_available(self, task_id: str, count: bool) -> bool:
        with self.lock:
            self._advance_locked(time.monotonic())
            t = self.tasks.get(task_id)
            ok = t is not None and t.status == "succeed" and not t.result_deleted
            if count:
                if ok:
                    self.result_downloads += 1
                else:
                    self.result_404s += 1
            return ok

    def record_callback(self, generation: int, entry: dict[str, Any]) -> None:
        with self.lock:
            if generation == self.generation:
                self.callbacks.append(entry)


def _validate(endpoint: str, b: dict[str, Any]) -> dict[str, Any]:
    """The create body's fields, normalised; raises _Refusal(1201, which rule) otherwise."""
    def bad(msg: str) -> _Refusal:
        return _Refusal(1201, f"Invalid parameters: {msg}")

    f: dict[str, Any] = {}
    model = b.get("model_name")
    if model is None:
        f["model_name"], f["model_name_sent"] = "kling-v1", False
    elif not isinstance(model, str) or model not in MODELS:
        raise bad(f"model_name {model!r} is not a valid model ({', '.join(MODELS)})")
    else:
        f["model_name"], f["model_name_sent"] = model, True

    prompt = b.get("prompt")
    if prompt is None:
        if endpoint == "text2video":
            raise bad("prompt is required")
        prompt = ""
    if not isinstance(prompt, str):
        raise bad("prompt must be a string")
    if endpoint == "text2video" and prompt.strip() == "":
        raise bad("prompt must not be empty")
    if len(prompt) > MAX_PROMPT:
        raise bad(f"prompt must be at most {MAX_PROMPT} characters (got {len(prompt)})")
    f["prompt"] = prompt

    neg = b.get("negative_prompt")
    if neg is None:
        neg = ""
    if not isinstance(neg, str):
        raise bad("negative_prompt must be a string")
    if len(neg) > MAX_PROMPT:
        raise bad(f"negative_prompt must be at most {MAX_PROMPT} characters (got {len(neg)})")
    f["negative_prompt"] = neg

    duration = b.get("duration", "5")
    if not isinstance(duration, str) or duration not in DURATIONS:
        raise bad(f"duration must be the string \"5\" or \"10\" (got {json.dumps(duration)})")
    f["duration"] = duration

    f["aspect_ratio_sent"] = "aspect_ratio" in b
    if endpoint == "text2video":
        ar = b.get("aspect_ratio", "16:9")
        if ar is None:
            ar = "16:9"
        if not isinstance(ar, str) or ar not in ASPECT_RATIOS:
            raise bad(f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)} (got {json.dumps(ar)})")
        f["aspect_ratio"] = ar
    else:
        f["aspect_ratio"] = None  # image2video: the output follows the image

    mode = b.get("mode", "std")
    if mode is None:
        mode = "std"
    if not isinstance(mode, str) or mode not in MODES:
        raise bad(f"mode must be \"std\" or \"pro\" (got {json.dumps(mode)})")
    f["mode"] = mode

    cfg = b.get("cfg_scale")
    if cfg is not None and (not _is_number(cfg) or not 0 <= cfg <= 1):
        raise bad(f"cfg_scale must be a number between 0 and 1 (got {json.dumps(cfg)})")
    f["cfg_scale"] = cfg

    cb = b.get("callback_url")
    if cb == "":
        cb = None
    if cb is not None:
        if not isinstance(cb, str):
            raise bad("callback_url must be a string")
        p = urllib.parse.urlsplit(cb)
        if p.scheme not in ("http", "https") or not p.hostname:
            raise bad(f"callback_url must be an http(s) URL (got {cb!r})")
    f["callback_url"] = cb

    ext = b.get("external_task_id")
    if ext == "":
        ext = None
    if ext is not None and not isinstance(ext, str):
        raise bad("external_task_id must be a string")
    f["external_task_id"] = ext

    f.update(image_kind=None, image_url=None, image_format=None, image_bytes=None,
             image_width=None, image_height=None)
    if endpoint == "image2video":
        img = b.get("image")
        if img is None or img == "":
            raise bad("image is required")
        if not isinstance(img, str):
            raise bad("image must be a string (a URL or plain base64)")
        if img.startswith(("http://", "https://")):
            p = urllib.parse.urlsplit(img)
            if not p.hostname:
                raise bad("image URL has no host")
            f["image_kind"], f["image_url"] = "url", img
        elif img[:5].lower() == "data:":
            raise bad("image must be plain base64 without a data: prefix")
        else:
            try:
                raw = base64.b64decode(img, validate=True)
            except (binascii.Error, ValueError):
                raise bad("image is neither an http(s) URL nor valid base64") from None
            if len(raw) > MAX_IMAGE_BYTES:
                raise bad(f"image must be at most 10 MB (got {len(raw)} bytes)")
            try:
                fmt, w, h = image_size(raw)
            except ValueError as e:
                raise bad(str(e)) from None
            if w < MIN_IMAGE_SIDE or h < MIN_IMAGE_SIDE:
                raise bad(f"image must be at least {MIN_IMAGE_SIDE} px a side (got {w}x{h})")
            if w > h * MAX_ASPECT or h > w * MAX_ASPECT:
                raise bad(f"image aspect ratio must be between 1:2.5 and 2.5:1 (got {w}x{h})")
            f.update(image_kind="base64", image_format=fmt, image_bytes=len(raw),
                     image_width=w, image_height=h)
    return f


# ---------------------------------------------------------------------------------------
# Background threads: the lifecycle ticker and the callback sender


def _ticker(state: _State, stop: threading.Event) -> None:
    while not stop.wait(0.01):
        state.tick()


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _callback_sender(state: _State) -> None:
    while True:
        item = state.callback_queue.get()
        if item is None:
            return
        generation, url, task_id, status, body = item
        if generation != state.generation:
            continue
        entry: dict[str, Any] = {"url": url, "task_id": task_id,
                                 "external_task_id": (body.get("task_info") or {}).get("external_task_id"),
                                 "status": status, "http_status": None, "error": None,
                                 "at_ms": _now_ms()}
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with _NO_PROXY.open(req, timeout=CALLBACK_TIMEOUT_S) as r:
                r.read()
                entry["http_status"] = r.status
        except urllib.error.HTTPError as e:
            entry["http_status"] = e.code
            entry["error"] = f"HTTP {e.code}"
        except Exception as e:  # noqa: BLE001 - any failure is recorded, never raised
            entry["error"] = f"{type(e).__name__}: {e}"
        state.record_callback(generation, entry)


# ---------------------------------------------------------------------------------------
# HTTP


_RE_CREATE = re.compile(r"^/v1/videos/(text2video|image2video)$")
_RE_QUERY = re.compile(r"^/v1/videos/(text2video|image2video)/([^/]+)$")
_RE_RESULT = re.compile(r"^/results/([0-9]+)\.mp4$")
_RE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
MAX_BODY = 64 * 1024 * 1024


class _Handler(FakeHandler):
    server_version = "fake-kling/1.0"
    max_body = MAX_BODY
    debug_env = "FAKE_KLING_DEBUG"

    def _kling(self, code: int, data: Any = None, message: str | None = None) -> None:
        """A Kling envelope: code 0 -> 200 SUCCEED, else the published status."""
        status = 200 if code == 0 else HTTP_STATUS[code]
        msg = "SUCCEED" if code == 0 else (message or MESSAGES[code])
        self.send_json(status, {"code": code, "message": msg, "request_id": str(uuid.uuid4()),
                                "data": data})

    def dispatch(self, method: str) -> None:
        body = self.read_body()
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        if body is None:
            self._kling(1200, message="Invalid request parameters: malformed body framing")
            return
        if path.startswith("/v1/"):
            self._v1(method, path, split.query, body)
        elif path.startswith("/results/"):
            self._result(method, path)
        elif not self.control_routes(method, path, body):
            self.send_json(404, {"error": f"no route for {method} {path}"})

    def _result(self, method: str, path: str) -> None:
        m = _RE_RESULT.match(path)
        head = method == "HEAD"
        if method not in ("GET", "HEAD") or m is None or not self.server.state.result_available(
                m.group(1), count=not head):
            if m is None and not head:
                self.server.state.result_available("", count=True)  # counts the 404
            self.send_bytes(404, b"not found\n", "text/plain", head_only=head)
            return
        data = self.server.mp4
        total = len(data)
        rng = self.headers.get("Range")
        if rng:
            r = _RE_RANGE.match(rng.strip())
            if r and (r.group(1) or r.group(2)):
                if r.group(1):
                    start = int(r.group(1))
                    end = min(int(r.group(2)), total - 1) if r.group(2) else total - 1
                else:
                    start, end = max(0, total - int(r.group(2))), total - 1
                if start >= total or start > end:
                    self.send_bytes(416, b"", "video/mp4", {"Content-Range": f"bytes */{total}"},
                                    head_only=head)
                    return
                self.send_bytes(206, data[start:end + 1], "video/mp4",
                                {"Content-Range": f"bytes {start}-{end}/{total}",
                                 "Accept-Ranges": "bytes"}, head_only=head)
                return
        self.send_bytes(200, data, "video/mp4", {"Accept-Ranges": "bytes"}, head_only=head)

    def _v1(self, method: str, path: str, query: str, body: bytes) -> None:
        srv = self.server
        state = srv.state
        latency = state.begin_request()
        if latency > 0:
            time.sleep(latency)

        code, token_or_msg = verify_jwt(self.headers.get("Authorization"), srv.access_key,
                                        srv.secret_key)
        state.auth_result(code, token_or_msg)
        if code != 0:
            self._kling(code, message=token_or_msg)
            return

        try:
            m = _RE_CREATE.match(path)
            if m is not None:
                if method == "GET":
                    self._kling(0, state.list_tasks(m.group(1), urllib.parse.parse_qs(query)))
                    return
                if method != "POST":
                    raise _Refusal(1202)
                data, drop = state.create(m.group(1), self.headers.get("Content-Type", ""), body)
                if drop:
                    self.drop_connection()
                    return
                self._kling(0, data)
                return
            m = _RE_QUERY.match(path)
            if m is not None:
                if method != "GET":
                    raise _Refusal(1202)
                self._kling(0, state.query(m.group(1), urllib.parse.unquote(m.group(2))))
                return
            raise _Refusal(1203, f"The requested resource does not exist: {method} {path}")
        except _Refusal as r:
            self._kling(r.code, message=r.message)


# ---------------------------------------------------------------------------------------
# Public API


class FakeKling(FakeService):
    """The fake Kling API, in process: start() serves on background threads."""

    name = "fake-kling"
    error = FakeKlingError
    handler = _Handler
    serves_mp4 = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, access_key: str = "test-access-key",
                 secret_key: str = "test-secret-key", mp4_path: str | None = None) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self._state = _State()
        super().__init__(host, port, mp4_path)

    def _configure(self, server: FakeServer) -> None:
        server.access_key = self.access_key
        server.secret_key = self.secret_key

    def _workers(self) -> list:
        return [("ticker", _ticker, (self._state, self._stop)),
                ("callbacks", _callback_sender, (self._state,))]

    def _wake_workers(self) -> None:
        self._state.callback_queue.put(None)

    def finish_all(self) -> None:
        """Ends every live task now (succeed, or failed when chosen to fail), with callbacks."""
        self._state.finish_all()

    def token(self, access_key: str | None = None, secret_key: str | None = None,
              exp_in: float = 1800, nbf_ago: float = 5) -> str:
        """A JWT as Kling wants it, signed with this fake's keys unless others are given."""
        return make_jwt(self.access_key if access_key is None else access_key,
                        self.secret_key if secret_key is None else secret_key,
                        exp_in=exp_in, nbf_ago=nbf_ago)

    def create_as_other_client(self, **fields: Any) -> dict[str, Any]:
        """Creates a text2video task over HTTP with a token of its own (another client of the
        same account); returns Kling's answer envelope (any code), with "http_status" added."""
        body = {"model_name": "kling-v2-5-turbo", "prompt": "another client's task",
                "duration": "5", "mode": "std"}
        body.update(fields)
        req = urllib.request.Request(
            self.url + "/v1/videos/text2video", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json",
                     "Authorization": "Bearer " + self.token(nbf_ago=7)})
        try:
            with _NO_PROXY.open(req, timeout=10) as r:
                answer, status = json.loads(r.read()), r.status
        except urllib.error.HTTPError as e:
            answer, status = json.loads(e.read()), e.code
        answer["http_status"] = status
        return answer


# ---------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Strict fake of Kling's video API for Reel's tests.")
    fake_http.add_common_args(ap, mp4=True)
    ap.add_argument("--access-key", default="test-access-key")
    ap.add_argument("--secret-key", default="test-secret-key")
    args = ap.parse_args(argv)
    return fake_http.serve_until_stopped(
        FakeKling(args.host, args.port, access_key=args.access_key, secret_key=args.secret_key,
                  mp4_path=args.mp4), args)


if __name__ == "__main__":
    sys.exit(main())
