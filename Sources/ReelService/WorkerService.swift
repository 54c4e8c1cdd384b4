import ReelCore
import ReelWire
import ReelHTTP2
import ReelScheduler
import ReelPipeline
import ReelObservability
import Logging
import Foundation

/// `reel.v1.WorkerService`: external workers receive assignments from the scheduler under
/// leases and report through the same transition table as in-process workers. Every write
/// requires the worker to hold the job's lease, so a stale worker's late report changes nothing.
struct WorkerService: Sendable {
    let store: any JobStore
    let hub: JobEventHub
    let scheduler: Scheduler
    let failures: FailureRecorder
    let logger: Logger

    func add(to r: inout GRPCRouter, authorize: @escaping @Sendable (GRPCCall) async throws -> Void,
             unary: @escaping @Sendable (GRPCCall, @escaping @Sendable ([UInt8]) async throws -> [UInt8]) async -> GRPCStatus) {
        let s = self
        let guarded: @Sendable (GRPCCall, @escaping @Sendable ([UInt8]) async throws -> [UInt8]) async -> GRPCStatus = { call, body in
            await unary(call) { req in try await authorize(call); return try await body(req) }
        }
        r.add("/reel.v1.WorkerService/Connect", GRPCRoute(.serverStreaming) { call in
            do { try await authorize(call) } catch { return GRPCStatus.from(error) }
            return await s.connect(call)
        })
        r.add("/reel.v1.WorkerService/Heartbeat", GRPCRoute(.unary) { call in await guarded(call) { try await s.heartbeat($0) } })
        r.add("/reel.v1.WorkerService/ReportProgress", GRPCRoute(.unary) { call in await guarded(call) { try await s.report($0) } })
        r.add("/reel.v1.WorkerService/CompleteJob", GRPCRoute(.unary) { call in await guarded(call) { try await s.complete($0) } })
        r.add("/reel.v1.WorkerService/FailJob", GRPCRoute(.unary) { call in await guarded(call) { try await s.fail($0) } })
    }

    func connect(_ call: GRPCCall) async -> GRPCStatus {
        let hello: WorkerHello
        let assignments: AsyncStream<Job>
        do {
            hello = try ProtoCodec.decodeConnectRequest(call.request).validated()
            assignments = try await scheduler.connect(hello)
        } catch {
            return GRPCStatus.from(error)
        }
        var log = logger
        log[metadataKey: "reel.worker_id"] = "\(hello.workerID)"
        log.info("worker connected", metadata: ["slots": "\(hello.slots)", "types": "\(hello.jobTypes.map(\.name).sorted())"])
        let leaseMs = await scheduler.leaseMs
        defer { log.info("worker disconnected") }
        do {
            for await job in assignments {
                let expires = Int64(Date().timeIntervalSince1970 * 1000) + leaseMs
                try await call.send(ProtoCodec.encodeWorkerAssignment(job, leaseExpiresAtUnixMs: expires,
                                                                      leaseSeconds: Int32(leaseMs / 1000)))
            }
        } catch {
            // The worker went away mid-send: its jobs' leases run out and they are requeued.
        }
        await scheduler.disconnect(workerID: hello.workerID)
        return Task.isCancelled ? GRPCStatus(.cancelled, "worker stream closed") : GRPCStatus(.unavailable, "server is shutting down")
    }

    func heartbeat(_ req: [UInt8]) async throws -> [UInt8] {
        let (workerID, ids) = try ProtoCodec.decodeHeartbeatRequest(req)
        try Validate.identifier(workerID, field: "worker_id")
        if ids.count > Int(WorkerHello.maxSlots) { throw ReelError.invalid("job_ids", "at most \(WorkerHello.maxSlots)") }
        let asked = try ids.map { try Validate.jobID($0, field: "job_ids") }
        // One lease per worker: renewing it renews every job the worker holds.
        let (_, requeued) = try await store.workerHeartbeat(workerID: workerID, leaseMs: await scheduler.leaseMs)
        for (_, event) in requeued { hub.publish(event) }
        let held = try await store.heldJobIDs(workerID: workerID)
        var renewed: [String] = [], lost: [String] = []
        for id in asked {
            if held.contains(id) {
                renewed.append(id)
            } else {
                lost.append(id)
                await scheduler.released(workerID: workerID, jobID: id)
            }
        }
        if !requeued.isEmpty { scheduler.notifyWork() }
        return ProtoCodec.encodeHeartbeatResponse(renewed: renewed, lost: lost)
    }

    func report(_ req: [UInt8]) async throws -> [UInt8] {
        let p = try ProtoCodec.decodeReportProgressRequest(req)
        try Validate.identifier(p.workerID, field: "worker_id")
        let id = try Validate.jobID(p.jobID, field: "job_id")
        try Validate.progress(p.progress)
        guard p.status.isRunning else {
            throw ReelError.invalid("status", "a worker reports PROCESSING, SCRIPT_READY, CONTINUITY_CHECKED or PREVIEW_READY; "
                                    + "finish with CompleteJob or FailJob")
        }
        guard p.stage != .unspecified, p.stage != .completed, p.stage != .error else {
            throw ReelError.invalid("stage", "must be a working stage (SCRIPT_EXPANSION … FINALIZATION)")
        }
        if p.message.unicodeScalars.count > 1024 { throw ReelError.invalid("message", "at most 1024 characters") }
        guard let job = try await store.job(id: id) else { throw ReelError.notFound(jobID: id) }
        let artifacts = p.artifacts.map { job.artifacts.merging($0) }
        let (updated, event) = try await store.apply(
            StateChange(status: p.status, stage: p.stage, progress: p.progress, message: p.message,
                        artifacts: artifacts, requireWorker: p.workerID), to: id)
        hub.publish(event)
        return ProtoCodec.encode(updated)
    }

    func complete(_ req: [UInt8]) async throws -> [UInt8] {
        let c = try ProtoCodec.decodeCompleteJobRequest(req)
        try Validate.identifier(c.workerID, field: "worker_id")
        let id = try Validate.jobID(c.jobID, field: "job_id")
        if c.videoURL.isEmpty { throw ReelError.invalid("video_url", "must not be empty") }
        if c.durationSeconds < 0 || !c.durationSeconds.isFinite { throw ReelError.invalid("duration_seconds", "must be ≥ 0") }
        guard let (final, event) = try await store.finalize(
            jobID: id, workerID: c.workerID,
            result: JobResult(videoURL: c.videoURL, thumbnailURL: c.thumbnailURL), durationSeconds: c.durationSeconds)
        else {
            throw ReelError(.failedPrecondition, "job \(id) is already FINAL_READY", jobID: id)
        }
        hub.publish(event)
        await scheduler.released(workerID: c.workerID, jobID: id)
        ReelMetrics.jobEnded(final, stage: final.stage)
        return ProtoCodec.encode(final)
    }

    func fail(_ req: [UInt8]) async throws -> [UInt8] {
        let f = try ProtoCodec.decodeFailJobRequest(req)
        try Validate.identifier(f.workerID, field: "worker_id")
        let id = try Validate.jobID(f.jobID, field: "job_id")
        guard let job = try await store.job(id: id) else { throw ReelError.notFound(jobID: id) }
        let code = f.code.isEmpty ? "WORKER_ERROR" : String(f.code.prefix(64))
        let after = try await failures.record(job, code: code, message: String(f.message.prefix(1024)),
                                              retryable: f.retryable, workerID: f.workerID)
        await scheduler.released(workerID: f.workerID, jobID: id)
        if after.status == .queued { scheduler.notifyWork() }
        return ProtoCodec.encode(after)
    }
}
