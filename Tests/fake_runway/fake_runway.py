#!/usr/bin/env python3
"""A strict fake of Runway's published task API (API version 2024-11-06), for Reel's tests.

Standalone, standard library only (Python 3.11+; the scaffolding and the test MP4 come from
Tests/fake_common/fake_http.py, which the fakes share). It follows DESIGN.md §5 "Providers /
Runway" and refuses what Runway refuses, so a client that passes against it speaks Runway.
Tests steer it through POST /_control and read what it saw through GET /_stats.

Runway API (every /v1 call needs "Authorization: Bearer <key>" -> else 401, and
"X-Runway-Version: 2024-11-06" -> else 400; errors are {"error": "..."}):

  POST /v1/image_to_video {model, promptImage, promptText?, ratio, duration}
       model gen4_turbo | gen4.5; promptImage an https URL or a data:image/{png,jpeg,webp};base64
       URI of at most 5 MB (the real image type checked); promptText <= 1000 characters;
       ratio 1280:720 720:1280 1104:832 832:1104 960:960 1584:672; duration an integer 2-10.
  POST /v1/text_to_video  {model, promptText, ratio, duration}
       model gen4.5 only (gen4_turbo is image-only); promptText required; ratio 1280:720 or
       720:1280 only. Unknown fields are refused (400) on both.
       -> 200 {"id": uuid}
  GET  /v1/tasks/{id} -> {id, status, createdAt, [progress], [output], [failure, failureCode]}
       status PENDING | THROTTLED | RUNNING | SUCCEEDED | FAILED | CANCELLED; progress (0-1)
       only while RUNNING; output (URLs) only on SUCCEEDED; failure/failureCode only on FAILED.
       404 for an unknown or deleted task.
  DELETE /v1/tasks/{id} -> 204: a live task is CANCELLED; an ended one is deleted (404 after,
       its output too).
  GET|HEAD /outputs/{id}.mp4  the MP4 of a succeeded task (no auth; 404 once deleted).

  Tasks advance by time on a background thread: PENDING for pending_ms, RUNNING for
  running_ms (progress rising), then SUCCEEDED, or FAILED with fail_code for the next
  fail_next_tasks tasks (or a prompt containing safety_marker: SAFETY.INPUT.TEXT). With
  concurrency_limit N > 0, at most N tasks are PENDING/RUNNING; the others wait THROTTLED
  (accepted, queued: Runway's own slot, not an error).

  Create checks, in order: auth; version; injected faults (error_next statuses, then
  rate_limit_next -> 429, then no_credits -> 400 "not enough credits"); JSON body; fields;
  then the task is made (with drop_response_next the connection is closed with no answer).

Test control (no auth, never faulted): POST /_control (JSON subset of knobs; unknown knob or
bad type -> 400, nothing changed; answers the whole knob set; GET answers it too),
GET /_stats, POST /_reset.

CLI:  python3 fake_runway.py [--host 127.0.0.1] [--port 0] [--api-key K] [--mp4 PATH]
                             [--no-exit-with-parent]
      prints exactly one line "fake-runway listening on http://HOST:PORT" once ready.

Python:  from fake_runway import FakeRunway
         fr = FakeRunway().start(); fr.url; fr.control(pending_ms=10); fr.stats(); fr.stop()
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import sys
import threading
import time
import urllib.parse
import uuid
from datetime import datetime, timezone
from typing import Any

_COMMON = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fake_common"))
if _COMMON not in sys.path:
    sys.path.insert(0, _COMMON)
import fake_http  # noqa: E402  (the scaffolding the fakes share: server, lifecycle, CLI)
from fake_http import FakeError, FakeHandler, FakeServer, FakeService  # noqa: E402

__all__ = ["FakeRunway", "FakeRunwayError", "DEFAULT_KNOBS", "API_VERSION", "MODELS", "RATIOS",
           "TEXT_RATIOS", "NO_CREDITS_MESSAGE"]

API_VERSION = "2024-11-06"
MODELS = ("gen4_turbo", "gen4.5")
IMAGE_ONLY = ("gen4_turbo",)
RATIOS = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
TEXT_RATIOS = ("1280:720", "720:1280")
MAX_PROMPT = 1000
MAX_DATA_URI = 5 * 1024 * 1024
NO_CREDITS_MESSAGE = "You do not have enough credits to run this task."
FAIL_MESSAGE = "An unexpected error occurred."
SAFETY_MESSAGE = "The input did not pass moderation."
MAX_BODY = 16 * 1024 * 1024


class FakeRunwayError(FakeError):
    """Raised when the fake cannot start (e.g. ffmpeg missing, bad --mp4)."""


DEFAULT_KNOBS: dict[str, Any] = {
    "concurrency_limit": 0,          # 0: no limit; else the rest wait THROTTLED
    "pending_ms": 100,
    "running_ms": 600,
    "latency_ms": 0,
    "fail_next_tasks": 0,
    "fail_code": "INTERNAL.BAD_OUTPUT.CODE01",
    "safety_marker": "FORBIDDEN_CONTENT",  # a prompt with it fails SAFETY.INPUT.TEXT
    "rate_limit_next": 0,
    "error_next": [],                # HTTP statuses (500, 502, 503, 504) for the next creates
    "no_credits": False,
    "drop_response_next": 0,
    "stuck": False,                  # RUNNING tasks never end
}
_INT_KNOBS = {"concurrency_limit", "pending_ms", "running_ms", "latency_ms", "fail_next_tasks",
              "rate_limit_next", "drop_response_next"}
_BOOL_KNOBS = {"no_credits", "stuck"}
_STR_KNOBS = {"fail_code", "safety_marker"}
_ERROR_STATUSES = (500, 502, 503, 504)


def _coerce_knob(name: str, value: Any) -> Any:
    if name not in DEFAULT_KNOBS:
        raise ValueError(f"unknown knob {name!r} (known: {', '.join(sorted(DEFAULT_KNOBS))})")
    if name in _INT_KNOBS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"knob {name!r} must be an integer >= 0")
    elif name in _BOOL_KNOBS:
        if not isinstance(value, bool):
            raise ValueError(f"knob {name!r} must be a boolean")
    elif name in _STR_KNOBS:
        if not isinstance(value, str) or not value:
            raise ValueError(f"knob {name!r} must be a non-empty string")
    elif name == "error_next":
        if not isinstance(value, list) or any(isinstance(c, bool) or c not in _ERROR_STATUSES for c in value):
            raise ValueError(f"knob 'error_next' must be a list of {_ERROR_STATUSES}")
        value = list(value)
    return value


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(t * 1000) % 1000:03d}Z"


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _image_type(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


_DATA_URI = re.compile(r"^data:image/(png|jpeg|jpg|webp);base64,([A-Za-z0-9+/=]+)$")


def _validate(endpoint: str, b: Any, marker: str) -> dict[str, Any]:
    """The fields of a create body, or a 400 naming what is wrong."""
    if not isinstance(b, dict):
        raise _Refusal(400, "Validation of body failed: expected an object")
    allowed = {"model", "promptImage", "promptText", "ratio", "duration"} if endpoint == "image_to_video" \
        else {"model", "promptText", "ratio", "duration"}
    unknown = sorted(set(b) - allowed)
    if unknown:
        raise _Refusal(400, f"Validation of body failed: unrecognized key(s) {', '.join(unknown)}")
    model = b.get("model")
    if model not in MODELS:
        raise _Refusal(400, f"Validation of body failed: model must be one of {', '.join(MODELS)}")
    if endpoint == "text_to_video" and model in IMAGE_ONLY:
        raise _Refusal(400, f"Validation of body failed: model {model} requires an image (use image_to_video)")
    text = b.get("promptText")
    if endpoint == "text_to_video" and (not isinstance(text, str) or not text.strip()):
        raise _Refusal(400, "Validation of body failed: promptText is required")
    if text is not None and (not isinstance(text, str) or len(text) > MAX_PROMPT):
        raise _Refusal(400, f"Validation of body failed: promptText must be a string of at most {MAX_PROMPT} characters")
    ratio = b.get("ratio")
    ratios = RATIOS if endpoint == "image_to_video" else TEXT_RATIOS
    if ratio not in ratios:
        raise _Refusal(400, f"Validation of body failed: ratio must be one of {', '.join(ratios)}")
    d = b.get("duration")
    if isinstance(d, bool) or not isinstance(d, int) or not 2 <= d <= 10:
        raise _Refusal(400, "Validation of body failed: duration must be an integer from 2 to 10")
    out = {"model": model, "promptText": text, "ratio": ratio, "duration": d, "image": None}
    if endpoint == "image_to_video":
        img = b.get("promptImage")
        if not isinstance(img, str) or not img:
            raise _Refusal(400, "Validation of body failed: promptImage is required")
        if img.startswith("data:"):
            if len(img.encode()) > MAX_DATA_URI:
                raise _Refusal(400, "Validation of body failed: promptImage data URI exceeds 5 MB")
            m = _DATA_URI.match(img)
            if m is None:
                raise _Refusal(400, "Validation of body failed: promptImage must be a data:image/...;base64 URI")
            try:
                raw = base64.b64decode(m.group(2), validate=True)
            except (binascii.Error, ValueError):
                raise _Refusal(400, "Validation of body failed: promptImage is not valid base64") from None
            declared = "jpeg" if m.group(1) == "jpg" else m.group(1)
            if _image_type(raw) != declared:
                raise _Refusal(400, f"Validation of body failed: promptImage is not a {declared} image")
            out["image"] = {"kind": "data", "type": declared, "bytes": len(raw), "uri_bytes": len(img)}
        else:
            u = urllib.parse.urlsplit(img)
            if u.scheme != "https" or not u.netloc:
                raise _Refusal(400, "Validation of body failed: promptImage must be an https URL or a data URI")
            out["image"] = {"kind": "url", "url": img}
    if isinstance(text, str) and marker and marker in text:
        out["safety"] = True
    return out


class _Task:
    def __init__(self, tid: str, endpoint: str, fields: dict[str, Any], fail_code: str | None, now: float) -> None:
        self.id = tid
        self.endpoint = endpoint
        self.fields = fields
        self.fail_code = fail_code
        self.created = now
        self.status = "PENDING"
        self.phase_start = now
        self.progress = 0.0
        self.deleted = False
        self.cancelled = False
        self.statuses = ["PENDING"]

    @property
    def live(self) -> bool:
        return self.status in ("PENDING", "THROTTLED", "RUNNING")

    def set(self, status: str, now: float) -> None:
        if status != self.status:
            self.status = status
            self.phase_start = now
            self.statuses.append(status)

    def body(self, base_url: str) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "status": self.status, "createdAt": _iso(self.created)}
        if self.status == "RUNNING":
            d["progress"] = round(self.progress, 2)
        elif self.status == "SUCCEEDED":
            d["output"] = [f"{base_url}/outputs/{self.id}.mp4"]
        elif self.status == "FAILED":
            d["failure"] = SAFETY_MESSAGE if (self.fail_code or "").startswith("SAFETY") else FAIL_MESSAGE
            d["failureCode"] = self.fail_code
        return d


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.base_url = ""
        self._reset_locked()

    def _reset_locked(self) -> None:
        self.knobs = dict(DEFAULT_KNOBS)
        self.knobs["error_next"] = []
        self.tasks: dict[str, _Task] = {}
        self.order: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.creates: list[dict[str, Any]] = []
        self.deletes: list[str] = []
        self.output_downloads = 0
        self.max_active = 0

    def reset(self) -> None:
        with self.lock:
            self._reset_locked()

    def control(self, updates: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            coerced = {k: _coerce_knob(k, v) for k, v in updates.items()}
            self.knobs.update(coerced)
            return self._knobs_copy()

    def _knobs_copy(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.knobs.items()}

    def get_knobs(self) -> dict[str, Any]:
        with self.lock:
            return self._knobs_copy()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            self._advance_locked(time.time())
            tasks = []
            for tid in self.order:
                t = self.tasks[tid]
                tasks.append({"id": t.id, "endpoint": t.endpoint, "status": t.status, "statuses": list(t.statuses),
                              "model": t.fields["model"], "ratio": t.fields["ratio"],
                              "duration": t.fields["duration"], "prompt": t.fields["promptText"],
                              "image": t.fields["image"], "fail_code": t.fail_code,
                              "deleted": t.deleted, "cancelled": t.cancelled})
            return {"requests": [dict(r) for r in self.requests], "creates": [dict(c) for c in self.creates],
                    "tasks": tasks, "deletes": list(self.deletes), "output_downloads": self.output_downloads,
                    "max_active": self.max_active,
                    "live": sum(1 for t in self.tasks.values() if t.live)}

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)

    def _advance_locked(self, now: float, force_end: bool = False) -> None:
        k = self.knobs
        limit = k["concurrency_limit"]
        active = sum(1 for t in self.tasks.values() if t.status in ("PENDING", "RUNNING"))
        for tid in self.order:
            t = self.tasks[tid]
            if t.status == "THROTTLED" and (limit == 0 or active < limit):
                t.set("PENDING", now)
                active += 1
            if t.status == "PENDING" and (force_end or now - t.phase_start >= k["pending_ms"] / 1000):
                t.set("RUNNING", now)
            if t.status == "RUNNING":
                run = max(k["running_ms"] / 1000, 1e-6)
                t.progress = min((now - t.phase_start) / run, 0.99)
                if force_end or (not k["stuck"] and now - t.phase_start >= run):
                    t.set("FAILED" if t.fail_code else "SUCCEEDED", now)
                    active -= 1
        self.max_active = max(self.max_active, active)

    def tick(self) -> None:
        with self.lock:
            self._advance_locked(time.time())

    def finish_all(self) -> None:
        with self.lock:
            self._advance_locked(time.time(), force_end=True)
            for t in self.tasks.values():
                if t.status in ("PENDING", "THROTTLED", "RUNNING"):
                    t.set("FAILED" if t.fail_code else "SUCCEEDED", time.time())

    def create(self, endpoint: str, raw: bytes) -> tuple[dict[str, Any], bool]:
        """(answer, drop the connection); raises _Refusal."""
        with self.lock:
            k = self.knobs
            entry: dict[str, Any] = {"endpoint": endpoint, "outcome": None}
            self.creates.append(entry)
            if k["error_next"]:
                status = k["error_next"].pop(0)
                entry["outcome"] = status
                raise _Refusal(status, {500: "Internal server error", 502: "Bad gateway",
                                        503: "Service unavailable", 504: "Gateway timeout"}[status])
            if k["rate_limit_next"] > 0:
                k["rate_limit_next"] -= 1
                entry["outcome"] = 429
                raise _Refusal(429, "You have exceeded the daily task limit for your tier.")
            if k["no_credits"]:
                entry["outcome"] = "no_credits"
                raise _Refusal(400, NO_CREDITS_MESSAGE)
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                entry["outcome"] = 400
                raise _Refusal(400, "Validation of body failed: not JSON") from None
            try:
                fields = _validate(endpoint, body, k["safety_marker"])
            except _Refusal:
                entry["outcome"] = 400
                raise
            fail_code = None
            if fields.pop("safety", False):
                fail_code = "SAFETY.INPUT.TEXT"
            elif k["fail_next_tasks"] > 0:
                k["fail_next_tasks"] -= 1
                fail_code = k["fail_code"]
            now = time.time()
            t = _Task(str(uuid.uuid4()), endpoint, fields, fail_code, now)
            limit = k["concurrency_limit"]
            active = sum(1 for x in self.tasks.values() if x.status in ("PENDING", "RUNNING"))
            if limit and active >= limit:
                t.status = "THROTTLED"
                t.statuses = ["THROTTLED"]
            self.tasks[t.id] = t
            self.order.append(t.id)
            entry.update(outcome="created", id=t.id, model=fields["model"], duration=fields["duration"],
                         ratio=fields["ratio"])
            drop = False
            if k["drop_response_next"] > 0:
                k["drop_response_next"] -= 1
                drop = True
                entry["dropped"] = True
            self._advance_locked(now)
            return {"id": t.id}, drop

    def query(self, tid: str) -> dict[str, Any]:
        with self.lock:
            self._advance_locked(time.time())
            t = self.tasks.get(tid)
            if t is None or t.deleted:
                raise _Refusal(404, "Task not found")
            return t.body(self.base_url)

    def delete(self, tid: str) -> None:
        with self.lock:
            self._advance_locked(time.time())
            self.deletes.append(tid)
            t = self.tasks.get(tid)
            if t is None or t.deleted:
                raise _Refusal(404, "Task not found")
            if t.live:
                t.cancelled = True
                t.set("CANCELLED", time.time())
            else:
                t.deleted = True

    def output_available(self, tid: str, count: bool) -> bool:
        with self.lock:
            t = self.tasks.get(tid)
            ok = t is not None and t.status == "SUCCEEDED" and not t.deleted
            if ok and count:
                self.output_downloads += 1
            return ok


def _ticker(state: _State, stop: threading.Event) -> None:
    while not stop.wait(0.02):
        state.tick()


_RE_CREATE = re.compile(r"^/v1/(image_to_video|text_to_video)$")
_RE_TASK = re.compile(r"^/v1/tasks/([^/]+)$")
_RE_OUTPUT = re.compile(r"^/outputs/([0-9a-f-]+)\.mp4$")


class _Handler(FakeHandler):
    server_version = "fake-runway/1.0"
    max_body = MAX_BODY
    debug_env = "FAKE_RUNWAY_DEBUG"

    def extra_headers(self) -> dict[str, str]:
        return {"X-Request-Id": str(uuid.uuid4())}

    def _error(self, status: int, message: str) -> None:
        self.send_json(status, {"error": message})

    def dispatch(self, method: str) -> None:
        body = self.read_body()
        path = urllib.parse.urlsplit(self.path).path
        state = self.server.state
        if body is None:
            self._error(400, "malformed body framing")
            return
        if path.startswith("/v1/"):
            self._v1(method, path, body)
        elif path.startswith("/outputs/"):
            m = _RE_OUTPUT.match(path)
            head = method == "HEAD"
            if method not in ("GET", "HEAD") or m is None or not state.output_available(m.group(1), count=not head):
                self.send_bytes(404, b"not found\n", "text/plain", head_only=head)
                return
            self.send_bytes(200, self.server.mp4, "video/mp4", {"Accept-Ranges": "bytes"}, head_only=head)
        elif not self.control_routes(method, path, body):
            self._error(404, f"no route for {method} {path}")

    def _v1(self, method: str, path: str, body: bytes) -> None:
        srv = self.server
        state = srv.state
        latency = state.get_knobs()["latency_ms"]
        if latency:
            time.sleep(latency / 1000)
        auth = self.headers.get("Authorization")
        version = self.headers.get("X-Runway-Version")
        entry = {"method": method, "path": path, "version": version,
                 "auth_ok": auth == f"Bearer {srv.api_key}", "status": None}
        state.record(entry)

        def answer(status: int, obj: Any = None, message: str | None = None) -> None:
            entry["status"] = status
            if message is not None:
                self._error(status, message)
            elif obj is None:
                self.send_bytes(status, b"", None)
            else:
                self.send_json(status, obj)

        if not entry["auth_ok"]:
            answer(401, message="Invalid API key" if auth else "No API key provided")
            return
        if version != API_VERSION:
            answer(400, message=("X-Runway-Version header is required" if version is None
                                 else f"Unsupported API version {version!r}; use {API_VERSION}"))
            return
        try:
            m = _RE_CREATE.match(path)
            if m is not None:
                if method != "POST":
                    raise _Refusal(405, f"Method {method} not allowed")
                ctype = self.headers.get("Content-Type", "")
                if not ctype.lower().startswith("application/json"):
                    raise _Refusal(400, "Content-Type must be application/json")
                data, drop = state.create(m.group(1), body)
                if drop:
                    entry["status"] = "dropped"
                    self.drop_connection()
                    return
                answer(200, data)
                return
            m = _RE_TASK.match(path)
            if m is not None:
                tid = urllib.parse.unquote(m.group(1))
                if method == "GET":
                    answer(200, state.query(tid))
                elif method == "DELETE":
                    state.delete(tid)
                    answer(204)
                else:
                    raise _Refusal(405, f"Method {method} not allowed")
                return
            raise _Refusal(404, f"No route for {method} {path}")
        except _Refusal as r:
            answer(r.status, message=r.message)


class FakeRunway(FakeService):
    """The fake Runway API, in process: start() serves on background threads."""

    name = "fake-runway"
    error = FakeRunwayError
    handler = _Handler
    serves_mp4 = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str = "test-runway-key",
                 mp4_path: str | None = None) -> None:
        self.api_key = api_key
        self._state = _State()
        super().__init__(host, port, mp4_path)

    def _configure(self, server: FakeServer) -> None:
        server.api_key = self.api_key

    def _workers(self) -> list:
        return [("ticker", _ticker, (self._state, self._stop))]

    def finish_all(self) -> None:
        """Ends every live task now (SUCCEEDED, or FAILED when chosen to fail)."""
        self._state.finish_all()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Strict fake of Runway's task API for Reel's tests.")
    fake_http.add_common_args(ap, mp4=True)
    ap.add_argument("--api-key", default="test-runway-key")
    args = ap.parse_args(argv)
    return fake_http.serve_until_stopped(
        FakeRunway(args.host, args.port, api_key=args.api_key, mp4_path=args.mp4), args)


if __name__ == "__main__":
    sys.exit(main())
