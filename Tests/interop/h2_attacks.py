"""A raw HTTP/2 client for the hostile-input tests (test_hostile.py).

It writes frames with `hyperframe` and header blocks with `hpack`, so it can send what a
well-behaved library (h2 included) refuses to: malformed headers, CONTINUATION floods,
windows that overflow, streams past the peer's limit, lies in the gRPC framing. It reads
the server's frames back (decoding every header block, so HPACK state stays in step),
acknowledges SETTINGS and PING, optionally replenishes flow-control windows, and records
what a test checks: per-stream headers, trailers, data and RST_STREAM codes, the GOAWAY,
and whether the server closed the socket.

Header blocks are encoded with a fresh encoder using never-indexed literals, so they never
touch the server's HPACK dynamic table: one encoded block can be sent any number of times.

Also here: bystanders (well-behaved grpcio clients that keep calling while a test abuses
the server), the "server is still fine" check, and the server's RSS.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import grpc
import hpack
from h2.errors import ErrorCodes
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame)

import reel_interop as ri
from reel_interop import pb

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
JOBS = "/reel.v1.JobService/"
SCENES = "/reel.v1.SceneService/"

# gRPC status codes (numbers on the wire).
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND = 0, 1, 2, 3, 4, 5
ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION = 6, 7, 8, 9
ABORTED, OUT_OF_RANGE, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 10, 11, 12, 13, 14


def code_name(c) -> str:
    if c is None:
        return "None"
    for s in grpc.StatusCode:
        if s.value[0] == c:
            return s.name
    return str(c)


def h2_error_name(c) -> str:
    try:
        return ErrorCodes(c).name
    except ValueError:
        return f"0x{c:x}"


# --------------------------------------------------------------------------- encoding


def header_block(headers) -> bytes:
    """An HPACK block of never-indexed literals (static-table names where they exist).
    Names are sent exactly as given: uppercase, empty, or pseudo-headers in odd places."""
    enc = hpack.Encoder()
    return enc.encode([hpack.NeverIndexedHeaderTuple(n, v) for n, v in headers], huffman=False)


def grpc_headers(method_name: str, *, path: str | None = None, content_type="application/grpc",
                 method="POST", extra=(), drop=()):
    h = [(":method", method), (":scheme", "http"),
         (":path", path if path is not None else JOBS + method_name),
         (":authority", "127.0.0.1"), ("content-type", content_type), ("te", "trailers"),
         *extra]
    return [(n, v) for n, v in h if n not in drop]


def grpc_message(payload: bytes, *, compressed: bool = False, declared: int | None = None) -> bytes:
    """The 5-byte gRPC prefix (flag, big-endian length) and the payload. `declared` lies
    about the length."""
    n = len(payload) if declared is None else declared
    return bytes([1 if compressed else 0]) + struct.pack(">I", n) + payload


# --------------------------------------------------------------------------- the client


@dataclass
class Stream:
    id: int
    headers: list | None = None        # the first header block received
    trailers: list | None = None       # a second header block (trailers)
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False                # END_STREAM received
    rst: int | None = None             # RST_STREAM error code received

    def header(self, name: str):
        for block in (self.trailers, self.headers):
            for n, v in block or ():
                if n == name:
                    return v
        return None

    @property
    def status(self) -> int | None:
        """The HTTP :status."""
        v = self.header(":status")
        return int(v) if v is not None else None

    @property
    def grpc_status(self) -> int | None:
        v = self.header("grpc-status")
        return int(v) if v is not None else None

    @property
    def grpc_message(self) -> str:
        return self.header("grpc-message") or ""

    @property
    def done(self) -> bool:
        return self.ended or self.rst is not None

    def messages(self) -> list[bytes]:
        """The gRPC messages in the response body."""
        out, b = [], bytes(self.data)
        while len(b) >= 5:
            n = struct.unpack(">I", b[1:5])[0]
            if len(b) < 5 + n:
                break
            out.append(b[5:5 + n])
            b = b[5 + n:]
        return out

    def describe(self) -> str:
        parts = [f"stream {self.id}:"]
        if self.headers is not None:
            parts.append(f"headers={self.headers}")
        if self.trailers is not None:
            parts.append(f"trailers={self.trailers}")
        if self.data:
            parts.append(f"data={len(self.data)}B")
        if self.rst is not None:
            parts.append(f"RST_STREAM({h2_error_name(self.rst)})")
        parts.append("ended" if self.ended else "open")
        return " ".join(parts)


class RawH2:
    """One h2c connection driven frame by frame (see the module doc)."""

    def __init__(self, port: int, *, preface: bool = True, settings: dict | None = None,
                 auto_window: bool = True, auto_ack: bool = True, connect_timeout: float = 5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 24
        self.auto_window = auto_window
        self.auto_ack = auto_ack       # answer SETTINGS and PING (off: a test writes every byte)
        self.buf = bytearray()
        self.streams: dict[int, Stream] = {}
        self.server_settings: dict[int, int] = {}
        self.settings_acked = False
        self.goaway: GoAwayFrame | None = None
        self.closed = False            # the server closed (EOF or reset)
        self.close_reason = ""
        self.send_failed = False       # a write hit EPIPE/ECONNRESET
        self.frames_in = 0
        self.bytes_out = 0
        self.frame_counts: dict[str, int] = {}
        self._pending_block: tuple[int, bytearray, bool] | None = None
        self.next_id = 1
        # While a write waits for the socket, read the server's output meanwhile (so neither
        # side deadlocks); a test that wants the server's output to back up turns this off.
        self.read_while_blocked = True
        self.recv_size = 1 << 20       # bytes per read: small values make a slow reader
        if preface:
            self.send(PREFACE)
            s = SettingsFrame(0)
            for k, v in (settings or {}).items():
                s.settings[k] = v
            self.frame(s)

    # -- writing

    def send(self, data: bytes) -> bool:
        """Writes everything (waiting for the socket as needed); False once the server has
        gone (EPIPE / ECONNRESET), which abusive tests expect and record."""
        view = memoryview(data)
        while view:
            if self.send_failed:
                return False
            try:
                n = self.sock.send(view)
                view = view[n:]
                self.bytes_out += n
            except BlockingIOError:
                # Read while we wait, so the server's output can't deadlock us both.
                rd = [self.sock] if self.read_while_blocked else []
                r, w, _ = select.select(rd, [self.sock], [], 1.0)
                if r:
                    self._read_once()
            except (BrokenPipeError, ConnectionResetError, OSError) as e:
                if isinstance(e, OSError) and e.errno not in (errno.EPIPE, errno.ECONNRESET,
                                                              errno.ENOTCONN, errno.EBADF):
                    raise
                self.send_failed = True
                self.close_reason = self.close_reason or f"send: {e}"
                self._drain()
                self.closed = True
                return False
        return True

    def frame(self, f: Frame) -> bool:
        return self.send(f.serialize())

    def new_stream_id(self) -> int:
        sid = self.next_id
        self.next_id += 2
        return sid

    def headers(self, stream_id: int, headers_or_block, *, end_stream: bool = False,
                end_headers: bool = True) -> bool:
        block = headers_or_block if isinstance(headers_or_block, (bytes, bytearray)) \
            else header_block(headers_or_block)
        self.streams.setdefault(stream_id, Stream(stream_id))
        f = HeadersFrame(stream_id, data=bytes(block))
        if end_stream:
            f.flags.add("END_STREAM")
        if end_headers:
            f.flags.add("END_HEADERS")
        return self.frame(f)

    def headers_split(self, stream_id: int, headers, *, end_stream: bool = False,
                      max_frame: int = 16384) -> bool:
        """A header block over HEADERS + CONTINUATION frames of at most max_frame bytes."""
        block = header_block(headers)
        first, rest = block[:max_frame], block[max_frame:]
        ok = self.headers(stream_id, first, end_stream=end_stream, end_headers=not rest)
        while rest and ok:
            chunk, rest = rest[:max_frame], rest[max_frame:]
            ok = self.continuation(stream_id, chunk, end_headers=not rest)
        return ok

    def continuation(self, stream_id: int, data: bytes, *, end_headers: bool = False) -> bool:
        f = ContinuationFrame(stream_id, data=data)
        if end_headers:
            f.flags.add("END_HEADERS")
        return self.frame(f)

    def data(self, stream_id: int, payload: bytes, *, end_stream: bool = False) -> bool:
        """DATA frames of at most 16 KiB (the server's default SETTINGS_MAX_FRAME_SIZE)."""
        if not payload:
            f = DataFrame(stream_id, data=b"")
            if end_stream:
                f.flags.add("END_STREAM")
            return self.frame(f)
        ok = True
        for i in range(0, len(payload), 16384):
            f = DataFrame(stream_id, data=bytes(payload[i:i + 16384]))
            if end_stream and i + 16384 >= len(payload):
                f.flags.add("END_STREAM")
            ok = self.frame(f)
            if not ok:
                break
        return ok

    def rst(self, stream_id: int, code: int = ErrorCodes.CANCEL) -> bool:
        return self.frame(RstStreamFrame(stream_id, error_code=code))

    def window_update(self, stream_id: int, increment: int) -> bool:
        # hyperframe validates the increment (1..2^31-1); a raw frame lets a test go past.
        body = struct.pack(">I", increment & 0xFFFFFFFF)
        return self.send(struct.pack(">I", len(body))[1:] + bytes([0x8, 0]) +
                         struct.pack(">I", stream_id) + body)

    def unary(self, method_name: str, payload: bytes, *, path: str | None = None,
              extra_headers=()) -> int:
        """Starts one complete unary gRPC call; returns its stream id."""
        sid = self.new_stream_id()
        self.headers(sid, grpc_headers(method_name, path=path, extra=extra_headers))
        self.data(sid, grpc_message(payload), end_stream=True)
        return sid

    # -- reading

    def _drain(self):
        """After a failed write: reads whatever the server sent before it closed (a GOAWAY
        may be waiting in our receive buffer)."""
        try:
            while True:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    break
                self.buf += chunk
        except OSError:
            pass
        try:
            self._parse()
        except AssertionError:
            pass

    def _read_once(self) -> bool:
        """Reads what is available without blocking; False at EOF."""
        if self.closed and not self.buf:
            return False
        try:
            chunk = self.sock.recv(self.recv_size)
        except BlockingIOError:
            return True
        except (ConnectionResetError, OSError) as e:
            self.closed = True
            self.close_reason = self.close_reason or f"recv: {e}"
            return False
        if not chunk:
            self.closed = True
            self.close_reason = self.close_reason or "EOF"
            return False
        self.buf += chunk
        self._parse()
        return True

    def _parse(self):
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[0:3], "big")
            if len(self.buf) < 9 + length:
                return
            raw = bytes(self.buf[:9 + length])
            del self.buf[:9 + length]
            try:
                f, _ = Frame.parse_frame_header(memoryview(raw[:9]))
                f.parse_body(memoryview(raw[9:]))
            except HyperframeError as e:
                raise AssertionError(f"the server sent a frame hyperframe can't parse: "
                                     f"{raw[:40].hex()} ({e})")
            self._handle(f)

    def _handle(self, f: Frame):
        self.frames_in += 1
        name = type(f).__name__
        self.frame_counts[name] = self.frame_counts.get(name, 0) + 1
        if isinstance(f, SettingsFrame):
            if "ACK" in f.flags:
                self.settings_acked = True
            else:
                self.server_settings.update(f.settings)
                if not self.auto_ack:
                    return
                ack = SettingsFrame(0)
                ack.flags.add("ACK")
                self.frame(ack)
        elif isinstance(f, PingFrame):
            if "ACK" not in f.flags and self.auto_ack:
                ack = PingFrame(0, opaque_data=f.opaque_data)
                ack.flags.add("ACK")
                self.frame(ack)
        elif isinstance(f, (HeadersFrame, ContinuationFrame)):
            if isinstance(f, HeadersFrame):
                self._pending_block = (f.stream_id, bytearray(f.data), "END_STREAM" in f.flags)
            else:
                assert self._pending_block is not None, "CONTINUATION without HEADERS from server"
                self._pending_block[1].extend(f.data)
            if "END_HEADERS" in f.flags:
                sid, block, end = self._pending_block
                self._pending_block = None
                hdrs = self.decoder.decode(bytes(block), raw=False)
                s = self.streams.setdefault(sid, Stream(sid))
                if s.headers is None:
                    s.headers = hdrs
                else:
                    s.trailers = hdrs
                if end:
                    s.ended = True
        elif isinstance(f, DataFrame):
            s = self.streams.setdefault(f.stream_id, Stream(f.stream_id))
            s.data += f.data
            if "END_STREAM" in f.flags:
                s.ended = True
            if self.auto_window and f.flow_controlled_length:
                self.frame(WindowUpdateFrame(0, window_increment=f.flow_controlled_length))
                if "END_STREAM" not in f.flags:
                    self.frame(WindowUpdateFrame(f.stream_id,
                                                 window_increment=f.flow_controlled_length))
        elif isinstance(f, RstStreamFrame):
            self.streams.setdefault(f.stream_id, Stream(f.stream_id)).rst = f.error_code
        elif isinstance(f, GoAwayFrame):
            self.goaway = f

    def pump(self, timeout: float) -> bool:
        """Waits up to `timeout` for input and handles it; False once the server closed."""
        if self.closed:
            return False
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if r:
            return self._read_once()
        return True

    def wait(self, predicate, timeout: float) -> bool:
        """Pumps until predicate() holds, the server closes, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0 or not self.pump(min(left, 0.2)):
                return predicate()
        return True

    def wait_stream(self, stream_id: int, timeout: float = 10.0) -> Stream:
        self.wait(lambda: self.streams.get(stream_id, Stream(stream_id)).done or
                  self.goaway is not None and stream_id > self.goaway.last_stream_id, timeout)
        return self.streams.setdefault(stream_id, Stream(stream_id))

    def wait_closed(self, timeout: float) -> bool:
        """True when the server closed the connection within `timeout`."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.pump(min(0.2, deadline - time.monotonic()))
        return self.closed

    def wait_goaway_or_close(self, timeout: float) -> bool:
        return self.wait(lambda: self.goaway is not None or self.closed, timeout)

    def ended_by_server(self) -> bool:
        return self.goaway is not None or self.closed

    def describe(self) -> str:
        ga = (f"GOAWAY({h2_error_name(self.goaway.error_code)}, last_stream_id="
              f"{self.goaway.last_stream_id}, debug={bytes(self.goaway.additional_data)[:200]!r})"
              if self.goaway is not None else "no GOAWAY")
        return (f"{ga}; {'closed (' + self.close_reason + ')' if self.closed else 'still open'}; "
                f"frames received: {self.frame_counts}; sent {self.bytes_out} bytes")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def handshake(port: int, **kw) -> RawH2:
    """A RawH2 that has exchanged SETTINGS with the server (both acknowledged)."""
    c = RawH2(port, **kw)
    assert c.wait(lambda: c.settings_acked and c.server_settings, 5.0), (
        f"no SETTINGS exchange with the server within 5 s: {c.describe()}")
    return c


# --------------------------------------------------------------------------- bystanders


class Bystander(threading.Thread):
    """A well-behaved grpcio client on its own connection that reads jobs in a loop (and
    creates one every tenth round) while a test abuses the server; every call must succeed,
    and promptly (5 s per call)."""

    def __init__(self, target: str, name: str = "bystander", pause: float = 0.02,
                 call_timeout: float = 5.0):
        super().__init__(daemon=True, name=name)
        self.target, self.pause, self.call_timeout = target, pause, call_timeout
        self.user = ri.unique(name)
        self.ok = 0
        self.errors: list[str] = []
        self.max_latency = 0.0
        self._halt = threading.Event()

    def run(self):
        with grpc.insecure_channel(self.target,
                                   options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            stub = ri.pb_grpc.JobServiceStub(ch)
            job = None
            n = 0
            while not self._halt.is_set():
                t0 = time.monotonic()
                try:
                    # A job now and then (workers stay free), reads in between.
                    if job is None or n % 10 == 0:
                        job = stub.CreateJob(ri.create_request(self.user), timeout=self.call_timeout)
                    got = stub.GetJob(pb.GetJobRequest(id=job.id), timeout=self.call_timeout)
                    assert got.id == job.id
                    self.ok += 1
                    n += 1
                except grpc.RpcError as e:
                    self.errors.append(f"{time.strftime('%H:%M:%S')} {e.code().name}: "
                                       f"{e.details()}")
                except AssertionError as e:
                    self.errors.append(f"GetJob answered another job: {e}")
                self.max_latency = max(self.max_latency, time.monotonic() - t0)
                self._halt.wait(self.pause)

    def __enter__(self):
        self.start()
        # Let it make its connection and a first call before the abuse starts.
        deadline = time.monotonic() + 10
        while self.ok == 0 and not self.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.ok > 0, f"bystander could not make a first call: {self.errors[:3]}"
        return self

    def __exit__(self, *exc):
        self._halt.set()
        self.join(15)

    def check(self, min_calls: int = 1):
        assert not self.is_alive(), "bystander still running"
        assert not self.errors, (
            f"a well-behaved client's calls failed during the abuse ({len(self.errors)} of "
            f"{len(self.errors) + self.ok}): {self.errors[:5]}")
        assert self.ok >= min_calls, (
            f"the well-behaved client made only {self.ok} calls during the abuse "
            f"(max latency {self.max_latency:.2f}s)")


# --------------------------------------------------------------------------- server checks


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def assert_alive(srv, what: str = ""):
    rc = srv.proc.poll()
    assert rc is None, (f"reeld exited with {rc} {what}\n--- log tail ---\n{srv.log_tail(60)}")


def assert_server_fine(srv, what: str = "after the abuse"):
    """reeld is running, and a stock client on a fresh connection can create and read a job."""
    assert_alive(srv, what)
    with grpc.insecure_channel(srv.target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        stub = ri.pb_grpc.JobServiceStub(ch)
        try:
            job = stub.CreateJob(ri.create_request(ri.unique("after")), timeout=ri.DEFAULT_TIMEOUT)
            got = stub.GetJob(pb.GetJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
        except grpc.RpcError as e:
            raise AssertionError(f"a normal call {what} failed: {e.code().name}: {e.details()}\n"
                                 f"--- log tail ---\n{srv.log_tail(40)}")
    assert got.id == job.id and job.status == pb.JOB_STATUS_QUEUED, ri.describe_job(got)
    assert_alive(srv, what)
