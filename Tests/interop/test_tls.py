"""TLS with ALPN h2 (issue #6, item 5): a stock grpcio client with a self-signed certificate
made at test time; plaintext and non-h2 clients are refused without harming anyone."""

import socket
import ssl
import subprocess

import grpc

import reel_interop as ri
from reel_interop import pb


def make_cert(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_grpcio_over_tls_with_a_self_signed_certificate(reeld_factory, tmp_path):
    cert, key = make_cert(tmp_path)
    srv = reeld_factory("tls", workers=1, sim_stage_ms=10, start=False,
                        extra_args=("--tls-cert", str(cert), "--tls-key", str(key)))
    srv._open_channel = lambda: _tls_channel(srv, cert)
    srv.start()
    stub = srv.stub
    job = stub.CreateJob(ri.create_request(ri.unique("tls")), timeout=ri.DEFAULT_TIMEOUT)
    events = list(stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=60))
    assert events[-1].status == pb.JOB_STATUS_FINAL_READY

    # h2c on the TLS port: refused, and the TLS clients go on.
    plain = grpc.insecure_channel(srv.target)
    try:
        ri.rpc_error(pb_stub(plain).GetJob, pb.GetJobRequest(id=job.id), timeout=3)
    finally:
        plain.close()
    # TLS without ALPN h2 (an HTTP/1.1 client): the handshake fails.
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert s.recv(100) == b"", "a non-h2 TLS client was served"
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass
    assert stub.GetJob(pb.GetJobRequest(id=job.id), timeout=ri.DEFAULT_TIMEOUT).status == pb.JOB_STATUS_FINAL_READY
    assert srv.proc.poll() is None


def pb_stub(channel):
    return ri.pb_grpc.JobServiceStub(channel)


def _tls_channel(srv, cert):
    creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    srv.channel = grpc.secure_channel(f"localhost:{srv.port}", creds)
    srv.stub = pb_stub(srv.channel)
    srv.health = ri.health_pb2_grpc.HealthStub(srv.channel)


def test_mismatched_tls_flags_fail_fast(reeld_factory, tmp_path):
    srv = reeld_factory("tlsbad", start=False, extra_args=("--tls-cert", str(tmp_path / "missing.pem"),
                                                         "--tls-key", str(tmp_path / "missing.key")))
    r = subprocess.run(srv.args, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "TLS" in r.stderr, (r.returncode, r.stderr)
