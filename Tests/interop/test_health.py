"""grpc.health.v1.Health/Check and reeld's start-up contract (DESIGN §1, §8)."""

import grpc

import reel_interop as ri
from reel_interop import health_pb2


def test_health_check_answers_serving(reeld):
    r = reeld.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=ri.DEFAULT_TIMEOUT)
    assert r.status == health_pb2.HealthCheckResponse.SERVING


def test_health_check_answers_on_a_fresh_connection(reeld):
    with grpc.insecure_channel(reeld.target,
                               options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        r = ri.health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                     timeout=ri.DEFAULT_TIMEOUT)
    assert r.status == health_pb2.HealthCheckResponse.SERVING


def test_startup_logs_the_listen_address(reeld):
    log = reeld.log_text()
    assert reeld.target in log, (
        f"reeld should log one line with the address it listens on ({reeld.target}); "
        f"log so far:\n{reeld.log_tail(40)}")
