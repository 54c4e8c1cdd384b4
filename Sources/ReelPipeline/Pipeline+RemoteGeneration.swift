import Foundation
import Logging
import ReelCore

/// Video generation at a real provider (DESIGN §5): one task per job attempt, its id saved
/// before it is followed, never paid for twice; account slots, parking and throttling cost
/// no attempt; the worker slot is given back while the job waits.
extension Pipeline {
    /// The runtime of a provider this reeld is configured with.
    func runtime(named name: String) -> ProviderRuntime? { remotes.first { $0.provider.name == name } }

    func generateRemotely(_ run: RunState, _ a: inout Artifacts, context: SceneContext,
                          slot: (any WorkerSlot)?) async throws -> ProviderTask {
        let job = run.writer.job
        let latest = try await remotes[0].tasks.latestProviderTask(jobID: job.id)
        await slot?.park()
        do {
            let task: ProviderTask?
            let record: ProviderTaskRecord
            let remote: ProviderRuntime
            if let r = latest, !a.providerJobID.isEmpty, r.taskID == a.providerJobID,
               r.status != "failed", r.status != "rejected", r.status != "gone" {
                // A retried or restarted job follows the task it already paid for, where it is.
                remote = try configured(r.provider, for: r)
                record = r
                task = nil
                run.attempt = r
                run.providerJobID = r.taskID
                try await step(run, .continuityChecked, .videoGeneration, 40, "resuming \(r.provider) task \(r.taskID)")
            } else {
                (remote, record, task) = try await submitRemotely(run, latest, &a, context: context, slot: slot)
            }
            let done = try await follow(run, remote, record, first: task)
            await slot?.unpark()
            return done
        } catch {
            await slot?.unpark()
            throw error
        }
    }

    /// The runtime of the provider an attempt is at: one attempt runs on one provider only.
    private func configured(_ name: String, for r: ProviderTaskRecord) throws -> ProviderRuntime {
        guard let rt = runtime(named: name) else {
            throw StageFailure(code: "PROVIDER_UNAVAILABLE",
                               message: "attempt \(r.attempt) is at \(name), which this reeld is not configured with (--provider)",
                               retryable: true)
        }
        return rt
    }

    /// Submits the job's attempt (a new one, or the one in flight whose answer was lost) and
    /// saves the task id as a checkpoint. A new attempt goes to the provider `route` picks; it
    /// moves to another only while no task of it can exist at the first (before a submit, or
    /// after an answer that made none: parked, throttled, or a server error after which a
    /// lookup by its external id found nothing). Returns where it went, the attempt and the
    /// task as last answered.
    private func submitRemotely(_ run: RunState, _ latest: ProviderTaskRecord?, _ a: inout Artifacts,
                                context: SceneContext, slot: (any WorkerSlot)?)
        async throws -> (ProviderRuntime, ProviderTaskRecord, ProviderTask) {
        let job = run.writer.job
        var image: SourceImage? = nil
        if job.type == .continuation, let previous = context.latestSegmentJobID, previous != job.id, let post = postProcessor {
            image = await post.lastFrame(ofJob: previous)
        }
        var remote: ProviderRuntime
        var record: ProviderTaskRecord
        // An attempt still holding a slot may have made its task (an answer lost, a crash after
        // the submit): it is looked up by its external id, where it is, before anything is submitted.
        var inDoubt: Bool
        var holding: Bool
        var probe = false
        if let r = latest, r.live {
            remote = try configured(r.provider, for: r)
            record = r
            inDoubt = true
            holding = true
            if r.kind != remote.provider.kind(of: Self.shape(a, job, image)) { image = nil }
        } else {
            let n = (latest?.attempt ?? 0) + 1
            remote = remotes[0]
            record = ProviderTaskRecord(provider: remote.provider.name, jobID: job.id, attempt: n,
                                        externalTaskID: ProviderTaskRecord.externalID(jobID: job.id, attempt: n),
                                        kind: "", callbackToken: ProviderCallbacks.newToken())
            inDoubt = false
            holding = false
        }

        /// The attempt goes to `remote`: said (naming it as the job's provider) and committed
        /// before anything is paid for, so a job cancelled meanwhile stops here instead.
        func announce() async throws {
            let name = remote.provider.name
            let note = image == nil ? "submitting to \(name)" : "submitting to \(name) from the previous segment's last frame"
            run.attempt = record
            try await step(run, .continuityChecked, .videoGeneration, 36, note, provider: name)
            try await run.writer.flush()
        }
        if holding { try await announce() }
        // A provider without lookup by external id (Runway) cannot tell whether a submit whose
        // answer was lost made a task: the attempt fails in doubt rather than pay twice.
        func failInDoubt(_ why: String) async throws -> Never {
            let name = remote.provider.name
            try await remote.end(record, "in_doubt")
            throw StageFailure(code: "PROVIDER_IN_DOUBT", message: "\(why); \(name) has no lookup by an external id, so "
                               + "the task may exist (and be charged) without Reel knowing it: not submitted again. "
                               + "RetryJob submits a new task", retryable: false)
        }
        var serverErrors = 0
        func backoff() -> Duration { remote.settings.backoffBase * (1 << min(serverErrors - 1, 10)) }
        while true {
            try Task.checkCancellation()
            if inDoubt {
                if !remote.provider.findsByExternalID && record.taskID.isEmpty {
                    try await failInDoubt("an earlier run of attempt \(record.attempt) may have submitted its task "
                                          + "(it holds a slot with no task id)")
                }
                if let found = try await lookUp(remote, record) {
                    return (remote, try await adopt(run, remote, record, found, &a,
                                                    "found \(remote.provider.name) task \(found.taskID) by its external id \(record.externalTaskID)"), found)
                }
                inDoubt = false
            }
            if !holding {
                (remote, record, probe) = try await route(run, record, Self.shape(a, job, image), slot: slot)
                holding = true
                serverErrors = 0
                try await announce()
            }
            let name = remote.provider.name
            let request = GenerationRequest(prompt: a.expandedScript, config: job.config, externalTaskID: record.externalTaskID,
                                            callbackURL: remote.callbackURL(token: record.callbackToken), image: image)
            do {
                let t = try await remote.provider.submit(request)
                remote.gate.submitted()
                let rid = t.requestID.isEmpty ? "" : " (request_id \(t.requestID))"
                return (remote, try await adopt(run, remote, record, t, &a, "submitted to \(name): task \(t.taskID)\(rid)"), t)
            } catch let e as ProviderError {
                remote.gate.probeEnded(probe)
                probe = false
                switch e.kind {
                case .parked:
                    try await remote.releaseSlot(record)
                    holding = false
                    remote.gate.park(e.description)
                    try await step(run, .continuityChecked, .videoGeneration, 36,
                                   "waiting: \(name) account parked (\(e.description)); nothing is failed")
                case .rateLimited:
                    try await remote.releaseSlot(record)
                    holding = false
                    let wait = e.retryAfter ?? remote.gate.throttleDelay()
                    try await step(run, .continuityChecked, .videoGeneration, 36,
                                   "throttled by \(name) (\(e.description)); resubmitting in \(wait.wholeMilliseconds) ms")
                    try await Task.sleep(for: wait)
                case .concurrency:
                    // Another client of the account holds slots: Reel's cap drops to the tasks it
                    // has live besides this attempt (before this slot is freed, so no waiting job
                    // takes it meanwhile), and the next slot is taken when one of Reel's tasks
                    // ends or the hold runs out.
                    let hold = e.retryAfter ?? remote.gate.throttleDelay()
                    try await remote.yieldSlots(besides: record, holdFor: hold)
                    try await remote.releaseSlot(record)
                    holding = false
                    try await step(run, .continuityChecked, .videoGeneration, 36,
                                   "throttled by \(name) (\(e.description)); waiting for one of Reel's tasks to end or \(hold.wholeMilliseconds) ms")
                case .rejected(let code):
                    try await remote.end(record, "rejected")
                    throw StageFailure(code: code, message: e.description, retryable: false)
                case .auth:
                    try await remote.end(record, "rejected")
                    remote.markUnhealthy()
                    throw StageFailure(code: "PROVIDER_AUTH", message: e.description, retryable: false)
                case .unavailable:
                    serverErrors += 1
                    remote.gate.serverError()
                    if remotes.count > 1, remote.gate.isCircuitOpen {
                        // Routing passes this provider by now. The task may exist after all: only
                        // when its external id finds none does the attempt move on.
                        if let found = try await lookUp(remote, record) {
                            return (remote, try await adopt(run, remote, record, found, &a,
                                                            "found \(name) task \(found.taskID) by its external id \(record.externalTaskID)"), found)
                        }
                        try await remote.releaseSlot(record)
                        holding = false
                        try await step(run, .continuityChecked, .videoGeneration, 36,
                                       "\(name) is failing (\(e.description)); routing to the next provider")
                        continue
                    }
                    // The attempt keeps its slot: if the task was made after all, the same
                    // external id finds it (a resubmit is refused with 1201 and looked up).
                    guard serverErrors < remote.settings.serverErrorAttempts else {
                        // Without lookup, a server error's submit counts as not made (Runway
                        // answers 502/503/504 for requests to retry): the next run submits anew
                        // instead of holding the slot for a lookup it cannot do.
                        if !remote.provider.findsByExternalID { try await remote.end(record, "unavailable") }
                        throw StageFailure(code: "PROVIDER_UNAVAILABLE", message: e.description, retryable: true)
                    }
                    logger.notice("provider server error; resubmitting", metadata: [
                        "reel.job_id": "\(job.id)", "error": "\(e.description)", "retry.attempt": "\(serverErrors)"])
                    try await Task.sleep(for: backoff())
                case .inDoubt:
                    if !remote.provider.findsByExternalID { try await failInDoubt(e.description) }
                    logger.notice("submit answer lost; looking the task up by its external id", metadata: [
                        "reel.job_id": "\(job.id)", "error": "\(e.description)"])
                    inDoubt = true
                case .externalIDTaken:
                    if let found = try await lookUp(remote, record) {
                        return (remote, try await adopt(run, remote, record, found, &a,
                                                        "found \(name) task \(found.taskID) by its external id \(record.externalTaskID)"), found)
                    }
                    try await remote.end(record, "rejected")
                    throw StageFailure(code: "PROVIDER_BAD_REQUEST", message: e.description, retryable: false)
                }
            }
        }
    }

    /// What is sent, before the ids exist: the endpoint family follows it (an image or not).
    private static func shape(_ a: Artifacts, _ job: Job, _ image: SourceImage?) -> GenerationRequest {
        GenerationRequest(prompt: a.expandedScript, config: job.config, externalTaskID: "", image: image)
    }

    /// Picks the provider for a new attempt and takes one of its account slots (DESIGN §5
    /// "Routing"): in the order of `--provider`, the first that is not parked (or whose probe
    /// is due), whose circuit is closed, and that has a free slot (its turn among the jobs
    /// waiting for one, in fair-share order). When all of those are full, the job waits in
    /// each one's line and takes the first slot it is given. When none is up, the first not
    /// parked is used anyway, else the parked ones' gates let one probe through per interval.
    /// Answers the runtime, the attempt's record for it, and whether this submission is a
    /// parked provider's probe.
    private func route(_ run: RunState, _ base: ProviderTaskRecord, _ shape: GenerationRequest,
                       slot: (any WorkerSlot)?) async throws -> (ProviderRuntime, ProviderTaskRecord, Bool) {
        // In line from the first ask, so the scheduler counts it before it has to wait.
        await slot?.waitingForProviderSlot(true)
        var asked: [ProviderRuntime] = []
        func leaveLines(but taken: ProviderRuntime?) async {
            for rt in asked where rt !== taken {
                try? await rt.tasks.leaveProviderSlotQueue(provider: rt.provider.name, jobID: base.jobID)
            }
        }
        var announced = false
        do {
            while true {
                try Task.checkCancellation()
                // In order of preference, those whose circuit is closed: a parked one among them
                // lets one probe through per interval (so a preferred provider that is back
                // takes work again), and is passed by otherwise. With every circuit open (or
                // every closed one parked), the first not parked is used anyway.
                let closed = remotes.filter { !$0.gate.isCircuitOpen }
                let order = closed.contains(where: { !$0.isParked }) ? closed
                    : remotes.filter { !$0.isParked }.prefix(1).map { $0 } + remotes.filter(\.isParked)
                for rt in order {
                    guard let probe = rt.gate.tryPermit() else { continue }
                    var r = base
                    r.provider = rt.provider.name
                    r.kind = rt.provider.kind(of: shape)
                    if !asked.contains(where: { $0 === rt }) { asked.append(rt) }
                    if try await rt.acquireSlotOnce(r) {
                        await leaveLines(but: rt)
                        await slot?.waitingForProviderSlot(false)
                        return (rt, r, probe)
                    }
                    rt.gate.probeEnded(probe)
                }
                if !announced, let first = order.first {
                    announced = true
                    let live = try await first.tasks.liveProviderTasks(provider: first.provider.name)
                    try await step(run, .continuityChecked, .videoGeneration, 36,
                                   "waiting for a free \(first.provider.name) slot (\(live) of \(first.settings.concurrency) in use)")
                }
                // A slot freed here rings at once; one freed by another instance is seen within a second.
                _ = await (order.first ?? remotes[0]).slots.wait(timeout: .seconds(1))
            }
        } catch {
            await leaveLines(but: nil)
            await slot?.waitingForProviderSlot(false)
            throw error
        }
    }

    /// The task an external id made, or nil; server errors are retried, then the attempt fails
    /// (keeping its slot, so the next run looks again before submitting).
    private func lookUp(_ remote: ProviderRuntime, _ record: ProviderTaskRecord) async throws -> ProviderTask? {
        var tries = 0
        while true {
            do {
                // Without lookup by external id, a task id saved before a crash is queried itself.
                if !remote.provider.findsByExternalID && !record.taskID.isEmpty {
                    return try await remote.provider.query(taskID: record.taskID, kind: record.kind)
                }
                return try await remote.provider.find(externalTaskID: record.externalTaskID, kind: record.kind)
            } catch let e as ProviderError {
                tries += 1
                guard tries < remote.settings.serverErrorAttempts else {
                    throw StageFailure(code: "PROVIDER_UNAVAILABLE",
                                       message: "looking up \(record.externalTaskID): \(e.description)", retryable: true)
                }
                try await Task.sleep(for: remote.settings.backoffBase * (1 << min(tries - 1, 10)))
            }
        }
    }

    /// Saves the task id with its attempt and as the job's checkpoint, before it is followed.
    private func adopt(_ run: RunState, _ remote: ProviderRuntime, _ record: ProviderTaskRecord, _ t: ProviderTask,
                       _ a: inout Artifacts, _ note: String) async throws -> ProviderTaskRecord {
        var r = record
        r.taskID = t.taskID
        r.status = "submitted"
        try await remote.tasks.recordProviderTaskID(jobID: r.jobID, attempt: r.attempt, taskID: t.taskID, kind: r.kind)
        run.attempt = r
        run.providerJobID = t.taskID
        a.providerJobID = t.taskID
        a.providerRequestID = t.requestID
        try await step(run, .continuityChecked, .videoGeneration, 40, note, artifacts: a, checkpoint: true)
        return r
    }

    /// Follows the task by callback, polling as the fallback, until it ends. Progress comes
    /// from elapsed time against the expected time (Kling reports none), never past 84 %.
    private func follow(_ run: RunState, _ remote: ProviderRuntime, _ record: ProviderTaskRecord,
                        first: ProviderTask?) async throws -> ProviderTask {
        let job = run.writer.job
        let name = remote.provider.name
        let expected = remote.times.expected(name, job.config, default: remote.provider.expectedGenerationTime(for: job.config))
        let nowMs = Int64(Date().timeIntervalSince1970 * 1000)
        let createdMs = first?.createdAtUnixMs ?? 0
        let started = ContinuousClock.now - .milliseconds(createdMs > 0 ? max(0, min(nowMs - createdMs, 86_400_000)) : 0)
        remote.callbacks.follow(jobID: job.id, taskID: record.taskID, externalTaskID: record.externalTaskID)
        defer { remote.callbacks.stopFollowing(jobID: job.id) }
        var last: Int32 = 40
        var seen = first
        var queryErrors = 0
        while true {
            try Task.checkCancellation()
            var t = seen
            seen = nil
            if t == nil {
                t = await remote.callbacks.next(jobID: job.id, timeout: remote.settings.pollInterval)
            }
            if t == nil {
                do {
                    t = try await remote.provider.query(taskID: record.taskID, kind: record.kind)
                    queryErrors = 0
                } catch let e as ProviderError {
                    queryErrors += 1
                    if queryErrors == 1 || queryErrors % 10 == 0 {
                        logger.notice("provider query failed; following on", metadata: [
                            "reel.job_id": "\(job.id)", "error": "\(e.description)", "failures": "\(queryErrors)"])
                    }
                    continue
                }
            }
            guard let t else { continue }
            switch t.state {
            case .succeeded:
                // A provider whose tasks report no charge (Runway) prices the config itself.
                try await remote.end(record, "succeed", charge: t.costUnits ?? remote.provider.charge(for: job.config))
                remote.times.record(name, job.config, took: ContinuousClock.now - started)
                return t
            case .failed(let why):
                // A failed task the provider charged still costs.
                try await remote.end(record, "failed", charge: t.costUnits)
                if let code = t.rejectionCode {
                    // Refused for good (Runway's SAFETY.* failure codes): not retried.
                    throw StageFailure(code: code, message: "\(name) failed task \(record.taskID): \(why)", retryable: false)
                }
                throw StageFailure(code: "PROVIDER_FAILED", message: "\(name) failed task \(record.taskID): \(why)",
                                   retryable: true, newTaskOnRetry: true)
            case .submitted, .processing:
                var p = StageTimes.progress(elapsed: ContinuousClock.now - started, expected: expected)
                if let reported = t.progress {
                    // The provider's own figure (Runway's `progress` while RUNNING), on the same 40–84 scale.
                    p = min(40 + Int32((44 * Double(min(max(reported, 0), 100)) / 100).rounded(.down)), 84)
                }
                if p > last {
                    last = p
                    try await step(run, .continuityChecked, .videoGeneration, p, "generating video at \(name)",
                                   progressReport: true)
                }
            }
        }
    }
}
