"""Hostile input (issue 6, item 3): HTTP/2 abuse, gRPC framing lies, protobuf fuzzing, SQL
metacharacters and invalid UTF-8. Whatever one connection sends, reeld stays up, its memory
stays bounded, and every other client's calls succeed meanwhile.

The abusive side is a raw HTTP/2 client (h2_attacks.RawH2: hyperframe + hpack over a
socket) that writes what a well-behaved library refuses to. After each abuse a test checks
what the abusive connection got (GOAWAY with its code, RST_STREAM, or a gRPC status), that
reeld is still running, and that a stock grpcio client on a fresh connection can create and
read a job; where it means something, a grpcio "bystander" keeps calling during the abuse
and every one of its calls must succeed.

Bounded: loopback only, each test a few seconds (floods stop after ABUSE_SECONDS).
"""

from __future__ import annotations

import os
import re
import socket
import struct
import time
import uuid

import grpc
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import h2_attacks as ha
import reel_interop as ri
from h2_attacks import (ErrorCodes, PingFrame, SettingsFrame, grpc_headers, grpc_message,
                        header_block)
from reel_interop import pb

ABUSE_SECONDS = 5.0          # how long any flood may run
RSS_GROWTH_LIMIT_KB = 200 * 1024
MAX_STREAMS = 4096           # reeld's SETTINGS_MAX_CONCURRENT_STREAMS
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6
MAX_WINDOW = 2 ** 31 - 1
UNKNOWN_UUID = "00000000-0000-4000-8000-000000000000"

SQL_METACHARACTERS = [
    "'; DROP TABLE jobs; --",
    "\"; DROP TABLE job_events; --",
    "' OR '1'='1",
    "%",
    "_",
    "%_%",
    "\\",
    "\\'",
    "\\\\x00",
    "$1",
    "$$; DELETE FROM jobs; $$",
    "E'\\x41'",
    "/* comment */ --",
    "NULL",
    ");",
]


# --------------------------------------------------------------------------- servers


def _module_server(name, bin_dir, database_url, workdir, **kw):
    db_name, url = ri.create_database(database_url)
    srv = ri.ReelServer(name, bin_dir, url, workdir, **kw)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        ri.drop_database(database_url, db_name)


@pytest.fixture(scope="module")
def _hostile(bin_dir, database_url, workdir):
    yield from _module_server("hostile", bin_dir, database_url, workdir,
                              workers=4, sim_stage_ms=20, lease_seconds=3)


@pytest.fixture
def srv(_hostile):
    """The module's reeld (4 workers, 20 ms stages); restarted if an earlier test killed it
    (that test has failed already), so one crash doesn't fail every later test."""
    if _hostile.proc.poll() is not None:
        _hostile.start()
    return _hostile


IDLE_TIMEOUT = 2


@pytest.fixture(scope="module")
def _short_idle(bin_dir, database_url, workdir):
    yield from _module_server("short-idle", bin_dir, database_url, workdir,
                              workers=2, sim_stage_ms=3000, lease_seconds=3,
                              extra_args=("--idle-timeout", str(IDLE_TIMEOUT)))


@pytest.fixture
def idle_srv(_short_idle):
    """reeld with --idle-timeout 2 and 3 s stages (a job runs far longer than the idle timeout)."""
    if _short_idle.proc.poll() is not None:
        _short_idle.start()
    return _short_idle


# --------------------------------------------------------------------------- helpers


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _get_job_body(job_id: str = UNKNOWN_UUID) -> bytes:
    return grpc_message(pb.GetJobRequest(id=job_id).SerializeToString())


def _assert_connection_usable(c: ha.RawH2, what: str):
    """A stream-level error must leave the connection working: a normal call on it gets the
    handler's answer (NOT_FOUND for an unknown id)."""
    assert c.goaway is None and not c.closed, (
        f"{what}: a stream-level problem ended the whole connection: {c.describe()}")
    sid = c.unary("GetJob", pb.GetJobRequest(id=UNKNOWN_UUID).SerializeToString())
    s = c.wait_stream(sid, 10)
    assert s.grpc_status == ha.NOT_FOUND, (
        f"{what}: a normal call on the same connection afterwards: {s.describe()}; "
        f"{c.describe()}")


def _wait_ended(c: ha.RawH2, timeout: float) -> bool:
    """Waits for the server to end the connection: a GOAWAY with an error code counts at
    once (the close follows), otherwise the socket must close."""
    return c.wait(lambda: c.closed or (c.goaway is not None and c.goaway.error_code != 0),
                  timeout)


def _big_job(stub, chars: int = 10_000):
    """A job whose Job message is ~40 KB (10,000 four-byte characters of input text)."""
    return stub.CreateJob(ri.create_request(ri.unique("big"), text="\U0001F600" * chars),
                          timeout=ri.DEFAULT_TIMEOUT)


# =========================================================================== connection preface


BAD_PREFACES = {
    "garbage": b"\x00\xff\x13\x37GARBAGE\r\n" * 16,
    "http1_get": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "http1_post_grpc": (b"POST /reel.v1.JobService/GetJob HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Type: application/grpc\r\nContent-Length: 5\r\n\r\n\x00\x00\x00\x00\x00"),
    "h2c_upgrade": (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"),
    "tls_client_hello": bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) * 5,
    "almost_preface": ha.PREFACE[:-1] + b"X" + SettingsFrame(0).serialize(),
}


@pytest.mark.parametrize("kind", list(BAD_PREFACES))
def test_bad_connection_preface_is_closed(srv, kind):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(BAD_PREFACES[kind])
        got = bytearray()
        deadline = time.monotonic() + 5
        closed = False
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            got += chunk
    assert closed, f"{kind}: the server kept the connection open for 5 s; it sent {bytes(got)[:200]!r}"
    assert b"HTTP/1.1" not in got and b"HTTP/1.0" not in got, (
        f"{kind}: h2c is prior-knowledge only, yet the server answered in HTTP/1: {bytes(got)[:300]!r}")
    ha.assert_server_fine(srv)


def test_preface_then_a_non_settings_frame_is_a_protocol_error(srv):
    c = ha.RawH2(srv.port, preface=False)
    c.send(ha.PREFACE)
    c.data(1, b"hello", end_stream=True)   # the first frame must be SETTINGS
    assert _wait_ended(c, 5), f"no GOAWAY/close: {c.describe()}"
    assert c.goaway is None or c.goaway.error_code == ErrorCodes.PROTOCOL_ERROR, c.describe()
    c.close()
    ha.assert_server_fine(srv)


def test_hundreds_of_bad_connections_leak_no_descriptors(srv):
    """200 connections that send garbage, half a preface, or nothing at all: every one is
    cleaned up (the process's descriptor count comes back) and others are served meanwhile."""
    pid = srv.proc.pid
    ha.assert_server_fine(srv, "before")
    base = _fd_count(pid)
    kinds = [BAD_PREFACES["garbage"], BAD_PREFACES["http1_get"], ha.PREFACE[:12], b""]
    with ha.Bystander(srv.target) as b:
        socks = []
        for i in range(200):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            if kinds[i % 4]:
                s.sendall(kinds[i % 4])
            socks.append(s)
            if len(socks) >= 50:
                for x in socks:
                    x.close()
                socks = []
        for x in socks:
            x.close()
    b.check()
    deadline = time.monotonic() + 10
    while _fd_count(pid) > base + 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _fd_count(pid) <= base + 4, (
        f"reeld holds {_fd_count(pid) - base} more descriptors than before 200 bad "
        f"connections (base {base}): connections leak")
    ha.assert_server_fine(srv)


# =========================================================================== malformed headers


def _without(headers, name):
    return [(n, v) for n, v in headers if n != name]


def _base():
    return grpc_headers("GetJob")


MALFORMED_HEADERS = {
    "missing_path": lambda: _without(_base(), ":path"),
    "missing_method": lambda: _without(_base(), ":method"),
    "missing_scheme": lambda: _without(_base(), ":scheme"),
    "uppercase_name": lambda: _base() + [("X-Upper-Case", "1")],
    "uppercase_content_type": lambda: _without(_base(), "content-type") + [("Content-Type", "application/grpc")],
    "pseudo_after_regular": lambda: _without(_base(), ":authority") + [(":authority", "127.0.0.1")],
    "unknown_pseudo": lambda: _base() + [(":bogus", "1")],
    "response_pseudo_in_request": lambda: _base() + [(":status", "200")],
    "duplicate_path": lambda: _base()[:3] + [(":path", "/reel.v1.JobService/ListJobs")] + _base()[3:],
    "connection_specific": lambda: _base() + [("connection", "keep-alive")],
    "te_not_trailers": lambda: _without(_base(), "te") + [("te", "gzip")],
    "empty_path": lambda: [(n, "" if n == ":path" else v) for n, v in _base()],
    "space_in_name": lambda: _base() + [("x bad", "1")],
    "crlf_in_value": lambda: _base() + [("x-injected", "a\r\nx-evil: 1")],
    "nul_in_value": lambda: _base() + [("x-nul", "a\x00b")],
}


@pytest.mark.parametrize("kind", list(MALFORMED_HEADERS))
def test_malformed_request_headers_are_refused(srv, kind):
    """Headers RFC 9113 §8.2–8.3 calls malformed: the stream is reset (PROTOCOL_ERROR) or the
    connection ended; never handed to a handler."""
    c = ha.handshake(srv.port)
    sid = c.new_stream_id()
    c.headers(sid, MALFORMED_HEADERS[kind]())
    c.data(sid, _get_job_body(), end_stream=True)
    s = c.wait_stream(sid, 5)
    c.pump(0.1)
    refused = s.rst is not None or c.goaway is not None or c.closed
    assert refused, f"{kind}: malformed headers were not refused: {s.describe()}; {c.describe()}"
    assert s.grpc_status is None, f"{kind}: a handler answered a malformed request: {s.describe()}"
    if s.rst is not None:
        assert s.rst == ErrorCodes.PROTOCOL_ERROR, f"{kind}: {s.describe()}"
        _assert_connection_usable(c, kind)
    else:
        assert c.goaway is None or c.goaway.error_code in (
            ErrorCodes.PROTOCOL_ERROR, ErrorCodes.COMPRESSION_ERROR), f"{kind}: {c.describe()}"
    c.close()
    ha.assert_server_fine(srv)


APP_LEVEL_HEADERS = {
    # kind: (headers, check(stream) -> None)
    "get_method": (lambda: [(n, "GET" if n == ":method" else v) for n, v in _base()],
                   lambda s: s.status == 405),
    "text_plain": (lambda: [(n, "text/plain" if n == "content-type" else v) for n, v in _base()],
                   lambda s: s.status == 415),
    "no_content_type": (lambda: _without(_base(), "content-type"), lambda s: s.status == 415),
    "unknown_path": (lambda: grpc_headers("", path="/reel.v1.JobService/DropTables"),
                     lambda s: s.status == 200 and s.grpc_status == ha.UNIMPLEMENTED),
    "dot_dot_path": (lambda: grpc_headers("", path="/reel.v1.JobService/GetJob/../../../etc/passwd"),
                     lambda s: s.status == 200 and s.grpc_status == ha.UNIMPLEMENTED),
    "long_path_60k": (lambda: grpc_headers("", path="/reel.v1.JobService/" + "A" * 60_000),
                      lambda s: s.status == 200 and s.grpc_status == ha.UNIMPLEMENTED),
    "bad_grpc_timeout": (lambda: _base() + [("grpc-timeout", "99999999999999999999H")],
                         lambda s: s.grpc_status not in (None, ha.OK, ha.UNKNOWN)),
    "negative_grpc_timeout": (lambda: _base() + [("grpc-timeout", "-1S")],
                              lambda s: s.grpc_status not in (None, ha.OK, ha.UNKNOWN)),
    "sql_in_metadata": (lambda: _base() + [("x-user", "'; DROP TABLE jobs; --"),
                                           ("authorization", "Bearer ' OR '1'='1")],
                        lambda s: s.grpc_status == ha.NOT_FOUND),
    "200_metadata_entries": (lambda: _base() + [(f"x-m-{i}", "v" * 100) for i in range(200)],
                             lambda s: s.grpc_status == ha.NOT_FOUND),
}


@pytest.mark.parametrize("kind", list(APP_LEVEL_HEADERS))
def test_well_formed_but_wrong_headers_get_an_http_or_grpc_error(srv, kind):
    """Valid HTTP/2, wrong for gRPC: 405 for non-POST, 415 for a wrong content-type,
    UNIMPLEMENTED for an unknown path; odd metadata is just metadata."""
    make, check = APP_LEVEL_HEADERS[kind]
    c = ha.handshake(srv.port)
    sid = c.new_stream_id()
    c.headers_split(sid, make())
    c.data(sid, _get_job_body(), end_stream=True)
    s = c.wait_stream(sid, 10)
    assert s.done and check(s), f"{kind}: {s.describe()}; {c.describe()}"
    _assert_connection_usable(c, kind)
    c.close()
    ha.assert_server_fine(srv)


HEADER_LIST_TOO_BIG = {
    # ~80 KB of header list in ten 8 KB fields: over the advertised 64 KiB.
    "many_fields_80k": lambda: _base() + [(f"x-pad-{i}", "v" * 8000) for i in range(10)],
    # One 100 KB field.
    "one_field_100k": lambda: _base() + [("x-big", "v" * 100_000)],
}


@pytest.mark.parametrize("kind", [
    "many_fields_80k",
    "one_field_100k",
])
def test_header_list_over_64_kib_is_refused(srv, kind):
    c = ha.handshake(srv.port)
    assert c.server_settings.get(SETTINGS_MAX_HEADER_LIST_SIZE) == 65536, c.server_settings
    sid = c.new_stream_id()
    # A valid request for an unknown job: if the headers are accepted the handler answers
    # NOT_FOUND, which is what must not happen.
    c.headers_split(sid, HEADER_LIST_TOO_BIG[kind]())
    c.data(sid, _get_job_body(), end_stream=True)
    s = c.wait_stream(sid, 5)
    refused = (s.rst is not None or c.goaway is not None or c.closed or s.status == 431
               or s.grpc_status == ha.RESOURCE_EXHAUSTED)
    assert refused, f"{kind}: a header list over 64 KiB was accepted: {s.describe()}; {c.describe()}"
    c.close()
    ha.assert_server_fine(srv)


# =========================================================================== CONTINUATION flood


@pytest.mark.parametrize("kind", ["with_header_fields", "empty_frames"])
def test_continuation_flood_ends_the_connection(srv, kind):
    """One HEADERS without END_HEADERS, then CONTINUATION frames for as long as the server
    takes them (at most 10,000 frames, 20 MB, ABUSE_SECONDS): the connection is ended
    (CVE-2024-28182) while other clients are served."""
    block = header_block([("x-a", "b" * 20)]) if kind == "with_header_fields" else b""
    with ha.Bystander(srv.target) as b:
        rss0 = ha.rss_kb(srv.proc.pid)
        c = ha.handshake(srv.port)
        sid = c.new_stream_id()
        c.headers(sid, _base(), end_headers=False)
        sent, t0 = 0, time.monotonic()
        while sent < 10_000 and c.bytes_out < 20e6 and time.monotonic() - t0 < ABUSE_SECONDS:
            if not c.continuation(sid, block):
                break
            sent += 1
            if sent % 50 == 0:
                c.pump(0)
                if c.ended_by_server():
                    break
        ended = _wait_ended(c, 3)
        rss1 = ha.rss_kb(srv.proc.pid)
    b.check()
    assert ended, (f"{kind}: {sent} CONTINUATION frames ({c.bytes_out} bytes) in "
                   f"{time.monotonic() - t0:.1f}s and the connection is still open: {c.describe()}")
    assert sent < 10_000, f"{kind}: the server read 10,000 CONTINUATION frames before ending it"
    assert rss1 - rss0 < RSS_GROWTH_LIMIT_KB, f"RSS grew {rss1 - rss0} kB during the flood"
    c.close()
    ha.assert_server_fine(srv)


# =========================================================================== rapid reset


def _reset_burst(c: ha.RawH2, n: int, deadline: float) -> int:
    block = header_block(_base())
    body = _get_job_body()
    done = 0
    while done < n and time.monotonic() < deadline:
        sid = c.new_stream_id()
        if not (c.headers(sid, block) and c.data(sid, body, end_stream=True)
                and c.rst(sid, ErrorCodes.CANCEL)):
            break
        done += 1
        if done % 250 == 0:
            c.pump(0)
            if c.ended_by_server():
                break
    return done


def test_rapid_reset_flood_on_one_connection(srv):
    """CVE-2023-44487: open a stream (a complete GetJob) and reset it at once, 20,000 times
    in at most ABUSE_SECONDS. reeld stays up, memory bounded, others unaffected; the abusive
    connection may be sent away (nghttp2's reset rate limit)."""
    with ha.Bystander(srv.target) as b:
        rss0 = ha.rss_kb(srv.proc.pid)
        c = ha.handshake(srv.port)
        t0 = time.monotonic()
        n = _reset_burst(c, 20_000, t0 + ABUSE_SECONDS)
        c.wait_goaway_or_close(1)
        rss1 = ha.rss_kb(srv.proc.pid)
        # The flood may be cut short by a GOAWAY within a few hundred ms: give the bystander
        # long enough to show it is being served (a timing floor, not a speed target).
        time.sleep(max(0.0, t0 + 2.0 - time.monotonic()))
    b.check(min_calls=3)
    ha.assert_alive(srv, f"after {n} rapid resets")
    print(f"rapid reset: {n} streams in {time.monotonic() - t0:.2f}s; {c.describe()}")
    if c.goaway is not None:
        assert c.goaway.error_code in (ErrorCodes.ENHANCE_YOUR_CALM, ErrorCodes.INTERNAL_ERROR,
                                       ErrorCodes.PROTOCOL_ERROR, ErrorCodes.NO_ERROR), c.describe()
    else:
        assert n == 20_000 or c.closed, f"the flood stopped early without a GOAWAY: {c.describe()}"
    assert rss1 - rss0 < RSS_GROWTH_LIMIT_KB, f"RSS grew {rss1 - rss0} kB during the flood"
    c.close()
    ha.assert_server_fine(srv)


def test_rapid_reset_spread_over_many_connections(srv):
    """The same flood from fresh connections of 900 resets each (under a per-connection
    limit): 18,000 streams opened and reset; reeld stays up and others are served."""
    with ha.Bystander(srv.target) as b:
        rss0 = ha.rss_kb(srv.proc.pid)
        fds0 = _fd_count(srv.proc.pid)
        t0 = time.monotonic()
        total = 0
        for _ in range(20):
            if time.monotonic() - t0 > ABUSE_SECONDS:
                break
            c = ha.handshake(srv.port)
            total += _reset_burst(c, 900, t0 + ABUSE_SECONDS)
            c.close()
        rss1 = ha.rss_kb(srv.proc.pid)
    b.check(min_calls=3)
    print(f"rapid reset over connections: {total} streams in {time.monotonic() - t0:.2f}s")
    assert total >= 5000, f"only {total} streams were opened and reset"
    assert rss1 - rss0 < RSS_GROWTH_LIMIT_KB, f"RSS grew {rss1 - rss0} kB during the flood"
    deadline = time.monotonic() + 5
    while _fd_count(srv.proc.pid) > fds0 + 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _fd_count(srv.proc.pid) <= fds0 + 4, "connections of the flood were not closed"
    ha.assert_server_fine(srv)


# =========================================================================== concurrency limit


def test_streams_beyond_max_concurrent_streams_are_refused(srv):
    """4,200 request streams opened and left open on one connection: the first 4,096 are
    accepted, the excess refused (RST_STREAM REFUSED_STREAM, or GOAWAY PROTOCOL_ERROR naming
    the last accepted stream), and nothing else breaks."""
    with ha.Bystander(srv.target) as b:
        c = ha.handshake(srv.port)
        assert c.server_settings.get(SETTINGS_MAX_CONCURRENT_STREAMS) == MAX_STREAMS, c.server_settings
        block = header_block(_base())
        ids = []
        for i in range(MAX_STREAMS + 104):
            sid = c.new_stream_id()
            ids.append(sid)
            if not c.headers(sid, block):   # HEADERS only: the request never ends
                break
            if i % 256 == 0:
                c.pump(0)
        excess = ids[MAX_STREAMS:]
        c.wait(lambda: c.ended_by_server() or all(
            c.streams[x].rst is not None for x in excess), 5)
        c.pump(0.2)
    b.check()
    refused_early = [x for x in ids[:MAX_STREAMS] if c.streams[x].rst is not None]
    assert not refused_early, (
        f"streams within the advertised limit were reset: {[(x, ha.h2_error_name(c.streams[x].rst)) for x in refused_early[:5]]}")
    if c.goaway is not None:
        assert c.goaway.error_code in (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.REFUSED_STREAM), c.describe()
        assert c.goaway.last_stream_id >= ids[MAX_STREAMS - 1], (
            f"GOAWAY's last_stream_id {c.goaway.last_stream_id} drops streams within the limit "
            f"(the 4,096th is {ids[MAX_STREAMS - 1]})")
        assert c.goaway.last_stream_id < excess[-1], c.describe()
    else:
        not_refused = [x for x in excess if c.streams[x].rst != ErrorCodes.REFUSED_STREAM]
        assert not not_refused, (f"{len(not_refused)} streams over the limit were not refused: "
                                 f"{c.streams[not_refused[0]].describe()}; {c.describe()}")
    c.close()
    ha.assert_server_fine(srv)


# =========================================================================== flow control


def test_window_update_overflowing_the_connection_window_is_flow_control_error(srv):
    c = ha.handshake(srv.port)
    c.window_update(0, MAX_WINDOW)     # 65,535 + 2^31-1 > 2^31-1
    assert _wait_ended(c, 5), f"no reaction to a connection window overflow: {c.describe()}"
    assert c.goaway is not None and c.goaway.error_code == ErrorCodes.FLOW_CONTROL_ERROR, c.describe()
    assert c.wait_closed(3), f"GOAWAY(FLOW_CONTROL_ERROR) but the connection stays open: {c.describe()}"
    ha.assert_server_fine(srv)


def test_window_update_overflowing_a_stream_window_resets_that_stream(srv):
    c = ha.handshake(srv.port)
    sid = c.new_stream_id()
    c.headers(sid, _base())            # an open request stream
    c.window_update(sid, MAX_WINDOW)
    s = c.wait_stream(sid, 5)
    assert s.rst == ErrorCodes.FLOW_CONTROL_ERROR or (
        c.goaway is not None and c.goaway.error_code == ErrorCodes.FLOW_CONTROL_ERROR), (
        f"stream window overflow: {s.describe()}; {c.describe()}")
    if c.goaway is None:
        _assert_connection_usable(c, "after a stream window overflow")
    c.close()
    ha.assert_server_fine(srv)


@pytest.mark.parametrize("stream_level", [False, True])
def test_window_update_of_zero_is_protocol_error(srv, stream_level):
    c = ha.handshake(srv.port)
    if stream_level:
        sid = c.new_stream_id()
        c.headers(sid, _base())
        c.window_update(sid, 0)
        s = c.wait_stream(sid, 5)
        assert s.rst == ErrorCodes.PROTOCOL_ERROR or (
            c.goaway is not None and c.goaway.error_code == ErrorCodes.PROTOCOL_ERROR), c.describe()
    else:
        c.window_update(0, 0)
        assert _wait_ended(c, 5), c.describe()
        assert c.goaway is not None and c.goaway.error_code == ErrorCodes.PROTOCOL_ERROR, c.describe()
    c.close()
    ha.assert_server_fine(srv)


PROTOCOL_VIOLATIONS = {
    # kind: (send(c), expected GOAWAY codes)
    "data_frame_over_max_frame_size": (
        lambda c: (c.headers(1, _base()),
                   c.send(struct.pack(">I", 20000)[1:] + b"\x00\x00" + struct.pack(">I", 1) + b"\x00" * 20000)),
        {ErrorCodes.FRAME_SIZE_ERROR}),
    "data_on_stream_0": (lambda c: c.send(b"\x00\x00\x05\x00\x00\x00\x00\x00\x00hello"),
                         {ErrorCodes.PROTOCOL_ERROR}),
    "headers_on_stream_0": (lambda c: c.send(
        struct.pack(">I", len(header_block(_base())))[1:] + b"\x01\x04" + b"\x00\x00\x00\x00" + header_block(_base())),
        {ErrorCodes.PROTOCOL_ERROR}),
    "data_on_idle_stream": (lambda c: c.data(7, b"hello"), {ErrorCodes.PROTOCOL_ERROR, ErrorCodes.STREAM_CLOSED}),
    "even_stream_id": (lambda c: c.headers(2, _base()), {ErrorCodes.PROTOCOL_ERROR}),
    "continuation_without_headers": (lambda c: c.continuation(1, header_block(_base()), end_headers=True),
                                     {ErrorCodes.PROTOCOL_ERROR}),
    "settings_bad_length": (lambda c: c.send(b"\x00\x00\x05\x04\x00\x00\x00\x00\x00" + b"\x00" * 5),
                            {ErrorCodes.FRAME_SIZE_ERROR}),
    "settings_initial_window_too_big": (
        lambda c: c.send(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" + struct.pack(">HI", 0x4, 2 ** 31)),
        {ErrorCodes.FLOW_CONTROL_ERROR}),
    "settings_max_frame_size_too_small": (
        lambda c: c.send(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" + struct.pack(">HI", 0x5, 100)),
        {ErrorCodes.PROTOCOL_ERROR}),
    "ping_bad_length": (lambda c: c.send(b"\x00\x00\x07\x06\x00\x00\x00\x00\x00" + b"\x00" * 7),
                        {ErrorCodes.FRAME_SIZE_ERROR}),
    "hpack_garbage": (lambda c: c.headers(1, b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f"),
                      {ErrorCodes.COMPRESSION_ERROR}),
    "hpack_table_index_out_of_range": (lambda c: c.headers(1, b"\xbf\xff\x7f"),
                                       {ErrorCodes.COMPRESSION_ERROR}),
    "push_promise_from_client": (lambda c: c.send(
        struct.pack(">I", 4 + len(header_block(_base())))[1:] + b"\x05\x04" + struct.pack(">I", 1)
        + struct.pack(">I", 2) + header_block(_base())), {ErrorCodes.PROTOCOL_ERROR}),
    "headers_depending_on_itself": (lambda c: c.send(
        struct.pack(">I", 5 + len(header_block(_base())))[1:] + b"\x01\x24" + struct.pack(">I", 1)
        + struct.pack(">IB", 1, 15) + header_block(_base())),
        {ErrorCodes.PROTOCOL_ERROR}),
}


@pytest.mark.parametrize("kind", list(PROTOCOL_VIOLATIONS))
def test_protocol_violations_end_the_connection_with_the_right_code(srv, kind):
    send, codes = PROTOCOL_VIOLATIONS[kind]
    c = ha.handshake(srv.port)
    send(c)
    ended = c.wait(lambda: c.ended_by_server() or any(s.rst is not None for s in c.streams.values()), 5)
    assert ended, f"{kind}: no reaction: {c.describe()}"
    if c.goaway is not None:
        assert c.goaway.error_code in codes, f"{kind}: {c.describe()}"
        assert c.wait_closed(3), f"{kind}: GOAWAY with an error but the connection stays open"
    else:
        rst = {s.id: ha.h2_error_name(s.rst) for s in c.streams.values() if s.rst is not None}
        assert c.closed or all(s.rst in codes for s in c.streams.values() if s.rst is not None), (
            f"{kind}: {rst}; {c.describe()}")
    c.close()
    ha.assert_server_fine(srv)


@pytest.mark.parametrize("kind", ["ping", "settings"])
def test_control_frame_flood_without_reading_is_bounded(srv, kind):
    """PING or SETTINGS frames as fast as possible while never reading the acks: nghttp2
    must not queue acks without bound (it ends the connection), others are served."""
    frame = (PingFrame(0, opaque_data=b"floodme!") if kind == "ping"
             else SettingsFrame(0, settings={SETTINGS_INITIAL_WINDOW_SIZE: 65535})).serialize()
    burst = frame * 2000
    with ha.Bystander(srv.target) as b:
        rss0 = ha.rss_kb(srv.proc.pid)
        c = ha.handshake(srv.port)
        c.read_while_blocked = False
        t0 = time.monotonic()
        sent = 0
        while time.monotonic() - t0 < ABUSE_SECONDS and sent < 2_000_000:
            if not c.send(burst):
                break
            sent += 2000
        rss1 = ha.rss_kb(srv.proc.pid)
        ended = _wait_ended(c, 3)
    b.check()
    print(f"{kind} flood: {sent} frames in {time.monotonic() - t0:.1f}s; {c.describe()}")
    assert ended or c.send_failed, (
        f"{sent} {kind} frames whose acks were never read, and the connection lives on: {c.describe()}")
    assert rss1 - rss0 < RSS_GROWTH_LIMIT_KB, f"RSS grew {rss1 - rss0} kB during the flood"
    c.close()
    ha.assert_server_fine(srv)


# =========================================================================== slow readers


def test_slow_reader_gets_every_response(srv):
    """A client that opens big flow-control windows and reads slowly (8 KB at a time) while
    100 large responses (~40 KB each) are in flight: the server's writes block and resume;
    every response arrives complete, round after round."""
    job = _big_job(srv.stub)
    c = ha.handshake(srv.port)
    c.window_update(0, MAX_WINDOW - 65535)
    c.frame(SettingsFrame(0, settings={SETTINGS_INITIAL_WINDOW_SIZE: MAX_WINDOW}))
    c.auto_window = False
    block, body = header_block(_base()), _get_job_body(job.id)
    for rnd in range(20):
        ids = []
        c.recv_size = 1 << 20
        for _ in range(100):
            sid = c.new_stream_id()
            ids.append(sid)
            c.headers(sid, block)
            c.data(sid, body, end_stream=True)
        c.recv_size = 8192
        done = lambda: all(c.streams[x].ended for x in ids)  # noqa: E731
        deadline, k = time.monotonic() + 3, 0
        while not done() and time.monotonic() < deadline and not c.closed:
            c.pump(0.01)
            k += 1
            if k % 8 == 0:
                c.frame(PingFrame(0, opaque_data=b"sipsip!!"))
        finished = [x for x in ids if c.streams[x].ended]
        assert done(), (
            f"round {rnd}: {len(finished)} of 100 responses complete after 3 s; e.g. "
            f"{c.streams[next(x for x in ids if x not in finished)].describe()}; {c.describe()}")
        for x in ids:
            st_ = c.streams[x]
            assert st_.grpc_status == ha.OK and len(st_.messages()) == 1, st_.describe()
    c.close()
    ha.assert_server_fine(srv)


def test_stalled_watchers_keep_memory_bounded_and_get_everything_later(reeld_factory):
    """A client opens 600 WatchJob streams (30 per job, 20 jobs with ~40 KB snapshots) with
    SETTINGS_INITIAL_WINDOW_SIZE 0, so nothing can be sent to it, while the jobs run to the
    end producing events. The server's memory stays bounded, other clients are served, and
    when the window opens every stream delivers its whole history ending with OK."""
    srv = reeld_factory("slow-reader", workers=4, sim_stage_ms=60)
    jobs = [_big_job(srv.stub) for _ in range(20)]
    rss0 = ha.rss_kb(srv.proc.pid)
    with ha.Bystander(srv.target) as b:
        c = ha.handshake(srv.port, settings={SETTINGS_INITIAL_WINDOW_SIZE: 0}, auto_window=False)
        block = header_block(grpc_headers("WatchJob"))
        streams = {}
        for job in jobs:
            body = grpc_message(pb.WatchJobRequest(id=job.id).SerializeToString())
            for _ in range(30):
                sid = c.new_stream_id()
                c.headers(sid, block)
                c.data(sid, body, end_stream=True)
                streams[sid] = job.id
        # The jobs run to the end while nothing reaches the watcher.
        for job in jobs:
            ri.wait_for_job(srv.stub, job.id, timeout=60)
        c.pump(0.5)
        rss1 = ha.rss_kb(srv.proc.pid)
        assert not c.ended_by_server(), f"the stalled watcher was disconnected: {c.describe()}"
        got_data = [s for s in streams if c.streams[s].data]
        assert not got_data, f"DATA sent into a zero window: {c.streams[got_data[0]].describe()}"
    b.check()
    assert rss1 - rss0 < RSS_GROWTH_LIMIT_KB, (
        f"RSS grew {rss1 - rss0} kB with 600 stalled watchers (from {rss0} kB)")
    # Open the windows the ordinary way (64 KiB, replenished as data arrives).
    c.frame(SettingsFrame(0, settings={SETTINGS_INITIAL_WINDOW_SIZE: 65535}))
    c.auto_window = True
    c.wait(lambda: all(c.streams[s].done for s in streams), 30)
    final = {j.id: ri.wait_for_job(srv.stub, j.id, timeout=5) for j in jobs}
    for sid, job_id in streams.items():
        s = c.streams[sid]
        assert s.ended and s.grpc_status == ha.OK, f"watch of {job_id}: {s.describe()}"
        events = [pb.JobEvent.FromString(m) for m in s.messages()]
        seqs = [e.seq for e in events]
        assert events and events[0].HasField("snapshot"), f"watch of {job_id}: no snapshot first"
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"watch of {job_id}: seqs {seqs}"
        assert seqs[-1] == final[job_id].last_event_seq and ri.is_terminal(events[-1]), (
            f"watch of {job_id} ends at {ri.describe_event(events[-1])}, job is "
            f"{ri.describe_job(final[job_id])}")
    c.close()
    ha.assert_server_fine(srv)


# =========================================================================== idle and slow-loris


def test_idle_connection_gets_goaway_after_the_idle_timeout(idle_srv):
    c = ha.handshake(idle_srv.port)
    t0 = time.monotonic()
    closed = c.wait_closed(IDLE_TIMEOUT + 4)
    took = time.monotonic() - t0
    assert closed, f"an idle connection is still open {took:.1f}s later (--idle-timeout {IDLE_TIMEOUT}): {c.describe()}"
    assert took >= IDLE_TIMEOUT - 0.5, f"closed after {took:.1f}s, before the idle timeout"
    assert c.goaway is not None and c.goaway.error_code == ErrorCodes.NO_ERROR, (
        f"an idle connection should end with GOAWAY(NO_ERROR): {c.describe()}")
    ha.assert_server_fine(idle_srv)


def test_idle_timeout_spares_a_connection_with_a_live_stream(idle_srv):
    """A WatchJob stream on a running job keeps its connection although the client sends
    nothing for longer than the idle timeout."""
    job = idle_srv.stub.CreateJob(ri.create_request(ri.unique("live")), timeout=ri.DEFAULT_TIMEOUT)
    c = ha.handshake(idle_srv.port)
    sid = c.new_stream_id()
    c.headers(sid, grpc_headers("WatchJob"))
    c.data(sid, grpc_message(pb.WatchJobRequest(id=job.id).SerializeToString()), end_stream=True)
    c.wait(lambda: False, IDLE_TIMEOUT + 2.5)
    s = c.streams[sid]
    assert c.goaway is None and not c.closed, (
        f"a connection with an open WatchJob stream was closed as idle: {c.describe()}")
    assert s.headers is not None and not s.done, f"the watch ended early: {s.describe()}"
    c.rst(sid, ErrorCodes.CANCEL)
    c.close()
    ri.cancel_quietly(idle_srv.stub, [job.id])
    ha.assert_server_fine(idle_srv)


def _loris_bytes(pad: int = 400) -> bytes:
    f = ha.HeadersFrame(1, data=header_block(_base() + [("x-pad", "p" * pad)]))
    f.flags.add("END_HEADERS")
    return ha.PREFACE + SettingsFrame(0).serialize() + f.serialize()


def test_slow_loris_connections_do_not_hurt_others(srv):
    """50 connections each dribbling its preface and request headers one byte per 100 ms for
    ABUSE_SECONDS: other clients are served throughout; reeld stays up."""
    conns = [ha.RawH2(srv.port, preface=False, auto_ack=False) for _ in range(50)]
    data = _loris_bytes()
    with ha.Bystander(srv.target) as b:
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < ABUSE_SECONDS and i < len(data):
            for c in conns:
                if not c.closed:
                    c.send(data[i:i + 1])
            i += 1
            time.sleep(0.1)
    b.check(min_calls=10)
    alive = sum(not c.closed for c in conns)
    print(f"slow loris: {i} bytes each over {time.monotonic() - t0:.1f}s; {alive} of 50 still open")
    for c in conns:
        c.close()
    ha.assert_server_fine(srv)


def test_slow_loris_connection_is_closed_after_a_timeout(idle_srv):
    """One byte of request headers every 100 ms: the headers would take ~45 s to complete.
    With --idle-timeout 2 the server must give up on the connection well before that."""
    c = ha.RawH2(idle_srv.port, preface=False, auto_ack=False)
    data = _loris_bytes()
    limit = IDLE_TIMEOUT + 6
    with ha.Bystander(idle_srv.target) as b:
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < limit and i < len(data) and not c.closed:
            c.send(data[i:i + 1])
            i += 1
            c.pump(0.1)
    b.check()
    assert c.closed or c.goaway is not None, (
        f"after {time.monotonic() - t0:.1f}s and {i} of {len(data)} bytes dribbled, the "
        f"connection is still open (--idle-timeout {IDLE_TIMEOUT}): {c.describe()}")
    c.close()
    ha.assert_server_fine(idle_srv)


# =========================================================================== gRPC framing lies


def _valid_get() -> bytes:
    return pb.GetJobRequest(id=UNKNOWN_UUID).SerializeToString()


def _send_two(c, sid, method):
    m = grpc_message(_valid_get() if method == "GetJob"
                     else pb.WatchJobRequest(id=UNKNOWN_UUID).SerializeToString())
    c.data(sid, m + m, end_stream=True)


def _fragmented(c, sid, method):
    for byte in grpc_message(_valid_get()):
        c.data(sid, bytes([byte]))
    c.data(sid, b"", end_stream=True)


ERRORS = {ha.INTERNAL, ha.INVALID_ARGUMENT, ha.UNIMPLEMENTED, ha.RESOURCE_EXHAUSTED}

FRAMING_LIES = {
    # kind: (method, send(c, sid, method), allowed statuses, end the request?)
    "prefix_longer_than_data": ("GetJob", lambda c, sid, m: c.data(
        sid, grpc_message(_valid_get(), declared=len(_valid_get()) + 10), end_stream=True), {ha.INTERNAL}),
    "truncated_3_byte_prefix": ("GetJob", lambda c, sid, m: c.data(sid, b"\x00\x00\x00", end_stream=True),
                                {ha.INTERNAL}),
    "prefix_without_payload": ("GetJob", lambda c, sid, m: c.data(
        sid, grpc_message(b"", declared=20), end_stream=True), {ha.INTERNAL}),
    "prefix_shorter_than_data": ("GetJob", lambda c, sid, m: c.data(
        sid, grpc_message(_valid_get(), declared=len(_valid_get()) - 3), end_stream=True),
        {ha.INTERNAL, ha.INVALID_ARGUMENT, ha.UNIMPLEMENTED}),
    "declares_5_mib_without_sending_it": ("GetJob", lambda c, sid, m: c.data(
        sid, grpc_message(b"\x0a" * 1000, declared=5 * 1024 * 1024)), {ha.RESOURCE_EXHAUSTED}),
    "declares_4_gib": ("GetJob", lambda c, sid, m: c.data(
        sid, grpc_message(b"", declared=0xFFFFFFFF)), {ha.RESOURCE_EXHAUSTED}),
    "two_messages_on_a_unary_call": ("GetJob", _send_two, ERRORS),
    "two_messages_on_a_server_streaming_call": ("WatchJob", _send_two, ERRORS),
    "compressed_flag_without_encoding": ("GetJob", lambda c, sid, m: c.data(
        sid, grpc_message(_valid_get(), compressed=True), end_stream=True), {ha.UNIMPLEMENTED, ha.INTERNAL}),
    "flag_byte_0x80": ("GetJob", lambda c, sid, m: c.data(
        sid, b"\x80" + grpc_message(_valid_get())[1:], end_stream=True), {ha.INTERNAL, ha.UNIMPLEMENTED}),
    "no_message_at_all": ("GetJob", lambda c, sid, m: c.data(sid, b"", end_stream=True), ERRORS),
    "no_message_on_a_server_streaming_call": ("WatchJob", lambda c, sid, m: c.data(sid, b"", end_stream=True),
                                              ERRORS),
    "undecodable_payload": ("GetJob", lambda c, sid, m: c.data(
        sid, grpc_message(b"\xff\xff\xff\xff"), end_stream=True), {ha.INVALID_ARGUMENT}),
    # Control: a valid message cut into 1-byte DATA frames is reassembled and answered.
    "valid_message_in_1_byte_frames": ("GetJob", _fragmented, {ha.NOT_FOUND}),
}


@pytest.mark.parametrize("kind", list(FRAMING_LIES))
def test_grpc_framing_lies_get_a_precise_status(srv, kind):
    """The 5-byte gRPC prefix lies about the data: the call ends with the right status
    (decided from the prefix alone where it can be), the connection stays usable."""
    method, send, allowed = FRAMING_LIES[kind]
    c = ha.handshake(srv.port)
    sid = c.new_stream_id()
    c.headers(sid, grpc_headers(method))
    t0 = time.monotonic()
    send(c, sid, method)
    s = c.wait_stream(sid, 5)
    assert s.done, (f"{kind}: no answer within 5 s (the request stream is "
                    f"{'open' if 'declares' in kind else 'ended'}): {s.describe()}; {c.describe()}")
    assert s.grpc_status in allowed, (
        f"{kind}: grpc-status {ha.code_name(s.grpc_status)} ({s.grpc_message!r}), expected one of "
        f"{sorted(ha.code_name(a) for a in allowed)}; {s.describe()}")
    if "declares" in kind:
        assert time.monotonic() - t0 < 2, "the size limit should be decided from the prefix alone"
        c.rst(sid, ErrorCodes.CANCEL)
    _assert_connection_usable(c, kind)
    c.close()
    ha.assert_server_fine(srv)


# =========================================================================== protobuf fuzzing


REQUESTS = {
    # method: (path, request message, response message)
    "CreateJob": (ha.JOBS + "CreateJob", pb.CreateJobRequest, pb.Job),
    "GetJob": (ha.JOBS + "GetJob", pb.GetJobRequest, pb.Job),
    "CancelJob": (ha.JOBS + "CancelJob", pb.CancelJobRequest, pb.Job),
    "ListJobs": (ha.JOBS + "ListJobs", pb.ListJobsRequest, pb.ListJobsResponse),
    "RetryJob": (ha.JOBS + "RetryJob", pb.RetryJobRequest, pb.Job),
    "WatchJob": (ha.JOBS + "WatchJob", pb.WatchJobRequest, pb.JobEvent),
    "PutSceneBible": (ha.SCENES + "PutSceneBible", pb.PutSceneBibleRequest, pb.Scene),
}

# What a fuzzed request may get: an answer or a precise refusal, never UNKNOWN, INTERNAL,
# UNAVAILABLE, UNIMPLEMENTED, a deadline, or a dropped connection.
FUZZ_ALLOWED = {ha.OK, ha.INVALID_ARGUMENT, ha.NOT_FOUND, ha.FAILED_PRECONDITION,
                ha.ALREADY_EXISTS, ha.OUT_OF_RANGE}


@pytest.fixture(scope="module")
def finished_job_ids(_hostile):
    """Real job ids (terminal) so fuzzed Get/Cancel/Retry/Watch also hit existing jobs."""
    ids = [_hostile.stub.CreateJob(ri.create_request(ri.unique("fuzz-seed")),
                                   timeout=ri.DEFAULT_TIMEOUT).id for _ in range(3)]
    for i in ids:
        ri.wait_for_job(_hostile.stub, i, timeout=60)
    return ids


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


@st.composite
def _protoish_bytes(draw):
    """Random sequences of protobuf fields: plausible tags with every wire type, varints of
    any size, and length-delimited runs whose length may lie."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 8))):
        field = draw(st.one_of(st.integers(1, 12), st.integers(0, 2 ** 29 - 1)))
        wt = draw(st.integers(0, 7))
        out += _varint(field << 3 | wt)
        if wt == 0:
            out += _varint(draw(st.integers(0, 2 ** 64 - 1)))
        elif wt == 1:
            out += draw(st.binary(min_size=8, max_size=8))
        elif wt == 2:
            payload = draw(st.one_of(st.binary(max_size=64),
                                     st.text(max_size=32).map(lambda s: s.encode()),
                                     _protoish_bytes()))
            length = draw(st.one_of(st.just(len(payload)), st.integers(0, 2 ** 32)))
            out += _varint(length) + payload
        elif wt == 5:
            out += draw(st.binary(min_size=4, max_size=4))
        else:
            out += draw(st.binary(max_size=8))
    return bytes(out)


def _strings(existing_ids):
    return st.one_of(
        st.text(max_size=40),
        st.sampled_from(SQL_METACHARACTERS),
        st.from_regex(r"[A-Za-z0-9_.-]{1,130}", fullmatch=True),
        st.uuids().map(str),
        st.sampled_from(existing_ids),
        st.text(min_size=100, max_size=300),
        st.sampled_from(["", " ", "x" * 10_001, "\U0001F600" * 129, "a\x00b"]),
    )


_INT_EDGES = [0, 1, -1, 20, 21, 500, 501, 600, 601, 2 ** 31 - 1, -2 ** 31]


def _field_strategy(f, existing_ids, depth):
    FD = f.__class__
    if f.type == FD.TYPE_MESSAGE:
        if f.message_type.GetOptions().map_entry:
            return st.dictionaries(_strings(existing_ids), _strings(existing_ids), max_size=6)
        if depth >= 3:
            return st.none()
        inner = _message_plan(f.message_type, existing_ids, depth + 1)
        return st.lists(inner, max_size=4) if f.is_repeated else inner
    if f.type == FD.TYPE_STRING:
        base = _strings(existing_ids)
    elif f.type in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        base = st.one_of(st.sampled_from(_INT_EDGES), st.integers(-2 ** 31, 2 ** 31 - 1))
    elif f.type in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        base = st.one_of(st.sampled_from([0, 1, -1, 2 ** 63 - 1, -2 ** 63]),
                         st.integers(-2 ** 63, 2 ** 63 - 1))
    elif f.type == FD.TYPE_BOOL:
        base = st.booleans()
    elif f.type == FD.TYPE_DOUBLE:
        base = st.floats()
    elif f.type == FD.TYPE_ENUM:
        base = st.one_of(st.sampled_from([v.number for v in f.enum_type.values]),
                         st.integers(-2 ** 31, 2 ** 31 - 1))
    else:
        raise AssertionError(f"no strategy for field {f.full_name} type {f.type}")
    return st.lists(base, max_size=5) if f.is_repeated else base


def _message_plan(descriptor, existing_ids, depth=0):
    """A strategy for a dict {field: value} covering every field of `descriptor`."""
    return st.fixed_dictionaries({}, optional={
        f.name: _field_strategy(f, existing_ids, depth) for f in descriptor.fields})


def _fill(msg, plan):
    for name, value in plan.items():
        f = msg.DESCRIPTOR.fields_by_name[name]
        if value is None:
            continue
        if f.type == f.TYPE_MESSAGE:
            if f.message_type.GetOptions().map_entry:
                getattr(msg, name).update(value)
            elif f.is_repeated:
                for v in value:
                    _fill(getattr(msg, name).add(), v)
            else:
                _fill(getattr(msg, name), value)
                getattr(msg, name).SetInParent()
        elif f.is_repeated:
            getattr(msg, name).extend(value)
        else:
            setattr(msg, name, value)
    return msg


def _fuzz_settings():
    return settings(max_examples=200, deadline=None, database=None, print_blob=True,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck))


class _Fuzzer:
    """Sends fuzzed requests on one raw connection, which must survive them all."""

    def __init__(self, srv, method):
        self.srv = srv
        self.method = method
        self.path, self.req_type, self.resp_type = REQUESTS[method]
        self.c = ha.handshake(srv.port)
        self.codes: dict[str, int] = {}
        self.server_seconds = 0.0
        self.started = time.monotonic()
        self.block = header_block(grpc_headers("", path=self.path))

    def call(self, payload: bytes):
        t_call = time.monotonic()
        c = self.c
        assert not c.ended_by_server(), (
            f"the fuzzing connection was ended by an earlier request: {c.describe()}\n"
            f"{self.srv.log_tail(40)}")
        sid = c.new_stream_id()
        c.headers(sid, self.block)
        c.data(sid, grpc_message(payload), end_stream=True)
        s = c.wait_stream(sid, 10)
        what = f"{self.method} with payload {payload[:300].hex()} ({len(payload)} bytes)"
        ha.assert_alive(self.srv, f"after {what}")
        assert not c.ended_by_server(), f"{what} ended the connection: {c.describe()}"
        assert s.done, f"{what}: no answer in 10 s: {s.describe()}"
        assert s.rst is None, f"{what}: stream reset: {s.describe()}"
        code = s.grpc_status
        assert code in FUZZ_ALLOWED, (
            f"{what}: grpc-status {ha.code_name(code)} {s.grpc_message!r}; {s.describe()}")
        if code == ha.OK:
            msgs = s.messages()
            # A watch from past the last event of a finished job is OK with no events.
            assert msgs or self.method == "WatchJob", f"{what}: OK without a response message"
            for m in msgs:
                try:
                    self.resp_type.FromString(m)
                except Exception as e:  # noqa: BLE001 - any decode failure is the finding
                    raise AssertionError(f"{what}: the response does not decode as "
                                         f"{self.resp_type.DESCRIPTOR.name}: {e}; {m[:200]!r}")
        self.codes[ha.code_name(code)] = self.codes.get(ha.code_name(code), 0) + 1
        del c.streams[sid]
        self.server_seconds += time.monotonic() - t_call

    def finish(self):
        print(f"{self.method}: {sum(self.codes.values())} fuzzed requests in "
              f"{time.monotonic() - self.started:.1f}s ({self.server_seconds:.1f}s waiting for "
              f"answers): {self.codes}")
        assert not self.c.ended_by_server(), self.c.describe()
        self.c.close()
        ha.assert_server_fine(self.srv)


@pytest.mark.parametrize("method", list(REQUESTS))
def test_fuzz_random_bytes(srv, method):
    """Random bytes and random protobuf-shaped bytes (lying lengths, every wire type) as the
    request message: always a precise gRPC status, never a dropped connection."""
    fz = _Fuzzer(srv, method)

    @_fuzz_settings()
    @given(st.one_of(st.binary(max_size=512), _protoish_bytes()))
    def run(payload):
        fz.call(payload)

    run()
    fz.finish()


def _valid_baseline(method, existing_ids):
    """A request of `method` that passes validation, for fuzzed values to be laid over."""
    if method == "CreateJob":
        return {"user_id": "fuzz-user", "scene_id": "fuzz-scene", "type": 1, "input_text": "hello"}
    if method == "PutSceneBible":
        return {"scene_id": "fuzz-scene", "bible": {"characters": [{"name": "Ann"}]}}
    if method == "ListJobs":
        return {}
    return {"id": existing_ids[0]}


@pytest.mark.parametrize("method", list(REQUESTS))
def test_fuzz_valid_shaped_messages(srv, method, finished_job_ids):
    """Well-formed messages of the request type with hostile values in every field (edge
    integers, unknown enum numbers, SQL, long and odd strings, real and unknown ids): an
    answer or INVALID_ARGUMENT / NOT_FOUND / FAILED_PRECONDITION, never UNKNOWN or INTERNAL;
    OK answers decode as the response type."""
    fz = _Fuzzer(srv, method)
    req_type = REQUESTS[method][1]

    plan = _message_plan(req_type.DESCRIPTOR, finished_job_ids)
    base = _valid_baseline(method, finished_job_ids)

    @_fuzz_settings()
    @given(st.one_of(plan, plan.map(lambda over: {**base, **over})))
    def run(plan):
        fz.call(_fill(req_type(), plan).SerializeToString())

    run()
    fz.finish()


# =========================================================================== SQL and encodings


def _raw_call(channel, path: str, payload: bytes):
    """One unary call with a hand-made payload; returns (code, details, response bytes)."""
    fn = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    try:
        return grpc.StatusCode.OK, "", fn(payload, timeout=ri.DEFAULT_TIMEOUT)
    except grpc.RpcError as e:
        return e.code(), e.details(), None


def test_sql_metacharacters_are_stored_exactly_and_never_interpreted(srv):
    stub = srv.stub
    user = ri.unique("sql")
    created = []
    for i, meta in enumerate(SQL_METACHARACTERS):
        text = f"scene {i}: {meta} and again {meta}"
        req = ri.create_request(user, scene_id="scene-sql", text=text, idempotency_key=f"k{i}-{meta}",
                                config=pb.JobConfig(model=meta, style_overrides={meta: meta + "v"}))
        job = stub.CreateJob(req, timeout=ri.DEFAULT_TIMEOUT)
        got = stub.GetJob(pb.GetJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
        for j, where in ((job, "CreateJob"), (got, "GetJob")):
            assert (j.input_text, j.idempotency_key, j.config.model, dict(j.config.style_overrides)) == (
                text, f"k{i}-{meta}", meta, {meta: meta + "v"}), f"{where} altered {meta!r}: {ri.describe_job(j)}"
        created.append(job.id)
    listed = stub.ListJobs(pb.ListJobsRequest(user_id=user, page_size=500), timeout=ri.DEFAULT_TIMEOUT)
    assert sorted(j.id for j in listed.jobs) == sorted(created)
    by_id = {j.id: j for j in listed.jobs}
    for i, (jid, meta) in enumerate(zip(created, SQL_METACHARACTERS)):
        assert by_id[jid].input_text == f"scene {i}: {meta} and again {meta}"

    # Identifiers with SQL in them are refused, naming the field.
    for meta in SQL_METACHARACTERS:
        if re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", meta):
            continue      # a legal identifier ("_", "NULL")
        for field in ("user_id", "scene_id"):
            kw = {"user_id": user, "scene_id": "s"}
            kw[field] = meta
            err = ri.rpc_error(stub.CreateJob, ri.create_request(kw["user_id"], scene_id=kw["scene_id"]),
                               timeout=ri.DEFAULT_TIMEOUT)
            ri.assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, field, f"CreateJob {field}={meta!r}")
            err = ri.rpc_error(stub.ListJobs, pb.ListJobsRequest(**{field: meta}), timeout=ri.DEFAULT_TIMEOUT)
            ri.assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, field, f"ListJobs {field}={meta!r}")
        for rpc, req in ((stub.GetJob, pb.GetJobRequest(id=meta)),
                         (stub.CancelJob, pb.CancelJobRequest(id=meta)),
                         (stub.RetryJob, pb.RetryJobRequest(id=meta))):
            err = ri.rpc_error(rpc, req, timeout=ri.DEFAULT_TIMEOUT)
            ri.assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, None, f"id={meta!r}")
        err = ri.rpc_error(ri.watch, stub, meta)
        ri.assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, None, f"WatchJob id={meta!r}")
        code, details, _ = _raw_call(srv.channel, ha.JOBS + "ListJobs",
                                     pb.ListJobsRequest(user_id=user, page_token=meta).SerializeToString())
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OK), (
            f"ListJobs page_token={meta!r}: {code.name} {details}")

    # LIKE wildcards are not wildcards: '_' and '%' match only themselves.
    look_alike = "likeXuser-" + uuid.uuid4().hex[:6]
    stub.CreateJob(ri.create_request(look_alike, scene_id="sceneXa"), timeout=ri.DEFAULT_TIMEOUT)
    for q in ({"user_id": look_alike.replace("X", "_")}, {"user_id": "_"},
              {"scene_id": "scene_a"}, {"user_id": look_alike, "scene_id": "scene_a"}):
        r = stub.ListJobs(pb.ListJobsRequest(page_size=500, **q), timeout=ri.DEFAULT_TIMEOUT)
        (field, value), = [(k, v) for k, v in q.items() if "_" in v]
        stray = [(j.user_id, j.scene_id) for j in r.jobs if getattr(j, field) != value]
        assert not stray, f"ListJobs {q} matched other values: {stray[:5]}"
    first = stub.CreateJob(ri.create_request(user, text="key owner", idempotency_key="abc"),
                           timeout=ri.DEFAULT_TIMEOUT)
    for key in ("a_c", "a%", "%", "ABC", "abc "):
        other = stub.CreateJob(ri.create_request(user, text="key owner", idempotency_key=key),
                               timeout=ri.DEFAULT_TIMEOUT)
        assert other.id != first.id, f"idempotency key {key!r} was matched to key 'abc'"
    again = stub.CreateJob(ri.create_request(user, text="key owner", idempotency_key="abc"),
                           timeout=ri.DEFAULT_TIMEOUT)
    assert again.id == first.id

    # Cancel with a hostile reason; scene bibles with hostile text.
    victim = stub.CreateJob(ri.create_request(user, text="to cancel"), timeout=ri.DEFAULT_TIMEOUT)
    cancelled = stub.CancelJob(pb.CancelJobRequest(id=victim.id, reason=SQL_METACHARACTERS[0]),
                               timeout=ri.DEFAULT_TIMEOUT)
    assert cancelled.id == victim.id
    scenes = ri.pb_grpc.SceneServiceStub(srv.channel)
    scene_id = ri.unique("scene-sql")
    bible = pb.SceneBible(
        characters=[pb.BibleEntity(name=m, aliases=[m + "1", m + "2"], description=m * 3)
                    for m in SQL_METACHARACTERS],
        locations=[pb.BibleEntity(name="loc " + m) for m in SQL_METACHARACTERS],
        style={m: m for m in SQL_METACHARACTERS}, forbidden=SQL_METACHARACTERS)
    put = scenes.PutSceneBible(pb.PutSceneBibleRequest(scene_id=scene_id, bible=bible),
                               timeout=ri.DEFAULT_TIMEOUT)
    got = scenes.GetScene(pb.GetSceneRequest(scene_id=scene_id), timeout=ri.DEFAULT_TIMEOUT)
    for s, where in ((put, "PutSceneBible"), (got, "GetScene")):
        assert s.bible == bible, f"{where} altered the bible: {s.bible}"
    err = ri.rpc_error(scenes.PutSceneBible,
                       pb.PutSceneBibleRequest(scene_id=SQL_METACHARACTERS[0], bible=bible),
                       timeout=ri.DEFAULT_TIMEOUT)
    ri.assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, "scene_id")

    # The tables are intact and the jobs still there.
    assert ri.psql_value(srv.db_url, "SELECT to_regclass('jobs') IS NOT NULL AND "
                                     "to_regclass('job_events') IS NOT NULL") == "t"
    n = int(ri.psql_value(srv.db_url, f"SELECT count(*) FROM jobs WHERE user_id = '{user}'"))
    assert n == len(created) + 1 + 5 + 1, f"{n} jobs of {user} in the table"
    for jid in created:
        stub.GetJob(pb.GetJobRequest(id=jid), timeout=ri.DEFAULT_TIMEOUT)
    ha.assert_server_fine(srv)


BAD_UTF8 = b"a\xff\xc3(\xed\xa0\x80b"   # a stray byte, a bad continuation, a surrogate
MARK = "QQQQQQQQ"                      # as many bytes as BAD_UTF8, replaced in the encoding


def _utf8_cases(job_id: str):
    def create(**over):
        req = ri.create_request("utf8-user", scene_id="utf8-scene", text="text")
        req.config.model = "m"
        req.config.style_overrides["k"] = "v"
        for k, v in over.items():
            if k == "model":
                req.config.model = v
            elif k == "override_key":
                req.config.style_overrides[v] = "v"
            elif k == "override_value":
                req.config.style_overrides["k"] = v
            else:
                setattr(req, k, v)
        return req

    def bible(**over):
        b = pb.SceneBible(characters=[pb.BibleEntity(name="Ann", aliases=["A"], description="d")],
                          locations=[pb.BibleEntity(name="Dock")], style={"palette": "teal"},
                          forbidden=["dragon"])
        if "character_name" in over:
            b.characters[0].name = over["character_name"]
        if "alias" in over:
            b.characters[0].aliases[0] = over["alias"]
        if "description" in over:
            b.characters[0].description = over["description"]
        if "location_name" in over:
            b.locations[0].name = over["location_name"]
        if "style_key" in over:
            b.style[over["style_key"]] = "x"
        if "style_value" in over:
            b.style["palette"] = over["style_value"]
        if "forbidden" in over:
            b.forbidden[0] = over["forbidden"]
        return pb.PutSceneBibleRequest(scene_id=over.get("scene_id", "utf8-scene"), bible=b)

    cases = {}
    for f in ("user_id", "scene_id", "input_text", "idempotency_key", "model", "override_key",
              "override_value"):
        cases[f"CreateJob.{f}"] = (ha.JOBS + "CreateJob", create(**{f: MARK}))
    cases["GetJob.id"] = (ha.JOBS + "GetJob", pb.GetJobRequest(id=MARK))
    cases["CancelJob.id"] = (ha.JOBS + "CancelJob", pb.CancelJobRequest(id=MARK))
    cases["CancelJob.reason"] = (ha.JOBS + "CancelJob", pb.CancelJobRequest(id=job_id, reason=MARK))
    cases["RetryJob.id"] = (ha.JOBS + "RetryJob", pb.RetryJobRequest(id=MARK))
    cases["WatchJob.id"] = (ha.JOBS + "WatchJob", pb.WatchJobRequest(id=MARK))
    for f in ("user_id", "scene_id", "page_token"):
        cases[f"ListJobs.{f}"] = (ha.JOBS + "ListJobs", pb.ListJobsRequest(**{f: MARK}))
    for f in ("scene_id", "character_name", "alias", "description", "location_name", "style_key",
              "style_value", "forbidden"):
        cases[f"PutSceneBible.{f}"] = (ha.SCENES + "PutSceneBible", bible(**{f: MARK}))
    cases["GetScene.scene_id"] = (ha.SCENES + "GetScene", pb.GetSceneRequest(scene_id=MARK))
    return cases


def test_invalid_utf8_in_any_string_field_is_invalid_argument(srv):
    """proto3 strings are UTF-8: a request carrying invalid UTF-8 in any string field does
    not decode, so it is INVALID_ARGUMENT, never stored altered, never INTERNAL."""
    victim = srv.stub.CreateJob(ri.create_request(ri.unique("utf8")), timeout=ri.DEFAULT_TIMEOUT)
    before = int(ri.psql_value(srv.db_url, "SELECT count(*) FROM jobs"))
    wrong = []
    for name, (path, msg) in _utf8_cases(victim.id).items():
        raw = msg.SerializeToString()
        assert raw.count(MARK.encode()) == 1, name
        code, details, _ = _raw_call(srv.channel, path, raw.replace(MARK.encode(), BAD_UTF8))
        ha.assert_alive(srv, f"after invalid UTF-8 in {name}")
        if code != grpc.StatusCode.INVALID_ARGUMENT:
            wrong.append(f"{name}: {code.name} {details!r}")
    after = int(ri.psql_value(srv.db_url, "SELECT count(*) FROM jobs"))
    got = srv.stub.GetJob(pb.GetJobRequest(id=victim.id), timeout=ri.DEFAULT_TIMEOUT)
    assert not wrong, "invalid UTF-8 was not refused:\n  " + "\n  ".join(wrong)
    assert after == before, f"{after - before} jobs were stored from requests with invalid UTF-8"
    assert got.status != pb.JOB_STATUS_CANCELLED, "a cancel with an invalid-UTF-8 reason took effect"
    ha.assert_server_fine(srv)


def test_nul_in_string_fields_is_kept_or_refused_never_truncated(srv):
    stub = srv.stub
    wrong = []
    user = ri.unique("nul")
    for field, value in (("input_text", "before\x00after"), ("idempotency_key", "key\x00tail"),
                         ("model", "model\x00tail")):
        req = ri.create_request(user, text="nul test " + field)
        if field == "model":
            req.config.model = value
        else:
            setattr(req, field, value)
        try:
            job = stub.CreateJob(req, timeout=ri.DEFAULT_TIMEOUT)
            stored = job.config.model if field == "model" else getattr(job, field)
            if stored != value:
                wrong.append(f"CreateJob.{field}={value!r} stored as {stored!r}")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                wrong.append(f"CreateJob.{field}: {e.code().name} {e.details()}")
    for field in ("user_id", "scene_id"):
        kw = {"user_id": user, "scene_id": "scene"}
        kw[field] = kw[field] + "\x00x"
        try:
            job = stub.CreateJob(ri.create_request(kw["user_id"], scene_id=kw["scene_id"]),
                                 timeout=ri.DEFAULT_TIMEOUT)
            wrong.append(f"CreateJob.{field}={kw[field]!r} accepted as {getattr(job, field)!r}")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                wrong.append(f"CreateJob.{field}: {e.code().name} {e.details()}")
    ha.assert_alive(srv)
    assert not wrong, "NUL characters were mishandled:\n  " + "\n  ".join(wrong)
    ha.assert_server_fine(srv)
