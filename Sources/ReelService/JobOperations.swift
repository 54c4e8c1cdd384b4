import ReelCore
import ReelScheduler
import ReelObservability

/// How creates are checked beyond `CreateJobInput.validated` and priced (DESIGN §2 "Cost", §8).
public struct CreatePolicy: Sendable {
    /// `--webhook-allow-private`.
    public var allowPrivateWebhooks = false
    /// A job's expected cost in weighted provider units, before it runs (reserved against the
    /// tenant's budget when the job is accepted).
    public var expectedCost: @Sendable (NewJob) -> Double = { _ in 0 }
    /// How long a run of the job is expected to take in ms (the ETA estimator's figure): a
    /// deadline's priority boost is computed from it (`PriorityScore.enqueuedAt`).
    public var expectedRunMs: @Sendable (NewJob) -> Int64 = { _ in 0 }

    public init() {}

    func prepare(_ input: CreateJobInput, caller: Caller) throws(ReelError) -> NewJob {
        var new = try input.validated(allowPrivateWebhooks: allowPrivateWebhooks)
        new.tenantID = caller.tenantID
        new.expectedCostUnits = expectedCost(new)
        new.expectedRunMs = expectedRunMs(new)
        return new
    }
}

/// The job operations of DESIGN §2 on decoded domain values, for every caller: the gRPC
/// routes (protobuf in and out) and the HTTP/JSON routes call exactly these.
public struct JobOperations: Sendable {
    let store: any JobStore
    let hub: JobEventHub
    let scheduler: Scheduler?
    let cache: HotJobCache
    /// The gRPC watches, served from the event loops.
    let fanout: WatchFanout
    /// What a create is checked and priced by (set by reeld from its flags).
    public var createPolicy = CreatePolicy()
    /// ETAs on every job answered and every event replayed (nil: none).
    let eta: JobETA?

    public init(store: any JobStore, hub: JobEventHub, scheduler: Scheduler?, cache: HotJobCache? = nil, eta: JobETA? = nil) {
        self.store = store; self.hub = hub; self.scheduler = scheduler
        self.cache = cache ?? HotJobCache(hub: hub)
        self.eta = eta
        self.fanout = WatchFanout(store: store, hub: hub, eta: eta)
    }

    /// Forgets what memory holds of these jobs (retention renumbered their events and changed
    /// their `last_event_seq`: no read may be answered from the copy before).
    public func forget(jobIDs: [String]) {
        for id in jobIDs { cache.invalidate(id: id) }
    }

    /// The job with its ETA (when ETAs are on).
    func withETA(_ job: Job) async -> Job { await eta?.job(job) ?? job }

    /// Validates, stores (committed) and enqueues; a repeated idempotency key returns the first job.
    public func create(_ input: CreateJobInput, caller: Caller) async throws -> Job {
        let new = try createPolicy.prepare(input, caller: caller)
        let (stored, event) = try await store.createJob(new)
        let job = await withETA(stored)  // before the event: its ETA needs the job's config
        if let event {
            ReelMetrics.jobCreated(type: job.type, tier: job.tier)
            hub.publish(event)
            scheduler?.notifyWork()
        }
        return job
    }

    /// Many creates in one statement and one commit (`CreateJobs`): each item is validated on its
    /// own, so one bad item fails alone; the answers come in input order.
    public func create(_ inputs: [CreateJobInput], caller: Caller) async throws -> [Result<Job, ReelError>] {
        try Validate.batch(count: inputs.count)
        var results = [Result<Job, ReelError>?](repeating: nil, count: inputs.count)
        var valid: [(index: Int, new: NewJob)] = []
        for (i, input) in inputs.enumerated() {
            do throws(ReelError) {
                valid.append((i, try createPolicy.prepare(input, caller: caller)))
            } catch {
                results[i] = .failure(ReelError(error.code, "jobs[\(i)].\(error.message)"))
            }
        }
        let stored = try await store.createJobs(valid.map(\.new))
        var made: [(index: Int, job: Job, event: JobEvent?)] = []
        for ((i, _), answer) in zip(valid, stored) {
            switch answer {
            case .success(let (job, event)): made.append((i, job, event))
            case .failure(let why): results[i] = .failure(ReelError(why.code, "jobs[\(i)]: \(why.message)"))
            }
        }
        if let eta {
            let jobs = await eta.jobs(made.map(\.job))
            for n in made.indices { made[n].job = jobs[n] }
        }
        var created = false
        for (i, job, event) in made {
            results[i] = .success(job)
            if let event {
                created = true
                ReelMetrics.jobCreated(type: job.type, tier: job.tier)
                hub.publish(event)
            }
        }
        if created { scheduler?.notifyWork() }
        return results.map { $0! }
    }

    /// The job's current state, from memory when it is hot (see `HotJobCache`).
    public func get(id rawID: String, caller: Caller) async throws -> Job {
        try await getTellingSource(id: rawID, caller: caller).job
    }

    /// `get` when memory alone can answer, as the protobuf bytes of the job: the job is hot and
    /// `caller` (asked only then) knows who calls without the database. nil leaves the call to
    /// `get`, which also gives an invalid id its error. Never waits, so the event loop may call it.
    public func getIfCached(id rawID: String, caller: () throws -> Caller?) throws -> [UInt8]? {
        guard let id = try? Validate.jobID(rawID), let hot = cache.cachedEncoded(id: id), let who = try caller() else { return nil }
        guard who.owns(hot.job) else { throw ReelError.notFound(jobID: id) }
        return hot.encoded
    }

    /// `get`, and whether the answer came from memory.
    public func getTellingSource(id rawID: String, caller: Caller) async throws -> (job: Job, fromMemory: Bool) {
        let id = try Validate.jobID(rawID)
        // The ETA is set before caching: the cached copy (and its encoding) carries it.
        let found = try await cache.job(id: id) {
            guard let job = try await store.job(id: id) else { return nil }
            return await withETA(job)
        }
        guard let found, caller.owns(found.job) else { throw ReelError.notFound(jobID: id) }
        return found
    }

    public func cancel(id rawID: String, reason: String, caller: Caller) async throws -> Job {
        let id = try Validate.jobID(rawID)
        if reason.unicodeScalars.count > 1024 { throw ReelError.invalid("reason", "must be at most 1024 characters") }
        let job = try await ownedJob(id, caller)
        guard job.status.canTransition(to: .cancelled) else {
            throw ReelError(.failedPrecondition, "job \(id) is \(job.status.name); only queued or running jobs can be cancelled", jobID: id)
        }
        let change = StateChange(status: .cancelled, stage: nil, progress: nil,
                                 message: reason.isEmpty ? "cancelled" : "cancelled: \(reason)")
        let (updated, event) = try await store.apply(change, to: id)
        cache.invalidate(id: id)
        ReelMetrics.jobEnded(updated, stage: updated.stage)
        hub.publish(event)
        await scheduler?.cancelLocal(jobID: id)
        return await withETA(updated)
    }

    public func retry(id rawID: String, caller: Caller) async throws -> Job {
        let id = try Validate.jobID(rawID)
        let job = try await ownedJob(id, caller)
        guard job.status == .failed else {
            throw ReelError(.failedPrecondition, "job \(id) is \(job.status.name); only failed jobs can be retried", jobID: id)
        }
        let change = StateChange(status: .queued, stage: .pending, progress: 0, message: "retry requested",
                                 deadLettered: false, retryCount: 0, runAfterMs: 0)
        let (updated, event) = try await store.apply(change, to: id)
        cache.invalidate(id: id)
        let answered = await withETA(updated)  // before the event: its ETA needs the job's config
        hub.publish(event)
        scheduler?.notifyWork()
        return answered
    }

    public func list(_ filter: ListJobsInput, caller: Caller) async throws -> JobPage {
        let pageSize = try filter.validatedPageSize()
        // An admin sees every tenant's jobs (dead-letter reprocessing); others their own.
        var page = try await store.listJobs(filter, pageSize: pageSize, tenantID: caller.admin ? nil : caller.tenantID)
        if let eta { page.jobs = await eta.jobs(page.jobs) }
        return page
    }

    /// The job's stored events with `seq > afterSeq`, in order (its history: `afterSeq` 0 is all).
    public func history(id rawID: String, afterSeq: Int64, caller: Caller) async throws -> [JobEvent] {
        let id = try Validate.jobID(rawID)
        try Validate.afterSeq(afterSeq)
        let job = try await ownedJob(id, caller)
        let events = try await store.events(jobID: id, afterSeq: afterSeq)
        return eta?.stored(events, of: job) ?? events
    }

    /// How a watch ended when it did not throw.
    public enum WatchEnd: Sendable, Equatable {
        /// The terminal event (or a terminal snapshot) was sent.
        case finished
        /// The watcher's task was cancelled (the client went away).
        case cancelled
        /// The watcher fell more than the hub's buffer behind; resume after `lastSeq`.
        case fellBehind(lastSeq: Int64)
    }

    /// Snapshot (or stored events after `afterSeq`), then live events in `seq` order, until the
    /// terminal event, for a transport that waits on each message in a task of its own (HTTP:
    /// SSE, WebSocket; gRPC streams are served by `fanout` instead). Subscribing before reading
    /// storage means no event falls in between. Errors before the first `send` (bad id, not
    /// found) are thrown; so are `send`'s own.
    public func watch(id rawID: String, afterSeq: Int64, caller: Caller,
                      send: (JobEvent) async throws -> Void) async throws -> WatchEnd {
        let id = try Validate.jobID(rawID)
        try Validate.afterSeq(afterSeq)
        let live = hub.subscribe(jobID: id)
        var cursor: WatchCursor
        if afterSeq == 0 {
            let job = await withETA(try await ownedJob(id, caller))
            try await send(JobEvent.snapshot(of: job))
            cursor = WatchCursor(snapshotOf: job)
        } else {
            cursor = WatchCursor(after: afterSeq)
            try await fanout.sendStored(id, &cursor, opening: caller, send: send)
        }
        if cursor.ended { return .finished }
        for await event in live {
            switch cursor.step(event) {
            case .old: continue
            case .next: try await WatchFanout.sendInOrder([event], &cursor, send: send)
            // Published out of order, or by another writer: fill the gap from storage.
            case .gap: try await fanout.sendStored(id, &cursor, send: send)
            }
            if cursor.ended { return .finished }
        }
        if Task.isCancelled { return .cancelled }
        return .fellBehind(lastSeq: cursor.last)
    }

    /// `watch` for a gRPC stream served from its event loop, on that loop: the call is valid and
    /// its caller known. No task stays behind for it (see `WatchFanout`).
    func watch(jobID: String, afterSeq: Int64, caller: Caller, on stream: any WatchStream) {
        fanout.open(jobID: jobID, afterSeq: afterSeq, caller: caller, stream: stream)
    }

    /// The job if the caller may see it; another tenant's job does not exist for them.
    /// Always read from storage: the rules decided here must see the committed state.
    func ownedJob(_ id: String, _ caller: Caller) async throws -> Job {
        guard let job = try await store.job(id: id), caller.owns(job) else { throw ReelError.notFound(jobID: id) }
        return job
    }
}
