import ReelCore
import ReelWire
import ReelHTTP2
import ReelScheduler
import ReelObservability
import ReelPipeline
import Logging

/// `reel.v1.JobService` as gRPC routes: decode protobuf, call `JobOperations` (shared with the
/// HTTP/JSON side), encode. The rules live in ReelCore. `routes` builds the one router that also
/// holds the scene, health, worker, key and reflection services, each in a file of its own.
public struct JobService: Sendable {
    let store: any JobStore
    let hub: JobEventHub
    let scheduler: Scheduler?
    let failures: FailureRecorder?
    public let auth: Authenticator
    /// The one implementation of the job operations, for gRPC and HTTP alike.
    public let operations: JobOperations
    /// Tenants' budgets (`reel.v1.TenantService`); nil: the service is not offered.
    public var budgets: (any BudgetStore)?
    let logger: Logger

    /// `failures` enables `reel.v1.WorkerService` (external workers) on `scheduler`; `auth`
    /// with a key store turns API keys on (and `reel.v1.KeyService`).
    public init(store: any JobStore, hub: JobEventHub, scheduler: Scheduler?, failures: FailureRecorder? = nil,
                auth: Authenticator = Authenticator(keys: nil), createPolicy: CreatePolicy = CreatePolicy(),
                eta: JobETA? = nil, logger: Logger) {
        self.store = store; self.hub = hub; self.scheduler = scheduler; self.failures = failures; self.auth = auth
        var operations = JobOperations(store: store, hub: hub, scheduler: scheduler, eta: eta)
        operations.createPolicy = createPolicy
        self.operations = operations
        self.logger = logger
    }

    public func routes(health: HealthState) -> GRPCRouter {
        var r = GRPCRouter()
        let s = self
        r.add("/reel.v1.JobService/CreateJob", GRPCRoute(.unary) { call in await s.authorized(call) { try await s.create($0, $1) } })
        r.add("/reel.v1.JobService/CreateJobs", GRPCRoute(.unary) { call in await s.authorized(call) { try await s.createMany($0, $1) } })
        r.add("/reel.v1.JobService/GetJob", GRPCRoute(unary: { call in await s.authorized(call) { try await s.get($0, $1) } },
                                                      inline: { req, metadata in s.getInline(req, metadata) }))
        r.add("/reel.v1.JobService/CancelJob", GRPCRoute(.unary) { call in await s.authorized(call) { try await s.cancel($0, $1) } })
        r.add("/reel.v1.JobService/ListJobs", GRPCRoute(.unary) { call in await s.authorized(call) { try await s.list($0, $1) } })
        r.add("/reel.v1.JobService/RetryJob", GRPCRoute(.unary) { call in await s.authorized(call) { try await s.retry($0, $1) } })
        r.add("/reel.v1.JobService/WatchJob", GRPCRoute(serverStreaming: { call in await s.watch(call) },
                                                        onLoop: { req, metadata, stream in s.watchOnLoop(req, metadata, stream) }))
        addSceneRoutes(to: &r)
        addHealthRoutes(to: &r, health: health)
        ReflectionService().add(to: &r)
        if let scheduler, let failures {
            // Workers act for every tenant: with auth on they need an admin key.
            WorkerService(store: store, hub: hub, scheduler: scheduler, failures: failures, logger: logger)
                .add(to: &r, authorize: { call in try await s.requireAdmin(call.metadata) }) { call, body in
                    await s.authorized(call) { req, _ in try await body(req) }
                }
        }
        if let budgets {
            TenantService(budgets: budgets, tenantRequired: auth.keys != nil).add(to: &r) { call, body in
                await s.authorized(call) { req, caller in
                    guard caller.admin else { throw ReelError(.permissionDenied, "budgets need an admin key") }
                    return try await body(req)
                }
            }
        }
        if let keys = auth.keys {
            KeyService(keys: keys).add(to: &r) { call, body in
                await s.authorized(call) { req, caller in
                    guard caller.admin else { throw ReelError(.permissionDenied, "managing keys needs an admin key") }
                    return try await body(req)
                }
            }
        }
        return r
    }

    /// A unary call made by an authenticated caller.
    func authorized(_ call: GRPCCall, _ body: ([UInt8], Caller) async throws -> [UInt8]) async -> GRPCStatus {
        await unary(call) { req in try await body(req, try await auth.caller(call.metadata)) }
    }

    func requireAdmin(_ metadata: [String: String]) async throws {
        guard try await auth.caller(metadata).admin else {
            throw ReelError(.permissionDenied, "this call needs an admin key")
        }
    }

    func unary(_ call: GRPCCall, _ body: ([UInt8]) async throws -> [UInt8]) async -> GRPCStatus {
        do {
            let response = try await body(call.request)
            try await call.send(response)
            return .ok
        } catch {
            let status = GRPCStatus.from(error)
            if status.code == .internal || status.code == .unavailable {
                logger.warning("call failed", metadata: ["grpc.method": "\(call.path)", "error": "\(error)"])
            }
            return status
        }
    }

    // MARK: methods

    func create(_ req: [UInt8], _ caller: Caller) async throws -> [UInt8] {
        ProtoCodec.encode(try await operations.create(try ProtoCodec.decodeCreateJobRequest(req), caller: caller))
    }

    func createMany(_ req: [UInt8], _ caller: Caller) async throws -> [UInt8] {
        let results = try await operations.create(try ProtoCodec.decodeCreateJobsRequest(req), caller: caller)
        return ProtoCodec.encode(results.map { $0.mapError { GRPCStatus($0) } })
    }

    func get(_ req: [UInt8], _ caller: Caller) async throws -> [UInt8] {
        ProtoCodec.encode(try await operations.get(id: try ProtoCodec.decodeJobID(req), caller: caller))
    }

    /// GetJob on the event loop's thread when memory can answer it: a hot job, and a caller
    /// known without the database (an unknown key's error is answered here too); anything
    /// else — a cold job, a malformed request — goes to `get` (nil).
    func getInline(_ req: [UInt8], _ metadata: [String: String]) -> GRPCInlineAnswer? {
        guard let id = try? ProtoCodec.decodeJobID(req) else { return nil }
        do {
            guard let encoded = try operations.getIfCached(id: id, caller: { try auth.callerIfKnown(metadata) }) else { return nil }
            return .message(encoded)
        } catch {
            return .status(GRPCStatus.from(error))
        }
    }

    func cancel(_ req: [UInt8], _ caller: Caller) async throws -> [UInt8] {
        let (id, reason) = try ProtoCodec.decodeCancelJobRequest(req)
        return ProtoCodec.encode(try await operations.cancel(id: id, reason: reason, caller: caller))
    }

    func retry(_ req: [UInt8], _ caller: Caller) async throws -> [UInt8] {
        ProtoCodec.encode(try await operations.retry(id: try ProtoCodec.decodeRetryJobRequest(req), caller: caller))
    }

    func list(_ req: [UInt8], _ caller: Caller) async throws -> [UInt8] {
        ProtoCodec.encode(try await operations.list(try ProtoCodec.decodeListJobsRequest(req), caller: caller))
    }

    /// WatchJob on the event loop's thread, with no task for the call: a valid request from a
    /// caller known without the database becomes a watcher of `JobOperations`' fan-out. false
    /// (a key to look up) leaves the call to `watch`.
    func watchOnLoop(_ req: [UInt8], _ metadata: [String: String], _ stream: LoopStream) -> Bool {
        do {
            let (id, afterSeq) = try watchArguments(req)
            guard let caller = try auth.callerIfKnown(metadata) else { return false }
            operations.watch(jobID: id, afterSeq: afterSeq, caller: caller, on: GRPCWatchStream(stream: stream))
        } catch {
            stream.finish(GRPCStatus.from(error))
        }
        return true
    }

    /// WatchJob when the caller's key must be looked up first: then the stream goes to the loop
    /// as in `watchOnLoop` (the status returned once it is handed off is ignored).
    func watch(_ call: GRPCCall) async -> GRPCStatus {
        do {
            let (id, afterSeq) = try watchArguments(call.request)
            let caller = try await auth.caller(call.metadata)
            let operations = self.operations
            call.handOff { stream in
                guard let stream else { return }
                operations.watch(jobID: id, afterSeq: afterSeq, caller: caller, on: GRPCWatchStream(stream: stream))
            }
            return .ok
        } catch {
            return GRPCStatus.from(error)
        }
    }

    /// Bad arguments are reported before authentication, as they always were.
    private func watchArguments(_ req: [UInt8]) throws -> (id: String, afterSeq: Int64) {
        let (rawID, afterSeq) = try ProtoCodec.decodeWatchJobRequest(req)
        let id = try Validate.jobID(rawID)
        try Validate.afterSeq(afterSeq)
        return (id, afterSeq)
    }

}

/// A gRPC stream as the watch fan-out writes to it.
struct GRPCWatchStream: WatchStream {
    let stream: LoopStream

    var loop: any WatchLoop { stream.loop }
    var isGone: Bool { stream.isGone }

    func write(framed: [UInt8], evenIfFull: Bool) -> WatchWrite {
        switch stream.write(framed: framed, evenIfFull: evenIfFull) {
        case .sent: .sent
        case .full: .full
        case .gone: .gone
        }
    }

    func finish(_ status: GRPCStatus) { stream.finish(status) }
    func onEnd(_ f: @escaping () -> Void) { stream.onEnd(f) }
    var sender: any WatchSender { stream.sender }
}

extension StreamLoop: WatchLoop {}
extension StreamSender: WatchSender {}
