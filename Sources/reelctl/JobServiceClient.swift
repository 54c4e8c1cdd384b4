import ReelClient
import ReelCore
import ReelWire

/// `reel.v1.JobService` and the health check, as typed calls over one connection.
struct JobServiceClient {
    let grpc: BlockingGRPCClient
    let timeout: Duration?
    /// Sent with every call (the API key).
    var metadata: [(String, String)] = []

    private static let service = "/reel.v1.JobService/"

    func createJob(_ input: CreateJobInput) throws -> Job {
        try ProtoCodec.decodeJob(grpc.unary(path: Self.service + "CreateJob", request: ProtoCodec.encode(input), timeout: timeout, metadata: metadata))
    }

    func getJob(id: String) throws -> Job {
        try ProtoCodec.decodeJob(grpc.unary(path: Self.service + "GetJob", request: ProtoCodec.encodeGetJobRequest(id: id), timeout: timeout, metadata: metadata))
    }

    func cancelJob(id: String, reason: String) throws -> Job {
        try ProtoCodec.decodeJob(grpc.unary(path: Self.service + "CancelJob",
                                            request: ProtoCodec.encodeCancelJobRequest(id: id, reason: reason), timeout: timeout, metadata: metadata))
    }

    func retryJob(id: String) throws -> Job {
        try ProtoCodec.decodeJob(grpc.unary(path: Self.service + "RetryJob",
                                            request: ProtoCodec.encodeRetryJobRequest(id: id), timeout: timeout, metadata: metadata))
    }

    func listJobs(_ input: ListJobsInput) throws -> JobPage {
        try ProtoCodec.decodeListJobsResponse(grpc.unary(path: Self.service + "ListJobs", request: ProtoCodec.encode(input), timeout: timeout, metadata: metadata))
    }

    /// Streams events until the server ends the stream; no deadline (a job may run for long).
    func watchJob(id: String, afterSeq: Int64, onEvent: (JobEvent) throws -> Void) throws {
        try grpc.serverStreaming(path: Self.service + "WatchJob",
                                 request: ProtoCodec.encodeWatchJobRequest(id: id, afterSeq: afterSeq), metadata: metadata) { message in
            try onEvent(ProtoCodec.decodeJobEvent(message))
        }
    }

    func putSceneBible(sceneID: String, bible: SceneBible) throws -> Scene {
        try ProtoCodec.decodeScene(grpc.unary(path: "/reel.v1.SceneService/PutSceneBible",
                                              request: ProtoCodec.encodePutSceneBibleRequest(sceneID: sceneID, bible: bible),
                                              timeout: timeout, metadata: metadata))
    }

    func getScene(sceneID: String) throws -> Scene {
        try ProtoCodec.decodeScene(grpc.unary(path: "/reel.v1.SceneService/GetScene",
                                              request: ProtoCodec.encodeGetSceneRequest(sceneID: sceneID), timeout: timeout, metadata: metadata))
    }

    /// The key, its secret and, for a tenant's first key, the tenant's webhook signing secret ("" otherwise).
    func createKey(tenantID: String, admin: Bool, rate: Int32) throws -> (key: APIKey, secret: String, webhookSecret: String) {
        let answer = try grpc.unary(path: "/reel.v1.KeyService/CreateKey",
                                    request: ProtoCodec.encodeCreateKeyRequest(tenantID: tenantID, admin: admin, rate: rate),
                                    timeout: timeout, metadata: metadata)
        let (key, secret) = try ProtoCodec.decodeAPIKey(answer)
        return (key, secret, try ProtoCodec.decodeAPIKeyWebhookSecret(answer))
    }

    func setBudget(tenantID: String, limitUnits: Double, periodSeconds: Int64) throws -> TenantBudget {
        try ProtoCodec.decodeBudget(grpc.unary(path: "/reel.v1.TenantService/SetBudget",
                                               request: ProtoCodec.encodeSetBudgetRequest(tenantID: tenantID, limitUnits: limitUnits,
                                                                                          periodSeconds: periodSeconds),
                                               timeout: timeout, metadata: metadata))
    }

    func budget(tenantID: String) throws -> TenantBudget {
        try ProtoCodec.decodeBudget(grpc.unary(path: "/reel.v1.TenantService/GetBudget",
                                               request: ProtoCodec.encodeGetBudgetRequest(tenantID: tenantID),
                                               timeout: timeout, metadata: metadata))
    }

    func setWeight(tenantID: String, weight: Double) throws -> Double {
        try ProtoCodec.decodeTenantWeight(grpc.unary(path: "/reel.v1.TenantService/SetWeight",
                                                     request: ProtoCodec.encodeSetWeightRequest(tenantID: tenantID, weight: weight),
                                                     timeout: timeout, metadata: metadata)).weight
    }

    func weight(tenantID: String) throws -> Double {
        try ProtoCodec.decodeTenantWeight(grpc.unary(path: "/reel.v1.TenantService/GetWeight",
                                                     request: ProtoCodec.encodeGetWeightRequest(tenantID: tenantID),
                                                     timeout: timeout, metadata: metadata)).weight
    }

    func listKeys(tenantID: String) throws -> [APIKey] {
        try ProtoCodec.decodeListKeysResponse(grpc.unary(path: "/reel.v1.KeyService/ListKeys",
                                                         request: ProtoCodec.encodeListKeysRequest(tenantID: tenantID),
                                                         timeout: timeout, metadata: metadata))
    }

    func revokeKey(id: String) throws -> APIKey {
        try ProtoCodec.decodeAPIKey(grpc.unary(path: "/reel.v1.KeyService/RevokeKey",
                                               request: ProtoCodec.encodeRevokeKeyRequest(id: id),
                                               timeout: timeout, metadata: metadata)).key
    }

    /// The serving status number (1 = SERVING).
    func healthCheck(service: String) throws -> Int32 {
        try ProtoCodec.decodeHealthCheckResponse(grpc.unary(path: "/grpc.health.v1.Health/Check",
                                                            request: ProtoCodec.encodeHealthCheckRequest(service: service),
                                                            timeout: timeout, metadata: metadata))
    }
}
