"""The scaffolding the strict fakes share (Tests/fake_kling, Tests/fake_runway, Tests/fake_openai).

Standard library only (Python 3.11+). What is here is the same for every fake: the threaded
HTTP server, the handler plumbing (a bounded request body, JSON and byte answers, every method
to one dispatch, quiet logs unless a debug variable is set), the in-process lifecycle (start and
stop its threads, a context manager, `url`, the served test MP4 in a temp dir), the knob
control/stats/reset wrappers and the command line (`--host`, `--port`, `--no-exit-with-parent`,
one ready line, exit 0 on SIGTERM/SIGINT or when orphaned, exit 2 when it cannot start).
What each fake speaks (paths, auth, validation, error codes) stays in the fake.

A fake finds this module by putting Tests/fake_common on sys.path next to its own directory:

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fake_common"))
    from fake_http import FakeHandler, FakeServer, FakeService, ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeError", "FakeServer", "FakeHandler", "FakeService", "make_test_mp4",
           "add_common_args", "serve_until_stopped"]


class FakeError(RuntimeError):
    """Raised when a fake cannot start (e.g. ffmpeg missing, bad --mp4)."""


# ---------------------------------------------------------------------------------------
# The test video


def make_test_mp4(out_path: str, error: type[Exception] = FakeError, who: str = "the fake") -> None:
    """Writes a 2 s 640x360 test-pattern MP4 with a sine tone (H.264/AAC, yuv420p); raises
    `error` when ffmpeg is missing or fails."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise error(
            f"ffmpeg not found on PATH: {who} needs it to make its test MP4 "
            "(install it with `apt-get install -y ffmpeg`, or pass --mp4 PATH)")
    errors = []
    for vcodec in ("libx264", "mpeg4"):
        cmd = [ffmpeg, "-v", "error", "-y",
               "-f", "lavfi", "-i", "testsrc=size=640x360:rate=25",
               "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
               "-t", "2", "-pix_fmt", "yuv420p", "-c:v", vcodec, "-c:a", "aac",
               "-movflags", "+faststart", "-shortest", out_path]
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode == 0 and os.path.exists(out_path) and os.path.getsize(out_path) > 0:
            return
        errors.append(f"{vcodec}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
    raise error("ffmpeg could not make the test MP4:\n  " + "\n  ".join(errors))


# ---------------------------------------------------------------------------------------
# HTTP


class FakeServer(ThreadingHTTPServer):
    """A threaded server holding the fake's state (and its MP4, when it serves one). Errors of
    a connection (a client that hung up mid-answer) are printed only when the handler's
    `debug_env` variable is set."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    state: Any
    mp4: bytes | None

    def handle_error(self, request: Any, client_address: Any) -> None:
        debug_env = getattr(self.RequestHandlerClass, "debug_env", None)
        if debug_env and os.environ.get(debug_env):
            super().handle_error(request, client_address)


class FakeHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive plumbing; every method goes to `dispatch(method)`, which the fake
    defines. `read_body()` is bounded by `max_body`; `extra_headers()` adds headers to every
    answer (a request id, say)."""

    protocol_version = "HTTP/1.1"
    sys_version = ""
    timeout = 120
    max_body = 16 * 1024 * 1024
    debug_env: str | None = None  # when this variable is set, requests and errors are logged
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.debug_env and os.environ.get(self.debug_env):
            super().log_message(format, *args)

    def read_body(self) -> bytes | None:
        """The whole request body (keeps keep-alive in sync); None if malformed or over
        `max_body` (the connection is then closed after the answer)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
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
                total += size
                if total > self.max_body:
                    self.close_connection = True
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
            if n < 0 or n > self.max_body:
                raise ValueError
        except ValueError:
            self.close_connection = True
            return None
        return self.rfile.read(n) if n else b""

    def extra_headers(self) -> dict[str, str]:
        return {}

    def send_bytes(self, status: int, body: bytes, content_type: str | None = "application/json",
                   extra: dict[str, str] | None = None, head_only: bool = False) -> None:
        """One answer; no Content-Type when content_type is None; HEAD sends no body."""
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in {**self.extra_headers(), **(extra or {})}.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head_only and body:
            self.wfile.write(body)

    def send_json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(obj).encode(), "application/json", extra)

    def drop_connection(self) -> None:
        """Closes the connection with no answer (a response lost on the way)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def control_routes(self, method: str, path: str, body: bytes) -> bool:
        """The test control routes (no auth, never faulted): GET/POST /_control (the knob set;
        POST sets a JSON subset of it, 400 and nothing changed on an unknown knob or a bad
        value), GET /_stats, POST /_reset. False when `path` is none of them."""
        state = self.server.state
        if path == "/_control":
            if method == "GET":
                self.send_json(200, state.get_knobs())
            elif method != "POST":
                self.send_json(405, {"error": "use GET or POST"})
            else:
                try:
                    updates = json.loads(body) if body.strip() else {}
                    if not isinstance(updates, dict):
                        raise ValueError("body must be a JSON object")
                    self.send_json(200, state.control(updates))
                except (ValueError, UnicodeDecodeError) as e:
                    self.send_json(400, {"error": f"bad /_control request: {e}"})
        elif path == "/_stats" and method == "GET":
            self.send_json(200, state.stats())
        elif path == "/_reset" and method == "POST":
            state.reset()
            self.send_json(200, {"ok": True, "knobs": state.get_knobs()})
        else:
            return False
        return True

    def dispatch(self, method: str) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_HEAD(self) -> None:
        self.dispatch("HEAD")

    def do_PUT(self) -> None:
        self.dispatch("PUT")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def do_PATCH(self) -> None:
        self.dispatch("PATCH")


# ---------------------------------------------------------------------------------------
# In process


class FakeService:
    """A fake in process: start() serves on background threads; a context manager too.

    A fake sets `name` ("fake-kling"), `error` (its FakeError subclass), `handler`, and
    `serves_mp4` when it serves a video; it builds `self._state` before calling
    `FakeService.__init__`, hands its own settings to the server in `_configure`, and names
    its extra background threads in `_workers`."""

    name = "fake"
    error: type[FakeError] = FakeError
    handler: type[FakeHandler] = FakeHandler
    serves_mp4 = False
    _state: Any

    def __init__(self, host: str = "127.0.0.1", port: int = 0, mp4_path: str | None = None) -> None:
        self.host = host
        self.port = port
        self.mp4_path = mp4_path
        self._server: FakeServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._tmpdir: str | None = None

    # --- hooks ---

    def _configure(self, server: FakeServer) -> None:
        """Hands the fake's own settings (keys) to the server."""

    def _workers(self) -> list[tuple[str, Callable[..., None], tuple[Any, ...]]]:
        """(name suffix, target, args) of background threads beside the HTTP one."""
        return []

    def _wake_workers(self) -> None:
        """Called on stop after the stop event is set, to wake workers that block elsewhere."""

    # --- lifecycle ---

    def _load_mp4(self) -> bytes:
        path = self.mp4_path
        if path is None:
            self._tmpdir = tempfile.mkdtemp(prefix=self.name + "-")
            path = os.path.join(self._tmpdir, "video.mp4")
            make_test_mp4(path, self.error, self.name)
        try:
            with open(path, "rb") as f:
                mp4 = f.read()
        except OSError as e:
            raise self.error(f"cannot read MP4 {path}: {e}") from e
        if not mp4:
            raise self.error(f"MP4 {path} is empty")
        return mp4

    def start(self):
        if self._server is not None:
            raise self.error("already started")
        try:
            mp4 = self._load_mp4() if self.serves_mp4 else None
            server = FakeServer((self.host, self.port), self.handler)
        except BaseException:
            self._cleanup_tmp()
            raise
        server.state = self._state
        server.mp4 = mp4
        self._configure(server)
        self.port = server.server_address[1]
        if hasattr(self._state, "base_url"):
            self._state.base_url = self.url
        self._server = server
        self._stop.clear()
        self._threads = [threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                          name=f"{self.name}-http", daemon=True)]
        self._threads += [threading.Thread(target=target, args=args, name=f"{self.name}-{suffix}",
                                           daemon=True)
                          for suffix, target, args in self._workers()]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        self._stop.set()
        self._wake_workers()
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []
        self._cleanup_tmp()

    def _cleanup_tmp(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self):
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
# Command line


def add_common_args(ap: argparse.ArgumentParser, mp4: bool = False) -> None:
    """--host, --port (and --mp4 for a fake that serves a video), --no-exit-with-parent."""
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    if mp4:
        ap.add_argument("--mp4", default=None, help="serve this MP4 instead of making one with ffmpeg")
    ap.add_argument("--no-exit-with-parent", dest="exit_with_parent", action="store_false",
                    help="keep serving if the parent process dies (default: exit when orphaned)")


def serve_until_stopped(fake: FakeService, args: argparse.Namespace) -> int:
    """Starts `fake`, prints exactly one line "NAME listening on URL" once ready, serves until
    SIGTERM/SIGINT or (unless --no-exit-with-parent) its parent dies, then stops it: 0. When it
    cannot start: the reason on stderr, 2."""
    parent = os.getppid()
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        fake.start()
    except FakeError as e:
        print(f"{fake.name}: {e}", file=sys.stderr, flush=True)
        return 2
    except OSError as e:
        print(f"{fake.name}: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr, flush=True)
        return 2
    try:
        try:
            print(f"{fake.name} listening on {fake.url}", flush=True)
        except BrokenPipeError:
            pass
        # Stop when orphaned too: a crashed test runner must not leave the fake holding a port.
        while not stop.wait(0.2):
            if args.exit_with_parent and os.getppid() != parent:
                break
    finally:
        fake.stop()
    return 0
