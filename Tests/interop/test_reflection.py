"""gRPC server reflection (issue #5): a client that has no .proto files lists the services,
learns the messages, and calls JobService — as grpcurl does."""

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf import message_factory
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

import reel_interop as ri


def test_reflection_lists_services_and_describes_them(reeld):
    db = ProtoReflectionDescriptorDatabase(reeld.channel)
    services = set(db.get_services())
    assert {"reel.v1.JobService", "reel.v1.SceneService", "grpc.health.v1.Health"} <= services
    pool = DescriptorPool(db)
    svc = pool.FindServiceByName("reel.v1.JobService")
    assert [m.name for m in svc.methods] == ["CreateJob", "CreateJobs", "GetJob", "CancelJob", "ListJobs", "RetryJob", "WatchJob"]
    watch = svc.methods_by_name["WatchJob"]
    assert watch.server_streaming and not watch.client_streaming
    job = pool.FindMessageTypeByName("reel.v1.Job")
    assert "last_event_seq" in job.fields_by_name
    status = pool.FindEnumTypeByName("reel.v1.JobStatus")
    assert status.values_by_name["JOB_STATUS_FINAL_READY"].number == 6


def test_a_client_without_protos_can_call_create_and_get(reeld):
    pool = DescriptorPool(ProtoReflectionDescriptorDatabase(reeld.channel))
    Create = message_factory.GetMessageClass(pool.FindMessageTypeByName("reel.v1.CreateJobRequest"))
    Job = message_factory.GetMessageClass(pool.FindMessageTypeByName("reel.v1.Job"))
    create = reeld.channel.unary_unary("/reel.v1.JobService/CreateJob",
                                       request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=Job.FromString)
    job = create(Create(user_id=ri.unique("refl"), scene_id="s", type=1, input_text="via reflection"),
                 timeout=ri.DEFAULT_TIMEOUT)
    assert job.status == 1 and len(job.id) == 36


def _raw_reflection(channel, path, requests):
    call = channel.stream_stream(path, request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    return list(call(iter(requests), timeout=ri.DEFAULT_TIMEOUT))


def test_v1_and_v1alpha_answer_several_requests_on_one_stream_in_order(reeld):
    reqs = [reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health"),
            reflection_pb2.ServerReflectionRequest(file_by_filename="reel/v1/jobs.proto"),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Thing")]
    for path in ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                 "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"):
        out = _raw_reflection(reeld.channel, path, reqs)
        assert len(out) == 4, path
        assert [r.original_request for r in out] == reqs
        assert "reel.v1.JobService" in [s.name for s in out[0].list_services_response.service]
        assert len(out[1].file_descriptor_response.file_descriptor_proto) == 1
        assert len(out[2].file_descriptor_response.file_descriptor_proto) == 1
        assert out[3].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_garbage_on_the_reflection_stream_is_invalid_argument(reeld):
    call = reeld.channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                       request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        list(call(iter([b"\xff\xff\xff"]), timeout=ri.DEFAULT_TIMEOUT))
        raise AssertionError("garbage was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    # the server still answers
    assert _raw_reflection(reeld.channel, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                           [reflection_pb2.ServerReflectionRequest(list_services="")])
