"""Idempotent CreateJob (DESIGN §2 Rules)."""

import hashlib
import threading

import grpc

import reel_interop as ri
from reel_interop import pb


def test_same_idempotency_key_twice_returns_the_same_job(stub):
    user = ri.unique("idem")
    req = ri.create_request(user, idempotency_key="order-42")
    first = stub.CreateJob(req, timeout=ri.DEFAULT_TIMEOUT)
    second = stub.CreateJob(req, timeout=ri.DEFAULT_TIMEOUT)
    assert second.id == first.id
    assert second.idempotency_key == "order-42"
    assert second.created_at_unix_ms == first.created_at_unix_ms


def test_reused_key_with_different_text_returns_the_first_job(stub):
    user = ri.unique("idem")
    first = stub.CreateJob(ri.create_request(user, text="first text", idempotency_key="k1"),
                           timeout=ri.DEFAULT_TIMEOUT)
    second = stub.CreateJob(ri.create_request(user, text="second text", idempotency_key="k1"),
                            timeout=ri.DEFAULT_TIMEOUT)
    assert second.id == first.id
    assert second.input_text == "first text"


def test_empty_key_is_derived_from_user_scene_and_text(stub):
    user, scene, text = ri.unique("derive"), "scene-d", "Waves crash on the rocks — été 🌊"
    req = ri.create_request(user, scene_id=scene, text=text)
    first = stub.CreateJob(req, timeout=ri.DEFAULT_TIMEOUT)
    second = stub.CreateJob(req, timeout=ri.DEFAULT_TIMEOUT)
    expected = "idem_" + hashlib.sha256(f"{user}:{scene}:{text}".encode()).hexdigest()[:32]
    assert first.idempotency_key == expected
    assert second.id == first.id
    assert second.idempotency_key == expected


def test_derived_keys_differ_when_the_text_differs(stub):
    user = ri.unique("derive")
    a = stub.CreateJob(ri.create_request(user, text="text a"), timeout=ri.DEFAULT_TIMEOUT)
    b = stub.CreateJob(ri.create_request(user, text="text b"), timeout=ri.DEFAULT_TIMEOUT)
    assert a.id != b.id
    assert a.idempotency_key != b.idempotency_key


def test_concurrent_creates_with_one_key_yield_one_job(reeld):
    user = ri.unique("race")
    n = 20
    barrier = threading.Barrier(n)
    ids, errors = [None] * n, [None] * n
    channels = [grpc.insecure_channel(reeld.target,
                                      options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(n)]

    def worker(i):
        s = ri.pb_grpc.JobServiceStub(channels[i])
        # Warm the connection up first so the creates really race.
        ri.health_pb2_grpc.HealthStub(channels[i]).Check(ri.health_pb2.HealthCheckRequest(),
                                                          timeout=ri.DEFAULT_TIMEOUT)
        barrier.wait(timeout=30)
        try:
            ids[i] = s.CreateJob(ri.create_request(user, text="same text", idempotency_key="race"),
                                 timeout=30).id
        except grpc.RpcError as e:
            errors[i] = f"{e.code().name}: {e.details()}"

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for c in channels:
            c.close()
    assert not any(t.is_alive() for t in threads), "a CreateJob call hung"
    assert errors == [None] * n, f"concurrent creates failed: {errors}"
    assert len(set(ids)) == 1, f"one key gave several jobs: {set(ids)}"


def test_same_key_for_another_user_is_another_job(stub):
    a = stub.CreateJob(ri.create_request(ri.unique("usera"), idempotency_key="shared-key"),
                       timeout=ri.DEFAULT_TIMEOUT)
    b = stub.CreateJob(ri.create_request(ri.unique("userb"), idempotency_key="shared-key"),
                       timeout=ri.DEFAULT_TIMEOUT)
    assert a.id != b.id
    assert a.idempotency_key == b.idempotency_key == "shared-key"
