import Foundation
import Logging
import ReelCore

/// Video generation at a real provider (DESIGN §5): one task per job attempt, its id saved
/// before it is followed, never paid for twice; account slots, parking and throttling cost
/// no attempt; the worker slot is given back while the job waits.
extension Pipeline {
    func generateRemotely(_ run: RunState, _ remote: ProviderRuntime, _ a: inout Artifacts, context: SceneContext,
                          slot: (any WorkerSlot)?) async throws -> ProviderTask {
        let job = run.writer.job
        let latest = try await remote.tasks.latestProviderTask(jobID: job.id)
        await slot?.park()
        do {
            let task: ProviderTask?
            let record: ProviderTaskRecord
            if let r = latest, !a.providerJobID.isEmpty, r.taskID == a.providerJobID,
               r.status != "failed", r.status != "rejected", r.status != "gone" {
                // A retried or restarted job follows the task it already paid for.
                record = r
                task = nil
                run.attempt = r
                run.providerJobID = r.taskID
                try await step(run, .continuityChecked, .videoGeneration, 40, "resuming \(provider.name) task \(r.taskID)")
            } else {
                (record, task) = try await submitRemotely(run, remote, latest, &a, context: context, slot: slot)
            }
            let done = try await follow(run, remote, record, first: task)
            await slot?.unpark()
            return done
        } catch {
            await slot?.unpark()
            throw error
        }
    }

    /// Submits the job's attempt (a new one, or the one in flight whose answer was lost) and
    /// saves the task id as a checkpoint. Returns the attempt and the task as last answered.
    private func submitRemotely(_ run: RunState, _ remote: ProviderRuntime, _ latest: ProviderTaskRecord?,
                                _ a: inout Artifacts, context: SceneContext,
                                slot: (any WorkerSlot)?) async throws -> (ProviderTaskRecord, ProviderTask) {
        let job = run.writer.job
        let name = provider.name
        var image: SourceImage? = nil
        if job.type == .continuation, let previous = context.latestSegmentJobID, previous != job.id, let post = postProcessor {
            image = await post.lastFrame(ofJob: previous)
        }
        var record: ProviderTaskRecord
        // An attempt still holding a slot may have made its task (an answer lost, a crash after
        // the submit): it is looked up by its external id before anything is submitted.
        var inDoubt: Bool
        if let r = latest, r.live {
            record = r
            inDoubt = true
            if r.kind == "text2video" { image = nil }
        } else {
            let n = (latest?.attempt ?? 0) + 1
            // The endpoint family follows what is sent (an image or not), before the ids exist.
            let shape = GenerationRequest(prompt: a.expandedScript, config: job.config, externalTaskID: "", image: image)
            record = ProviderTaskRecord(provider: name, jobID: job.id, attempt: n,
                                        externalTaskID: ProviderTaskRecord.externalID(jobID: job.id, attempt: n),
                                        kind: provider.kind(of: shape), callbackToken: ProviderCallbacks.newToken())
            inDoubt = false
        }
        let request = GenerationRequest(prompt: a.expandedScript, config: job.config, externalTaskID: record.externalTaskID,
                                        callbackURL: remote.callbackURL(token: record.callbackToken), image: image)
        run.attempt = record
        let startedNote = image == nil ? "submitting to \(name)" : "submitting to \(name) from the previous segment's last frame"
        try await step(run, .continuityChecked, .videoGeneration, 36, startedNote, provider: name)
        // Everything up to here is committed before a task is paid for: a job cancelled meanwhile
        // stops here instead.
        try await run.writer.flush()

        // A provider without lookup by external id (Runway) cannot tell whether a submit whose
        // answer was lost made a task: the attempt fails in doubt rather than pay twice.
        func failInDoubt(_ why: String) async throws -> Never {
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
                if !provider.findsByExternalID && record.taskID.isEmpty {
                    try await failInDoubt("an earlier run of attempt \(record.attempt) may have submitted its task "
                                          + "(it holds a slot with no task id)")
                }
                if let found = try await lookUp(remote, record) {
                    return (try await adopt(run, remote, record, found, &a,
                                            "found \(name) task \(found.taskID) by its external id \(record.externalTaskID)"), found)
                }
                inDoubt = false
            }
            let probe = try await remote.gate.permit()
            // In line from the first ask, so the scheduler counts it before it has to wait.
            await slot?.waitingForProviderSlot(true)
            do {
                try await remote.acquireSlot(record) { live in
                    try await step(run, .continuityChecked, .videoGeneration, 36,
                                   "waiting for a free \(name) slot (\(live) of \(remote.settings.concurrency) in use)")
                }
            } catch {
                await slot?.waitingForProviderSlot(false)
                throw error
            }
            await slot?.waitingForProviderSlot(false)
            do {
                let t = try await provider.submit(request)
                remote.gate.submitted()
                let rid = t.requestID.isEmpty ? "" : " (request_id \(t.requestID))"
                return (try await adopt(run, remote, record, t, &a, "submitted to \(name): task \(t.taskID)\(rid)"), t)
            } catch let e as ProviderError {
                remote.gate.probeEnded(probe)
                switch e.kind {
                case .parked:
                    try await remote.releaseSlot(record)
                    remote.gate.park(e.description)
                    try await step(run, .continuityChecked, .videoGeneration, 36,
                                   "waiting: \(name) account parked (\(e.description)); nothing is failed")
                case .rateLimited:
                    try await remote.releaseSlot(record)
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
                    // The attempt keeps its slot: if the task was made after all, the same
                    // external id finds it (a resubmit is refused with 1201 and looked up).
                    guard serverErrors < remote.settings.serverErrorAttempts else {
                        // Without lookup, a server error's submit counts as not made (Runway
                        // answers 502/503/504 for requests to retry): the next run submits anew
                        // instead of holding the slot for a lookup it cannot do.
                        if !provider.findsByExternalID { try await remote.end(record, "unavailable") }
                        throw StageFailure(code: "PROVIDER_UNAVAILABLE", message: e.description, retryable: true)
                    }
                    logger.notice("provider server error; resubmitting", metadata: [
                        "reel.job_id": "\(job.id)", "error": "\(e.description)", "retry.attempt": "\(serverErrors)"])
                    try await Task.sleep(for: backoff())
                case .inDoubt:
                    if !provider.findsByExternalID { try await failInDoubt(e.description) }
                    logger.notice("submit answer lost; looking the task up by its external id", metadata: [
                        "reel.job_id": "\(job.id)", "error": "\(e.description)"])
                    inDoubt = true
                case .externalIDTaken:
                    if let found = try await lookUp(remote, record) {
                        return (try await adopt(run, remote, record, found, &a,
                                                "found \(name) task \(found.taskID) by its external id \(record.externalTaskID)"), found)
                    }
                    try await remote.end(record, "rejected")
                    throw StageFailure(code: "PROVIDER_BAD_REQUEST", message: e.description, retryable: false)
                }
            }
        }
    }

    /// The task an external id made, or nil; server errors are retried, then the attempt fails
    /// (keeping its slot, so the next run looks again before submitting).
    private func lookUp(_ remote: ProviderRuntime, _ record: ProviderTaskRecord) async throws -> ProviderTask? {
        var tries = 0
        while true {
            do {
                // Without lookup by external id, a task id saved before a crash is queried itself.
                if !provider.findsByExternalID && !record.taskID.isEmpty {
                    return try await provider.query(taskID: record.taskID, kind: record.kind)
                }
                return try await provider.find(externalTaskID: record.externalTaskID, kind: record.kind)
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
        let name = provider.name
        let expected = remote.times.expected(name, job.config, default: provider.expectedGenerationTime(for: job.config))
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
                    t = try await provider.query(taskID: record.taskID, kind: record.kind)
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
                try await remote.end(record, "succeed", charge: t.costUnits ?? provider.charge(for: job.config))
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
