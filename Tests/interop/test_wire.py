"""gRPC wire behaviour seen by a stock client (DESIGN §1)."""

import re
import shutil
import subprocess
import time

import grpc
import pytest

import reel_interop as ri
from reel_interop import health_pb2, pb

MIB = ri.MIB


def _raw_unary(channel, path, serializer=None):
    return channel.unary_unary(path, request_serializer=serializer, response_deserializer=None)


def _still_serving(reeld):
    r = reeld.health.Check(health_pb2.HealthCheckRequest(), timeout=ri.DEFAULT_TIMEOUT)
    assert r.status == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(reeld.target,
                               options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        job = ri.pb_grpc.JobServiceStub(ch).CreateJob(ri.create_request(ri.unique("after")),
                                                      timeout=ri.DEFAULT_TIMEOUT)
    assert job.status == pb.JOB_STATUS_QUEUED


def _frame(message_bytes: bytes, compressed: bool = False, declared_len: int | None = None):
    n = len(message_bytes) if declared_len is None else declared_len
    return bytes([1 if compressed else 0]) + n.to_bytes(4, "big") + message_bytes


def _nghttp(target, path, body: bytes, tmp_path, headers=(), timeout=15.0):
    """One raw h2c request with nghttp (prior knowledge); returns (grpc-status, output, seconds)."""
    nghttp = shutil.which("nghttp")
    if nghttp is None:
        pytest.skip("nghttp (apt nghttp2-client) not installed")
    body_file = tmp_path / "body.bin"
    body_file.write_bytes(body)
    hdrs = {":method": "POST", "content-type": "application/grpc", "te": "trailers"}
    for h in headers:
        name, value = h.split(":", 1) if not h.startswith(":") else (":" + h[1:].split(":", 1)[0],
                                                                      h[1:].split(":", 1)[1])
        hdrs[name.strip().lower()] = value.strip()
    cmd = [nghttp, "-v", "-n"]
    for name, value in hdrs.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd += ["-d", str(body_file), f"http://{target}{path}"]
    start = time.monotonic()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise AssertionError(f"no complete answer within {timeout}s to {' '.join(cmd)}\n"
                             f"{_summary(out)}")
    out = r.stdout + r.stderr
    m = re.findall(r"recv \(stream_id=\d+\) grpc-status: (\d+)", out)
    return (int(m[-1]) if m else None), _summary(out), time.monotonic() - start


def _summary(nghttp_output: str) -> str:
    """The received headers/trailers and stream/connection ends from `nghttp -v` output."""
    keep = [ln.strip() for ln in nghttp_output.splitlines()
            if "recv (stream_id=" in ln or "RST_STREAM" in ln or "GOAWAY" in ln
            or "error_code" in ln or ln.startswith("[ERROR]") or "Some requests" in ln]
    return "\n".join(keep[-40:]) or nghttp_output[-2000:]


def test_unknown_method_is_unimplemented(reeld):
    err = ri.rpc_error(_raw_unary(reeld.channel, "/reel.v1.JobService/Nope"), b"",
                       timeout=ri.DEFAULT_TIMEOUT)
    ri.assert_code(err, grpc.StatusCode.UNIMPLEMENTED)


def test_unknown_service_is_unimplemented(reeld):
    err = ri.rpc_error(_raw_unary(reeld.channel, "/reel.v9.Nothing/GetJob"), b"",
                       timeout=ri.DEFAULT_TIMEOUT)
    ri.assert_code(err, grpc.StatusCode.UNIMPLEMENTED)


def test_bytes_that_do_not_decode_are_invalid_argument(reeld):
    call = _raw_unary(reeld.channel, "/reel.v1.JobService/CreateJob",
                      serializer=lambda _: b"\xff\xff\xff")
    err = ri.rpc_error(call, object(), timeout=ri.DEFAULT_TIMEOUT)
    ri.assert_code(err, grpc.StatusCode.INVALID_ARGUMENT)
    _still_serving(reeld)


def test_message_over_4_mib_is_resource_exhausted_and_server_keeps_serving(reeld):
    req = ri.create_request(ri.unique("huge"), text="x" * (5 * MIB))
    err = ri.rpc_error(reeld.stub.CreateJob, req, timeout=30)
    ri.assert_code(err, grpc.StatusCode.RESOURCE_EXHAUSTED)
    _still_serving(reeld)


def test_message_just_under_4_mib_reaches_validation(reeld):
    """Below the transport limit the request is read whole and then fails validation."""
    req = ri.create_request(ri.unique("big"), text="x" * (4 * MIB - 64 * 1024))
    err = ri.rpc_error(reeld.stub.CreateJob, req, timeout=30)
    ri.assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, mentions="input_text")


def test_client_deadline_on_a_long_watch_is_deadline_exceeded(slow_reeld):
    stub = slow_reeld.stub
    job = stub.CreateJob(ri.create_request(ri.unique("deadline")), timeout=ri.DEFAULT_TIMEOUT)
    try:
        start = time.monotonic()
        err = ri.rpc_error(ri.watch, stub, job.id, after_seq=0, timeout=0.3)
        ri.assert_code(err, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert time.monotonic() - start < 5
        _still_serving(slow_reeld)
    finally:
        ri.cancel_quietly(stub, [job.id])


def test_server_honours_grpc_timeout_header(slow_reeld, tmp_path):
    """A raw request whose grpc-timeout the server itself must enforce (no client timer)."""
    stub = slow_reeld.stub
    job = stub.CreateJob(ri.create_request(ri.unique("grpctimeout")), timeout=ri.DEFAULT_TIMEOUT)
    try:
        body = _frame(pb.WatchJobRequest(id=job.id).SerializeToString())
        status, out, secs = _nghttp(slow_reeld.target, "/reel.v1.JobService/WatchJob", body,
                                    tmp_path, headers=["grpc-timeout: 300m"], timeout=15)
        assert status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], (
            f"expected grpc-status 4 after ~0.3 s, got {status} after {secs:.1f}s:\n{out}")
        assert secs < 5, f"DEADLINE_EXCEEDED came {secs:.1f}s after a 300 ms deadline"
    finally:
        ri.cancel_quietly(stub, [job.id])


def test_grpc_timeout_is_enforced_among_many_finished_calls_with_long_deadlines(slow_reeld, tmp_path):
    """Calls that finish before their deadline leave entries the server sweeps out later; a
    short deadline armed after thousands of long ones still fires on time."""
    stub = slow_reeld.stub
    job = stub.CreateJob(ri.create_request(ri.unique("deadline-heap")), timeout=ri.DEFAULT_TIMEOUT)
    try:
        for _ in range(2500):  # each call carries grpc-timeout ~120 s and finishes at once
            stub.GetJob(pb.GetJobRequest(id=job.id), timeout=120)
        body = _frame(pb.WatchJobRequest(id=job.id).SerializeToString())
        status, out, secs = _nghttp(slow_reeld.target, "/reel.v1.JobService/WatchJob", body,
                                    tmp_path, headers=["grpc-timeout: 400m"], timeout=15)
        assert status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], f"got {status} after {secs:.1f}s:\n{out}"
        assert secs < 5, f"DEADLINE_EXCEEDED came {secs:.1f}s after a 400 ms deadline"
        assert stub.GetJob(pb.GetJobRequest(id=job.id), timeout=5).id == job.id
    finally:
        ri.cancel_quietly(stub, [job.id])


def test_content_type_grpc_proto_is_accepted(reeld, tmp_path):
    body = _frame(health_pb2.HealthCheckRequest().SerializeToString())
    status, out, _ = _nghttp(reeld.target, "/grpc.health.v1.Health/Check", body, tmp_path,
                             headers=["content-type: application/grpc+proto"])
    assert status == 0, f"grpc-status {status}:\n{out}"


def test_raw_grpc_framing_round_trips(reeld, tmp_path):
    job = reeld.stub.CreateJob(ri.create_request(ri.unique("raw")), timeout=ri.DEFAULT_TIMEOUT)
    body = _frame(pb.GetJobRequest(id=job.id).SerializeToString())
    status, out, _ = _nghttp(reeld.target, "/reel.v1.JobService/GetJob", body, tmp_path)
    assert status == 0, f"grpc-status {status}:\n{out}"
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", out), out
    assert re.search(r"recv \(stream_id=\d+\) content-type: application/grpc", out), out


def test_message_cut_short_is_internal(reeld, tmp_path):
    msg = pb.GetJobRequest(id="00000000-0000-4000-8000-000000000000").SerializeToString()
    body = _frame(msg[:10], declared_len=len(msg) + 100)
    status, out, _ = _nghttp(reeld.target, "/reel.v1.JobService/GetJob", body, tmp_path)
    assert status == grpc.StatusCode.INTERNAL.value[0], f"grpc-status {status}:\n{out}"
    _still_serving(reeld)


def test_gzip_compressed_request_works_or_is_unimplemented(reeld):
    with grpc.insecure_channel(reeld.target, compression=grpc.Compression.Gzip,
                               options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        stub = ri.pb_grpc.JobServiceStub(ch)
        req = ri.create_request(ri.unique("gzip"), text="compressed " * 200)
        try:
            job = stub.CreateJob(req, timeout=ri.DEFAULT_TIMEOUT)
        except grpc.RpcError as e:
            ri.assert_code(e, grpc.StatusCode.UNIMPLEMENTED, what="gzip CreateJob")
        else:
            assert job.input_text == req.input_text
            got = stub.GetJob(pb.GetJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT)
            assert got.id == job.id
    _still_serving(reeld)


def test_large_responses_are_flow_controlled_to_the_end(reeld):
    """A ListJobs answer of several MB: far past HTTP/2's 64 KiB initial window."""
    stub = reeld.stub
    user = ri.unique("bigresp")
    text = "🎬" * 10_000  # 40,000 bytes each
    futures = [stub.CreateJob.future(ri.create_request(user, text=f"{i} {text}"[:10_000]),
                                     timeout=30) for i in range(60)]
    ids = [f.result().id for f in futures]
    try:
        r = stub.ListJobs(pb.ListJobsRequest(user_id=user, page_size=500), timeout=30)
        assert r.ByteSize() > 2 * MIB, f"response only {r.ByteSize()} bytes"
        assert sorted(j.id for j in r.jobs) == sorted(ids)
        assert all(len(j.input_text) == 10_000 for j in r.jobs)
        # Several such answers at once on one fresh connection share its window.
        with grpc.insecure_channel(reeld.target, options=[
                ("grpc.use_local_subchannel_pool", 1),
                ("grpc.max_receive_message_length", 64 * MIB)]) as ch:
            s2 = ri.pb_grpc.JobServiceStub(ch)
            many = [s2.ListJobs.future(pb.ListJobsRequest(user_id=user, page_size=500), timeout=60)
                    for _ in range(5)]
            for f in many:
                assert sorted(j.id for j in f.result().jobs) == sorted(ids)
    finally:
        ri.cancel_quietly(stub, ids)
