"""Helpers for the HTTP/1.1 side of reeld (issue #8): JSON calls, a Server-Sent Events reader
and a small WebSocket client on a raw socket (so that tests control framing, garbage and
never reading). Standard library only."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import struct
import time
import urllib.parse


class Reply:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self):
        return json.loads(self.body) if self.body else None

    def __repr__(self):
        return f"<HTTP {self.status} {self.body[:300]!r}>"


def call(base_url: str, method: str, path: str, body=None, headers: dict | None = None,
         raw: bytes | None = None, timeout: float = 10.0) -> Reply:
    """One HTTP/1.1 request; `body` is sent as JSON, `raw` as given."""
    u = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    h = dict(headers or {})
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def auth(key: str | None) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


def create_job(base_url: str, user_id: str, text: str | None = None, key: str | None = None, **fields) -> dict:
    body = {"userId": user_id, "sceneId": fields.pop("scene_id", "scene-1"), "type": "JOB_TYPE_SCENE_CREATION",
            "inputText": text or f"A web scene {os.urandom(4).hex()}", **fields}
    r = call(base_url, "POST", "/v1/jobs", body, headers=auth(key))
    assert r.status == 200, r
    return r.json


def wait_status(base_url: str, job_id: str, want=("JOB_STATUS_FINAL_READY",), timeout: float = 60.0,
                key: str | None = None) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        r = call(base_url, "GET", f"/v1/jobs/{job_id}", headers=auth(key))
        assert r.status == 200, r
        last = r.json
        if last["status"] in want:
            return last
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not in {want} after {timeout}s: {last}")


# --------------------------------------------------------------------------- SSE


def sse_events(base_url: str, path: str, headers: dict | None = None, timeout: float = 30.0,
               limit: int = 10_000):
    """Reads a text/event-stream response to its end; returns (status, events) with each event
    a dict of its fields (`id`, `event`, `data` parsed as JSON when it is)."""
    u = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        r = conn.getresponse()
        if r.status != 200:
            return r.status, r.read()
        assert r.getheader("content-type", "").startswith("text/event-stream")
        events, cur = [], {}
        while len(events) < limit:
            line = r.readline()
            if not line:
                break
            line = line.decode().rstrip("\r\n")
            if line == "":
                if "data" in cur:
                    try:
                        cur["data"] = json.loads(cur["data"])
                    except ValueError:
                        pass
                    events.append(cur)
                cur = {}
                continue
            if line.startswith(":"):
                continue
            k, _, v = line.partition(":")
            v = v[1:] if v.startswith(" ") else v
            cur[k] = cur[k] + "\n" + v if k == "data" and k in cur else v
        return 200, events
    finally:
        conn.close()


# --------------------------------------------------------------------------- WebSocket


class WebSocket:
    """A minimal RFC 6455 client: text frames out (masked), frames in."""

    def __init__(self, base_url: str, path: str = "/v1/ws", headers: dict | None = None, timeout: float = 10.0,
                 rcvbuf: int | None = None):
        u = urllib.parse.urlsplit(base_url)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((u.hostname, u.port))
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"{extra}\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed during handshake: {self.buf!r}")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status_line = head.split(b"\r\n")[0].decode()
        if " 101 " not in self.status_line:
            raise ConnectionError(f"no upgrade: {head!r}")
        self.close_code = None

    def send_frame(self, opcode: int, payload: bytes):
        mask = os.urandom(4)
        n = len(payload)
        hdr = bytes([0x80 | opcode])
        if n < 126:
            hdr += bytes([0x80 | n])
        elif n < 65536:
            hdr += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            hdr += bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(hdr + mask + masked)

    def send_text(self, text: str):
        self.send_frame(0x1, text.encode())

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self):
        b0, b1 = self._read(2)
        opcode, n = b0 & 0x0F, b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read(8))[0]
        if b1 & 0x80:
            mask = self._read(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self._read(n)))
        else:
            data = self._read(n)
        return opcode, data

    def recv_json(self, timeout: float = 10.0):
        """The next text message as JSON; None once the server closed (close_code set)."""
        self.sock.settimeout(timeout)
        while True:
            opcode, data = self.recv_frame()
            if opcode == 0x1:
                return json.loads(data)
            if opcode == 0x8:
                self.close_code = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else 1005
                return None
            if opcode == 0x9:  # ping → pong
                self.send_frame(0xA, data)

    def close(self):
        try:
            self.send_frame(0x8, struct.pack(">H", 1000))
        except OSError:
            pass
        self.sock.close()
