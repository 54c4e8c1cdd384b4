import ReelCore
import ReelWire
import ReelHTTP2
import ReelScheduler
import ReelObservability
import ReelPipeline
import Logging
import Synchronization

/// `reel.v1.JobService` and `grpc.health.v1.Health` as gRPC routes: decode, validate,
/// call the store and scheduler, encode. One implementation of each rule lives in ReelCore.
public struct JobService: Sendable {
    let store: any JobStore
    let hub: JobEventHub
    let scheduler: Scheduler?
    let failures: FailureRecorder?
    let auth: Authenticator
    let logger: Logger

    /// `failures` enables `reel.v1.WorkerService` (external workers) on `scheduler`; `auth`
    /// with a key store turns API keys on (and `reel.v1.KeyService`).
    public init(store: any JobStore, hub: JobEventHub, scheduler: Scheduler?, failures: FailureRecorder? = nil,
                auth: Authenticator = Authenticator(keys: nil), logger: Logger) {
        self.store = store; self.hub = hub; self.scheduler = scheduler; self.failures = failures; self.auth = auth
        self.logger = logger
    }

    public func routes(health: HealthState) -> GRPCRouter {
        var r = GRPCRouter()
        let s = self
        r.add("/reel.v1.JobService/CreateJob", GRPCRoute(.unary) { call in await s.authorized(call) { try await s.create($0, $1) } })
        r.add("/reel.v1.JobService/GetJob", GRPCRoute(.unary) { call in await s.authorized(call) { try await s.get($0, $1) } })
        r.add("/reel.v1.JobService/CancelJob", GRPCRoute(.unary) { call in await s.authorized(call) { try await s.cancel($0, $1) } })
        r.add("/reel.v1.JobService/ListJobs", GRPCRoute(.unary) { call in await s.authorized(call) { try await s.list($0, $1) } })
        r.add("/reel.v1.JobService/RetryJob", GRPCRoute(.unary) { call in await s.authorized(call) { try await s.retry($0, $1) } })
        r.add("/reel.v1.JobService/WatchJob", GRPCRoute(.serverStreaming) { call in await s.watch(call) })
        r.add("/reel.v1.SceneService/PutSceneBible", GRPCRoute(.unary) { call in await s.authorized(call) { try await s.putSceneBible($0, $1) } })
        r.add("/reel.v1.SceneService/GetScene", GRPCRoute(.unary) { call in await s.authorized(call) { try await s.getScene($0, $1) } })
        r.add("/grpc.health.v1.Health/Check", GRPCRoute(.unary) { call in
            await s.unary(call) { req in
                let service = try ProtoCodec.decodeHealthCheckRequest(req)
                guard service.isEmpty || service == "reel.v1.JobService" else {
                    throw GRPCStatus(.notFound, "unknown service \(service)")
                }
                return ProtoCodec.encodeHealthCheckResponse(status: health.status)
            }
        })
        ReflectionService().add(to: &r)
        if let scheduler, let failures {
            // Workers act for every tenant: with auth on they need an admin key.
            WorkerService(store: store, hub: hub, scheduler: scheduler, failures: failures, logger: logger)
                .add(to: &r, authorize: { call in try await s.requireAdmin(call.metadata) }) { call, body in
                    await s.authorized(call) { req, _ in try await body(req) }
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
        r.add("/grpc.health.v1.Health/Watch", GRPCRoute(.serverStreaming) { call in
            do {
                _ = try ProtoCodec.decodeHealthCheckRequest(call.request)
                var last: Int32 = -1
                while !Task.isCancelled {
                    let now = health.status
                    if now != last {
                        try await call.send(ProtoCodec.encodeHealthCheckResponse(status: now))
                        last = now
                    }
                    try await Task.sleep(for: .milliseconds(250))
                }
                return GRPCStatus(.cancelled, "watch ended")
            } catch {
                return GRPCStatus.from(error)
            }
        })
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

    /// The job if the caller may see it; another tenant's job does not exist for them.
    func ownedJob(_ id: String, _ caller: Caller) async throws -> Job {
        guard let job = try await store.job(id: id), caller.owns(job) else { throw ReelError.notFound(jobID: id) }
        return job
    }

    private func unary(_ call: GRPCCall, _ body: ([UInt8]) async throws -> [UInt8]) async -> GRPCStatus {
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
        let input = try ProtoCodec.decodeCreateJobRequest(req)
        var new = try input.validated()
        new.tenantID = caller.tenantID
        let (job, created) = try await store.createJob(new)
        if created {
            ReelMetrics.jobCreated(type: job.type, tier: job.tier)
            hub.publish(JobEvent(jobID: job.id, seq: 1, status: job.status, stage: job.stage, progress: job.progress,
                                 message: job.message, atUnixMs: job.createdAtUnixMs))
            scheduler?.notifyWork()
        }
        return ProtoCodec.encode(job)
    }

    func get(_ req: [UInt8], _ caller: Caller) async throws -> [UInt8] {
        let id = try Validate.jobID(ProtoCodec.decodeJobID(req))
        let job = try await ownedJob(id, caller)
        return ProtoCodec.encode(job)
    }

    func cancel(_ req: [UInt8], _ caller: Caller) async throws -> [UInt8] {
        let (rawID, reason) = try ProtoCodec.decodeCancelJobRequest(req)
        let id = try Validate.jobID(rawID)
        if reason.unicodeScalars.count > 1024 { throw ReelError.invalid("reason", "must be at most 1024 characters") }
        let job = try await ownedJob(id, caller)
        guard job.status.canTransition(to: .cancelled) else {
            throw ReelError(.failedPrecondition, "job \(id) is \(job.status.name); only queued or running jobs can be cancelled", jobID: id)
        }
        let change = StateChange(status: .cancelled, stage: nil, progress: nil,
                                 message: reason.isEmpty ? "cancelled" : "cancelled: \(reason)")
        let (updated, event) = try await store.apply(change, to: id)
        ReelMetrics.jobCompleted(type: updated.type, status: .cancelled)
        hub.publish(event)
        await scheduler?.cancelLocal(jobID: id)
        return ProtoCodec.encode(updated)
    }

    func retry(_ req: [UInt8], _ caller: Caller) async throws -> [UInt8] {
        let id = try Validate.jobID(ProtoCodec.decodeRetryJobRequest(req))
        let job = try await ownedJob(id, caller)
        guard job.status == .failed else {
            throw ReelError(.failedPrecondition, "job \(id) is \(job.status.name); only failed jobs can be retried", jobID: id)
        }
        let change = StateChange(status: .queued, stage: .pending, progress: 0, message: "retry requested",
                                 deadLettered: false, retryCount: 0, runAfterMs: 0)
        let (updated, event) = try await store.apply(change, to: id)
        hub.publish(event)
        scheduler?.notifyWork()
        return ProtoCodec.encode(updated)
    }

    func list(_ req: [UInt8], _ caller: Caller) async throws -> [UInt8] {
        let filter = try ProtoCodec.decodeListJobsRequest(req)
        let pageSize = try filter.validatedPageSize()
        // An admin sees every tenant's jobs (dead-letter reprocessing); others their own.
        return ProtoCodec.encode(try await store.listJobs(filter, pageSize: pageSize, tenantID: caller.admin ? nil : caller.tenantID))
    }

    func putSceneBible(_ req: [UInt8], _ caller: Caller) async throws -> [UInt8] {
        let (sceneID, bible) = try ProtoCodec.decodePutSceneBibleRequest(req)
        try Validate.identifier(sceneID, field: "scene_id")
        return ProtoCodec.encode(try await store.putSceneBible(sceneID: sceneID, bible: try bible.validated()))
    }

    func getScene(_ req: [UInt8], _ caller: Caller) async throws -> [UInt8] {
        let sceneID = try ProtoCodec.decodeGetSceneRequest(req)
        try Validate.identifier(sceneID, field: "scene_id")
        guard let scene = try await store.scene(id: sceneID) else {
            throw ReelError(.notFound, "scene \(sceneID) not found")
        }
        return ProtoCodec.encode(scene)
    }

    /// Snapshot (or stored events after `after_seq`), then live events in `seq` order, until
    /// the terminal event. Subscribing before reading storage means no event falls in between.
    func watch(_ call: GRPCCall) async -> GRPCStatus {
        do {
            let (rawID, afterSeq) = try ProtoCodec.decodeWatchJobRequest(call.request)
            let id = try Validate.jobID(rawID)
            try Validate.afterSeq(afterSeq)
            let caller = try await auth.caller(call.metadata)
            let live = hub.subscribe(jobID: id)
            let job = try await ownedJob(id, caller)
            var last: Int64
            if afterSeq == 0 {
                try await call.send(ProtoCodec.encode(JobEvent.snapshot(of: job)))
                last = job.lastEventSeq
                if job.isFinished { return .ok }
            } else {
                last = afterSeq
                for e in try await store.events(jobID: id, afterSeq: afterSeq) {
                    try await call.send(ProtoCodec.encode(e))
                    last = e.seq
                    if e.endsWatch { return .ok }
                }
                if job.isFinished && last >= job.lastEventSeq { return .ok }
            }
            for await event in live {
                if event.seq <= last { continue }
                // A gap (events published out of order, or by another writer): fill it from storage.
                let batch = event.seq == last + 1 ? [event] : try await store.events(jobID: id, afterSeq: last)
                for e in batch where e.seq > last {
                    try await call.send(ProtoCodec.encode(e))
                    last = e.seq
                    if e.endsWatch { return .ok }
                }
            }
            if Task.isCancelled { return GRPCStatus(.cancelled, "watch cancelled") }
            return GRPCStatus(.resourceExhausted, "watcher fell behind; reconnect with after_seq=\(last)")
        } catch {
            return GRPCStatus.from(error)
        }
    }
}

/// What the health service reports; reeld flips it to SERVING once migrations ran.
public final class HealthState: Sendable {
    private let value = Mutex<Int32>(0)
    public init() {}
    public static let serving: Int32 = 1
    public static let notServing: Int32 = 2
    public var status: Int32 { value.withLock { $0 } }
    public func set(_ s: Int32) { value.withLock { $0 = s } }
}
