import ReelClient
import ReelCore
import ReelWire

/// The few `reel.v1.JobService` calls the bench makes, typed, over a multiplexed connection.
struct JobCalls: Sendable {
    let client: GRPCClient
    let timeout: Duration?

    private static let service = "/reel.v1.JobService/"

    func createJob(_ input: CreateJobInput) async throws -> Job {
        try ProtoCodec.decodeJob(await client.unary(path: Self.service + "CreateJob", request: ProtoCodec.encode(input),
                                                    timeout: timeout))
    }

    func getJob(id: String) async throws -> Job {
        try ProtoCodec.decodeJob(await client.unary(path: Self.service + "GetJob",
                                                    request: ProtoCodec.encodeGetJobRequest(id: id), timeout: timeout))
    }

    /// Streams events until the server ends the stream. `onEvent` runs on the connection's
    /// loop thread; an event that does not decode is dropped and counted by the caller's logic.
    func watchJob(id: String, afterSeq: Int64 = 0, timeout: Duration? = nil,
                  onEvent: @escaping @Sendable (JobEvent?) -> Void) async throws {
        try await client.serverStreaming(path: Self.service + "WatchJob",
                                         request: ProtoCodec.encodeWatchJobRequest(id: id, afterSeq: afterSeq),
                                         timeout: timeout) { message in
            onEvent(try? ProtoCodec.decodeJobEvent(message))
        }
    }

    /// The serving status number (1 = SERVING).
    func healthCheck() async throws -> Int32 {
        try ProtoCodec.decodeHealthCheckResponse(await client.unary(
            path: "/grpc.health.v1.Health/Check", request: ProtoCodec.encodeHealthCheckRequest(service: ""),
            timeout: timeout))
    }
}
