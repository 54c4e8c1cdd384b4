#!/usr/bin/env python3
"""A fake Kling-style text-to-video REST API, for Reel's tests and demos.

Standalone, standard library only (Python 3.11+). It stands in for a paid, slow, flaky
video provider: tests steer it at runtime through POST /_control (latency, failures,
garbage replies, 429 with Retry-After, tasks stuck forever, failed tasks, rejected
prompts) and read back what it saw through GET /_stats (submissions per prompt and per
external_task_id, to prove "never paid twice").

Provider API (faults apply to these /v1 endpoints only):

  POST /v1/videos/text-to-video   {"prompt","duration","quality","model","external_task_id"}
       200 {"code":0,"message":"SUCCEED","data":{"task_id":ID,"task_status":"submitted"}}
       400 {"code":1001,...} body not a JSON object / prompt missing or empty
       400 {"code":1102,"message":"content policy violation"} while reject_next > 0
       A submit whose non-empty external_task_id was seen before returns that same task.
  GET  /v1/videos/{task_id}
       200 {"code":0,"message":"SUCCEED","data":{"task_id","task_status","task_status_msg",
            "progress","created_at","updated_at"[,"task_result":{"videos":[{"id","url","duration"}]}]}}
       The k-th GET of a task (k = 1, 2, ...) answers "processing" with progress
       100*k/processing_polls while k < processing_polls, then "succeed" (progress 100)
       -- or "failed" when fail_tasks is set; while stuck is set it stays "processing".
       404 {"code":1201,"message":"task not found"}
  POST /v1/videos/{task_id}/cancel
       200 {"code":0,"message":"SUCCEED","data":{"task_id","task_status":"cancelled"}}
       409 {"code":1202,...} already succeed/failed;  404 {"code":1201,...} unknown
  GET|HEAD /files/{task_id}.mp4   the MP4 (video/mp4) of a succeeded task; 404 otherwise.

  With --api-key, every /v1 request needs "Authorization: Bearer KEY" (else 401, code 1000).
  Order for a /v1 request: latency_ms sleep, auth (401), rate_limit_next (429),
  fail_rate (500, code 5000), garbage_rate (200 "<html>oops"), then the endpoint itself.

Test control (never subject to faults or auth):

  POST /_control  JSON with any subset of the knobs -> 200 with the whole knob set
                  (GET /_control returns it too); unknown knob or bad type -> 400.
  GET  /_stats    counters (see State.stats()).
  POST /_reset    knobs to defaults, stats and tasks cleared.

CLI:  python3 fake_provider.py [--host 127.0.0.1] [--port 0] [--api-key KEY] [--mp4 PATH]
      prints exactly one line "fake-provider listening on http://HOST:PORT" once ready,
      serves until SIGTERM/SIGINT (or until its parent process dies, unless
      --no-exit-with-parent), then exits 0. Without --mp4 it makes a 2 s test video with
      ffmpeg (exit 2 when ffmpeg is missing or fails).

Python:  from fake_provider import FakeProvider
         fp = FakeProvider("127.0.0.1", 0, api_key=None, mp4_path=None).start()
         fp.url; fp.control(fail_rate=1.0); fp.stats(); fp.reset(); fp.stop()
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeProvider", "FakeProviderError", "make_test_mp4", "DEFAULT_KNOBS"]


class FakeProviderError(RuntimeError):
    """Raised when the fake cannot start (e.g. ffmpeg missing, bad --mp4)."""


# ---------------------------------------------------------------------------------------
# Knobs

DEFAULT_KNOBS: dict[str, Any] = {
    "latency_ms": 0,
    "fail_rate": 0.0,
    "garbage_rate": 0.0,
    "rate_limit_next": 0,
    "retry_after_s": 1,
    "stuck": False,
    "fail_tasks": False,
    "reject_next": 0,
    "processing_polls": 3,
    "seed": 0,
}

_KNOB_TYPES: dict[str, type] = {
    "latency_ms": int,
    "fail_rate": float,
    "garbage_rate": float,
    "rate_limit_next": int,
    "retry_after_s": int,
    "stuck": bool,
    "fail_tasks": bool,
    "reject_next": int,
    "processing_polls": int,
    "seed": int,
}


def _coerce_knob(name: str, value: Any) -> Any:
    """Validates one knob value; raises ValueError with a readable message."""
    if name not in _KNOB_TYPES:
        raise ValueError(f"unknown knob {name!r} (known: {', '.join(sorted(_KNOB_TYPES))})")
    kind = _KNOB_TYPES[name]
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"knob {name!r} must be a boolean")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"knob {name!r} must be a number")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"knob {name!r} must be an integer")
        value = int(value)
        if value < 0:
            raise ValueError(f"knob {name!r} must be >= 0")
        return value
    value = float(value)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"knob {name!r} must be between 0 and 1")
    return value


# ---------------------------------------------------------------------------------------
# The test video


def make_test_mp4(out_path: str) -> None:
    """Writes a 2 s 160x120 test-pattern MP4 with ffmpeg (libx264, else mpeg4)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FakeProviderError(
            "ffmpeg not found on PATH: the fake provider needs it to make its test MP4 "
            "(install it with `apt-get install -y ffmpeg`, or pass --mp4 PATH)")
    errors = []
    for codec in ("libx264", "mpeg4"):
        cmd = [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
               "-t", "2", "-pix_fmt", "yuv420p", "-c:v", codec, out_path]
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode == 0 and os.path.exists(out_path) and os.path.getsize(out_path) > 0:
            return
        errors.append(f"{codec}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
    raise FakeProviderError("ffmpeg could not make the test MP4:\n  " + "\n  ".join(errors))


def _probe_duration(path: str) -> str:
    """The video's duration as Kling reports it ("2.0"); "2.0" when ffprobe is unavailable."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is not None:
        try:
            proc = subprocess.run(
                [ffprobe, "-v", "error", "-show_entries", "format=duration",
                 "-of", "default=noprint_wrappers=1:nokey=1", path],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
            if proc.returncode == 0:
                return f"{float(proc.stdout.strip()):.1f}"
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return "2.0"


# ---------------------------------------------------------------------------------------
# State: knobs, tasks and stats behind one lock


class _Task:
    __slots__ = ("task_id", "video_id", "status", "progress", "polls", "body",
                 "created_at", "updated_at")

    def __init__(self, body: dict[str, Any]) -> None:
        self.task_id = "task-" + uuid.uuid4().hex
        self.video_id = "video-" + uuid.uuid4().hex[:16]
        self.status = "submitted"
        self.progress = 0
        self.polls = 0
        self.body = body
        self.created_at = self.updated_at = int(time.time() * 1000)


_TERMINAL = ("succeed", "failed", "cancelled")
_STATUS_MSG = {
    "submitted": "task submitted",
    "processing": "generating video",
    "succeed": "video generated",
    "failed": "generation failed",
    "cancelled": "task cancelled",
}


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._reset_locked()

    def _reset_locked(self) -> None:
        self.knobs = dict(DEFAULT_KNOBS)
        self.rng = random.Random(self.knobs["seed"])
        self.tasks: dict[str, _Task] = {}
        self.by_external: dict[str, str] = {}
        self.submissions = 0
        self.submissions_by_prompt: dict[str, int] = {}
        self.submissions_by_external_id: dict[str, int] = {}
        self.tasks_created = 0
        self.polls = 0
        self.cancels: list[str] = []
        self.requests = 0
        self.status_counts: dict[str, int] = {}
        self.rejected = 0
        self.downloads = 0
        self.last_submit: dict[str, Any] | None = None

    def reset(self) -> None:
        with self.lock:
            self._reset_locked()

    def control(self, updates: dict[str, Any]) -> dict[str, Any]:
        # Validate everything first, so a bad request changes nothing.
        coerced = {k: _coerce_knob(k, v) for k, v in updates.items()}
        with self.lock:
            self.knobs.update(coerced)
            if "seed" in coerced:
                self.rng = random.Random(coerced["seed"])
            return dict(self.knobs)

    def get_knobs(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.knobs)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                # accepted submits, including idempotent repeats of an external_task_id
                "submissions": self.submissions,
                "submissions_by_prompt": dict(self.submissions_by_prompt),
                "submissions_by_external_id": dict(self.submissions_by_external_id),
                # distinct tasks (a repeat of an external_task_id creates none)
                "tasks_created": self.tasks_created,
                # GET /v1/videos/{id} that reached the endpoint (known or not)
                "polls": self.polls,
                # task ids of successful cancels, in order
                "cancels": list(self.cancels),
                # every /v1 request, faults included
                "requests": self.requests,
                # status codes of /v1 responses, keys are strings: {"200": n, "429": n}
                "status_counts": dict(self.status_counts),
                # extras: submits refused by reject_next; MP4 downloads; last accepted body
                "rejected": self.rejected,
                "downloads": self.downloads,
                "last_submit": self.last_submit,
            }

    # --- per-request helpers (all called with the lock NOT held) ---

    def count_request(self) -> float:
        """Counts a /v1 request; returns the latency to apply, in seconds."""
        with self.lock:
            self.requests += 1
            return self.knobs["latency_ms"] / 1000.0

    def count_status(self, status: int) -> None:
        with self.lock:
            key = str(status)
            self.status_counts[key] = self.status_counts.get(key, 0) + 1

    def pick_fault(self) -> tuple[str, int] | None:
        """Decides whether this /v1 request gets an injected fault: ("429", retry_after),
        ("500", 0), ("garbage", 0) or None."""
        with self.lock:
            k = self.knobs
            if k["rate_limit_next"] > 0:
                k["rate_limit_next"] -= 1
                return ("429", k["retry_after_s"])
            if k["fail_rate"] > 0 and self.rng.random() < k["fail_rate"]:
                return ("500", 0)
            if k["garbage_rate"] > 0 and self.rng.random() < k["garbage_rate"]:
                return ("garbage", 0)
            return None

    def submit(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        prompt = body["prompt"]
        ext = body.get("external_task_id")
        ext = ext if isinstance(ext, str) and ext != "" else None
        with self.lock:
            if self.knobs["reject_next"] > 0:
                self.knobs["reject_next"] -= 1
                self.rejected += 1
                return 400, {"code": 1102, "message": "content policy violation"}
            self.submissions += 1
            self.submissions_by_prompt[prompt] = self.submissions_by_prompt.get(prompt, 0) + 1
            self.last_submit = dict(body)
            task = None
            if ext is not None:
                self.submissions_by_external_id[ext] = self.submissions_by_external_id.get(ext, 0) + 1
                existing = self.by_external.get(ext)
                if existing is not None:
                    task = self.tasks.get(existing)
            if task is None:
                task = _Task(dict(body))
                self.tasks[task.task_id] = task
                self.tasks_created += 1
                if ext is not None:
                    self.by_external[ext] = task.task_id
            return 200, _ok({"task_id": task.task_id, "task_status": task.status})

    def poll(self, task_id: str, base_url: str, duration: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.polls += 1
            task = self.tasks.get(task_id)
            if task is None:
                return 404, _not_found()
            if task.status not in _TERMINAL:
                task.polls += 1
                needed = max(1, self.knobs["processing_polls"])
                if self.knobs["stuck"] or task.polls < needed:
                    task.status = "processing"
                    task.progress = min(99, max(task.progress, (100 * task.polls) // needed))
                    if self.knobs["stuck"]:
                        task.progress = min(task.progress, 90)
                elif self.knobs["fail_tasks"]:
                    task.status = "failed"
                else:
                    task.status = "succeed"
                    task.progress = 100
                task.updated_at = int(time.time() * 1000)
            return 200, _ok(self._task_json(task, base_url, duration))

    def cancel(self, task_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None:
                return 404, _not_found()
            if task.status in ("succeed", "failed"):
                return 409, {"code": 1202,
                             "message": f"task already finished with status {task.status}"}
            task.status = "cancelled"
            task.updated_at = int(time.time() * 1000)
            self.cancels.append(task_id)
            return 200, _ok({"task_id": task_id, "task_status": "cancelled"})

    def can_download(self, task_id: str, count: bool) -> bool:
        with self.lock:
            task = self.tasks.get(task_id)
            ok = task is not None and task.status == "succeed"
            if ok and count:
                self.downloads += 1
            return ok

    @staticmethod
    def _task_json(task: _Task, base_url: str, duration: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "task_id": task.task_id,
            "task_status": task.status,
            "task_status_msg": _STATUS_MSG[task.status],
            "progress": task.progress,
            "created_at": task.created_at,
            "updated_at": task.updated_at,
        }
        if task.status == "succeed":
            data["task_result"] = {"videos": [{
                "id": task.video_id,
                "url": f"{base_url}/files/{task.task_id}.mp4",
                "duration": duration,
            }]}
        return data


def _ok(data: dict[str, Any]) -> dict[str, Any]:
    return {"code": 0, "message": "SUCCEED", "data": data}


def _not_found() -> dict[str, Any]:
    return {"code": 1201, "message": "task not found"}


# ---------------------------------------------------------------------------------------
# HTTP


_RE_TASK = re.compile(r"^/v1/videos/([A-Za-z0-9_.\-]+)$")
_RE_CANCEL = re.compile(r"^/v1/videos/([A-Za-z0-9_.\-]+)/cancel$")
_RE_FILE = re.compile(r"^/files/([A-Za-z0-9_.\-]+)\.mp4$")
_RE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    # Set by FakeProvider before serving.
    state: _State
    api_key: str | None
    mp4: bytes
    duration: str
    base_url: str

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-response (timeouts, cancelled tests) are normal here.
        if os.environ.get("FAKE_PROVIDER_DEBUG"):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-provider/1.0"
    sys_version = ""
    timeout = 120  # an idle keep-alive connection is closed after this many seconds
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if os.environ.get("FAKE_PROVIDER_DEBUG"):
            super().log_message(format, *args)

    # --- plumbing ---

    def _read_body(self) -> bytes | None:
        """Reads the whole request body (so keep-alive stays in sync); None if malformed."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    return None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            return None
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes, content_type: str,
              extra: dict[str, str] | None = None, head_only: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head_only and body:
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, extra: dict[str, str] | None = None,
              v1: bool = False) -> None:
        if v1:
            self.server.state.count_status(status)
        self._send(status, json.dumps(obj).encode(), "application/json", extra)

    # --- methods ---

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        body = self._read_body()
        path = self.path.split("?", 1)[0]
        if body is None:
            self._json(400, {"code": 1001, "message": "malformed request body framing"})
            return
        if path.startswith("/v1/"):
            self._v1(method, path, body)
        elif path.startswith("/files/"):
            self._file(method, path)
        elif path == "/_control":
            self._control(method, body)
        elif path == "/_stats" and method == "GET":
            self._json(200, self.server.state.stats())
        elif path == "/_reset" and method == "POST":
            self.server.state.reset()
            self._json(200, {"ok": True, "knobs": self.server.state.get_knobs()})
        else:
            self._json(404, {"code": 1200, "message": f"no route for {method} {path}"})

    def _control(self, method: str, body: bytes) -> None:
        state = self.server.state
        if method == "GET":
            self._json(200, state.get_knobs())
            return
        if method != "POST":
            self._json(405, {"code": 1001, "message": "use GET or POST"})
            return
        try:
            updates = json.loads(body) if body.strip() else {}
            if not isinstance(updates, dict):
                raise ValueError("body must be a JSON object")
            self._json(200, state.control(updates))
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            self._json(400, {"code": 1001, "message": f"bad /_control request: {e}"})

    def _file(self, method: str, path: str) -> None:
        m = _RE_FILE.match(path)
        head = method == "HEAD"
        if method not in ("GET", "HEAD") or m is None or not self.server.state.can_download(
                m.group(1), count=not head):
            self._send(404, b"not found\n", "text/plain", head_only=head)
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
                else:  # suffix range: the last N bytes
                    start, end = max(0, total - int(r.group(2))), total - 1
                if start >= total or start > end:
                    self._send(416, b"", "video/mp4",
                               {"Content-Range": f"bytes */{total}"}, head_only=head)
                    return
                self._send(206, data[start:end + 1], "video/mp4",
                           {"Content-Range": f"bytes {start}-{end}/{total}",
                            "Accept-Ranges": "bytes"}, head_only=head)
                return
        self._send(200, data, "video/mp4", {"Accept-Ranges": "bytes"}, head_only=head)

    def _v1(self, method: str, path: str, body: bytes) -> None:
        srv = self.server
        state = srv.state
        latency = state.count_request()
        if latency > 0:
            time.sleep(latency)

        if srv.api_key is not None:
            if self.headers.get("Authorization", "") != f"Bearer {srv.api_key}":
                self._json(401, {"code": 1000, "message": "authentication failed"}, v1=True)
                return

        fault = state.pick_fault()
        if fault is not None:
            kind, retry_after = fault
            if kind == "429":
                self._json(429, {"code": 1302, "message": "rate limit exceeded"},
                           {"Retry-After": str(retry_after)}, v1=True)
            elif kind == "500":
                self._json(500, {"code": 5000, "message": "internal server error"}, v1=True)
            else:
                state.count_status(200)
                self._send(200, b"<html>oops</html>", "text/html")
            return

        if path == "/v1/videos/text-to-video":
            if method != "POST":
                self._json(405, {"code": 1001, "message": "use POST"}, v1=True)
                return
            try:
                req = json.loads(body)
            except ValueError:
                self._json(400, {"code": 1001, "message": "request body is not valid JSON"}, v1=True)
                return
            if not isinstance(req, dict):
                self._json(400, {"code": 1001, "message": "request body must be a JSON object"}, v1=True)
                return
            prompt = req.get("prompt")
            if not isinstance(prompt, str) or prompt.strip() == "":
                self._json(400, {"code": 1001, "message": "prompt is required"}, v1=True)
                return
            status, obj = state.submit(req)
            self._json(status, obj, v1=True)
            return

        m = _RE_CANCEL.match(path)
        if m is not None:
            if method != "POST":
                self._json(405, {"code": 1001, "message": "use POST"}, v1=True)
                return
            status, obj = state.cancel(m.group(1))
            self._json(status, obj, v1=True)
            return

        m = _RE_TASK.match(path)
        if m is not None:
            if method != "GET":
                self._json(405, {"code": 1001, "message": "use GET"}, v1=True)
                return
            status, obj = state.poll(m.group(1), srv.base_url, srv.duration)
            self._json(status, obj, v1=True)
            return

        self._json(404, {"code": 1200, "message": f"no route for {method} {path}"}, v1=True)


# ---------------------------------------------------------------------------------------
# Public API


class FakeProvider:
    """The fake provider, in process: start() serves on a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
                 mp4_path: str | None = None) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.mp4_path = mp4_path
        self._state = _State()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: str | None = None

    # --- lifecycle ---

    def start(self) -> "FakeProvider":
        if self._server is not None:
            raise FakeProviderError("already started")
        path = self.mp4_path
        try:
            if path is None:
                self._tmpdir = tempfile.mkdtemp(prefix="fake-provider-")
                path = os.path.join(self._tmpdir, "video.mp4")
                make_test_mp4(path)
            try:
                with open(path, "rb") as f:
                    mp4 = f.read()
            except OSError as e:
                raise FakeProviderError(f"cannot read MP4 {path}: {e}") from e
            if not mp4:
                raise FakeProviderError(f"MP4 {path} is empty")
            duration = _probe_duration(path)
            server = _Server((self.host, self.port), _Handler)
        except BaseException:
            self._cleanup_tmp()
            raise
        server.state = self._state
        server.api_key = self.api_key
        server.mp4 = mp4
        server.duration = duration
        self.port = server.server_address[1]
        server.base_url = self.url
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="fake-provider", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._cleanup_tmp()

    def _cleanup_tmp(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> "FakeProvider":
        return self.start() if self._server is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- info and steering (direct, no HTTP round trip) ---

    @property
    def url(self) -> str:
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def control(self, **knobs: Any) -> dict[str, Any]:
        """Sets any subset of the knobs; returns the whole knob set. ValueError on bad input."""
        return self._state.control(knobs)

    def knobs(self) -> dict[str, Any]:
        return self._state.get_knobs()

    def stats(self) -> dict[str, Any]:
        return self._state.stats()

    def reset(self) -> None:
        self._state.reset()


# ---------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fake Kling-style text-to-video provider for Reel's tests.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    ap.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1")
    ap.add_argument("--mp4", default=None, help="serve this MP4 instead of making one with ffmpeg")
    ap.add_argument("--no-exit-with-parent", dest="exit_with_parent", action="store_false",
                    help="keep serving if the parent process dies (default: exit when orphaned)")
    args = ap.parse_args(argv)
    parent = os.getppid()

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    fp = FakeProvider(args.host, args.port, api_key=args.api_key, mp4_path=args.mp4)
    try:
        fp.start()
    except FakeProviderError as e:
        print(f"fake-provider: {e}", file=sys.stderr, flush=True)
        return 2
    except OSError as e:
        print(f"fake-provider: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr, flush=True)
        return 2
    try:
        try:
            print(f"fake-provider listening on {fp.url}", flush=True)
        except BrokenPipeError:
            pass
        # Also stop when orphaned: if whoever started us dies without signalling us (a test
        # runner that crashed or was killed, or a wrapper shell that got the SIGTERM instead
        # of us), the fake must not live on holding its port.
        while not stop.wait(0.2):
            if args.exit_with_parent and os.getppid() != parent:
                break
    finally:
        fp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
