import ReelCore
import ReelHTTP2
import ReelWire

/// `reel.v1.JobService` and the health check, as typed calls over one connection.
struct JobServiceClient {
    let grpc: GRPCClient
    let timeout: Duration?

    private static let service = "/reel.v1.JobService/"

    func createJob(_ input: CreateJobInput) throws -> Job {
        try ProtoCodec.decodeJob(grpc.unary(path: Self.service + "CreateJob", request: ProtoCodec.encode(input), timeout: timeout))
    }

    func getJob(id: String) throws -> Job {
        try ProtoCodec.decodeJob(grpc.unary(path: Self.service + "GetJob", request: ProtoCodec.encodeGetJobRequest(id: id), timeout: timeout))
    }

    func cancelJob(id: String, reason: String) throws -> Job {
        try ProtoCodec.decodeJob(grpc.unary(path: Self.service + "CancelJob",
                                            request: ProtoCodec.encodeCancelJobRequest(id: id, reason: reason), timeout: timeout))
    }

    func retryJob(id: String) throws -> Job {
        try ProtoCodec.decodeJob(grpc.unary(path: Self.service + "RetryJob",
                                            request: ProtoCodec.encodeRetryJobRequest(id: id), timeout: timeout))
    }

    func listJobs(_ input: ListJobsInput) throws -> JobPage {
        try ProtoCodec.decodeListJobsResponse(grpc.unary(path: Self.service + "ListJobs", request: ProtoCodec.encode(input), timeout: timeout))
    }

    /// Streams events until the server ends the stream; no deadline (a job may run for long).
    func watchJob(id: String, afterSeq: Int64, onEvent: (JobEvent) throws -> Void) throws {
        try grpc.serverStreaming(path: Self.service + "WatchJob",
                                 request: ProtoCodec.encodeWatchJobRequest(id: id, afterSeq: afterSeq)) { message in
            try onEvent(ProtoCodec.decodeJobEvent(message))
        }
    }

    func putSceneBible(sceneID: String, bible: SceneBible) throws -> Scene {
        try ProtoCodec.decodeScene(grpc.unary(path: "/reel.v1.SceneService/PutSceneBible",
                                              request: ProtoCodec.encodePutSceneBibleRequest(sceneID: sceneID, bible: bible),
                                              timeout: timeout))
    }

    func getScene(sceneID: String) throws -> Scene {
        try ProtoCodec.decodeScene(grpc.unary(path: "/reel.v1.SceneService/GetScene",
                                              request: ProtoCodec.encodeGetSceneRequest(sceneID: sceneID), timeout: timeout))
    }

    /// The serving status number (1 = SERVING).
    func healthCheck(service: String) throws -> Int32 {
        try ProtoCodec.decodeHealthCheckResponse(grpc.unary(path: "/grpc.health.v1.Health/Check",
                                                            request: ProtoCodec.encodeHealthCheckRequest(service: service),
                                                            timeout: timeout))
    }
}
