import ReelCore
import Logging
import ReelObservability

/// Hands ready jobs to free worker slots in priority order (the order is the store's claim
/// order, which is `PriorityScore.sortKey`), keeps their leases alive while they run, and
/// returns jobs whose leases expired to the queue.
public actor Scheduler {
    public struct Config: Sendable {
        public var workers: Int
        public var workerID: String
        public var leaseMs: Int64
        public var pollInterval: Duration
        /// Jobs held at once, parked (waiting at a provider) or not.
        public var maxInFlight: Int
        public init(workers: Int, workerID: String, leaseMs: Int64 = 30_000, pollInterval: Duration = .milliseconds(500),
                    maxInFlight: Int? = nil) {
            self.workers = workers; self.workerID = workerID; self.leaseMs = leaseMs; self.pollInterval = pollInterval
            self.maxInFlight = maxInFlight ?? workers * 8
        }
    }

    public typealias Runner = @Sendable (Job, any WorkerSlot) async -> Void

    private let store: any JobStore
    private let hub: JobEventHub
    private let config: Config
    private let runner: Runner
    private let logger: Logger
    private var running: [String: Task<Void, Never>] = [:]
    /// Workers connected over RPC (issue #9): what they serve, their slots, what they hold.
    private var external: [String: ExternalWorker] = [:]
    private var parked: Set<String> = []
    /// Parked jobs in line for a provider account's task slot (`WorkerSlot.waitingForProviderSlot`).
    private var inProviderLine: Set<String> = []
    /// Parked jobs back from the provider, waiting for a worker slot (served before new claims).
    private var unparkWaiters: [(id: String, resume: CheckedContinuation<Void, Never>)] = []
    private var loops: [Task<Void, Never>] = []
    private var stopping = false
    private let wake: AsyncStream<Void>.Continuation
    private let wakeStream: AsyncStream<Void>

    public init(store: any JobStore, hub: JobEventHub, config: Config, logger: Logger, runner: @escaping Runner) {
        self.store = store; self.hub = hub; self.config = config; self.logger = logger; self.runner = runner
        (wakeStream, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    public func start() {
        loops.append(Task { await self.heartbeatLoop() })
        loops.append(Task { await self.dispatchLoop() })
        loops.append(Task { await self.reapLoop() })
        loops.append(Task { await self.dueLoop() })
        // One timer for the periodic poll, rather than one armed and cancelled per wake-up
        // (which the profile showed at ~15 % of reeld's CPU under CreateJob load).
        loops.append(Task { [pollInterval = config.pollInterval] in
            while !Task.isCancelled {
                try? await Task.sleep(for: pollInterval)
                self.notifyWork()
            }
        })
    }

    /// New work may be ready (a job was created or requeued here).
    public nonisolated func notifyWork() { wake.yield() }

    public var runningCount: Int { running.count }

    /// The slots of the external workers connected here.
    public var externalSlots: Int { external.values.reduce(0) { $0 + Int($1.hello.slots) } }

    private var activeCount: Int { running.count - parked.count }

    /// Free slots for new claims: workers not busy with an unparked job, after the parked jobs
    /// that wait to come back, within the in-flight cap; none while as many jobs as there are
    /// workers wait in line for a provider's scarce slots. Those slots are then what limits
    /// throughput, and a job claimed only to wait would take its place in the line now, by the
    /// fair share of the time it was claimed, instead of when a slot is near (issue #17 item 3).
    private var freeSlots: Int {
        min(config.workers - activeCount - unparkWaiters.count, config.maxInFlight - running.count,
            config.workers - inProviderLine.count)
    }

    func waitingForProviderSlot(_ id: String, _ waiting: Bool) {
        guard running[id] != nil else { return }
        if waiting {
            inProviderLine.insert(id)
        } else if inProviderLine.remove(id) != nil {
            notifyWork()
        }
    }

    func park(_ id: String) {
        guard running[id] != nil else { return }
        parked.insert(id)
        admitUnparked()
        notifyWork()
    }

    /// Takes a worker slot again; waits while every slot is busy, so `--workers` bounds the
    /// jobs doing work here at any moment.
    func unpark(_ id: String) async {
        guard parked.contains(id) else { return }
        if activeCount < config.workers && unparkWaiters.isEmpty {
            parked.remove(id)
            return
        }
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            unparkWaiters.append((id, cont))
        }
    }

    private func admitUnparked() {
        while let next = unparkWaiters.first, activeCount < config.workers || stopping {
            unparkWaiters.removeFirst()
            parked.remove(next.id)
            next.resume.resume()
        }
    }

    /// Stops a job running here now (it was cancelled); elsewhere the next checkpoint does it.
    public func cancelLocal(jobID: String) { running[jobID]?.cancel() }

    private func dispatchLoop() async {
        var wakeups = wakeStream.makeAsyncIterator()
        while !stopping {
            let free = freeSlots
            var claimed = 0
            if free > 0 {
                do {
                    let jobs = try await store.claim(workerID: config.workerID, limit: free, leaseMs: config.leaseMs)
                    claimed = jobs.count
                    for (job, event) in jobs where !stopping {
                        hub.publish(event)
                        launch(job)
                    }
                } catch {
                    logger.warning("claim failed", metadata: ["error": "\(error)"])
                }
            }
            if stopping { break }
            let externalClaimed = await assignToExternalWorkers()
            if (claimed > 0 && claimed == free) || externalClaimed { continue }
            // Sleep until woken (new job, a worker freed) or the next periodic poll.
            _ = await wakeups.next()
        }
    }

    // MARK: external workers

    struct ExternalWorker {
        let hello: WorkerHello
        let push: AsyncStream<Job>.Continuation
        var held: Set<String> = []
        var free: Int { Int(hello.slots) - held.count }
    }

    /// A worker connects: assignments arrive on the returned stream, never more than its slots.
    public func connect(_ hello: WorkerHello) async throws -> AsyncStream<Job> {
        guard external[hello.workerID] == nil else {
            throw ReelError(.failedPrecondition, "worker \(hello.workerID) is already connected")
        }
        // A worker that reconnects still holds the jobs it leased before: they take its slots.
        // Its lease: extended if live (it keeps what it held), else taken afresh after what it
        // held went back to the queue.
        let (_, requeued) = try await store.workerHeartbeat(workerID: hello.workerID, leaseMs: config.leaseMs)
        for (_, event) in requeued { hub.publish(event) }
        let held = try await store.heldJobIDs(workerID: hello.workerID)
        guard external[hello.workerID] == nil else {
            throw ReelError(.failedPrecondition, "worker \(hello.workerID) is already connected")
        }
        let (stream, push) = AsyncStream<Job>.makeStream(bufferingPolicy: .unbounded)
        external[hello.workerID] = ExternalWorker(hello: hello, push: push, held: held)
        notifyWork()
        return stream
    }

    /// The worker's stream ended. Its jobs keep their leases until they expire (then the
    /// reaper requeues them), so a worker that reconnects quickly can still finish them.
    public func disconnect(workerID: String) {
        external[workerID]?.push.finish()
        external[workerID] = nil
    }

    /// A job no longer takes one of the worker's slots (completed, failed, lease lost).
    public func released(workerID: String, jobID: String) {
        if external[workerID]?.held.remove(jobID) != nil { notifyWork() }
    }

    public var leaseMs: Int64 { config.leaseMs }

    /// Claims for each connected worker with free slots; true when anything was assigned.
    private func assignToExternalWorkers() async -> Bool {
        var assigned = false
        for id in Array(external.keys) {
            guard external[id] != nil, !stopping else { continue }
            // The database says what the worker still holds: jobs cancelled, reaped or finished
            // behind its back stop taking its slots.
            if let held = try? await store.heldJobIDs(workerID: id), external[id] != nil { external[id]!.held = held }
            guard let w = external[id], w.free > 0 else { continue }
            let types = w.hello.jobTypes.isEmpty ? nil : w.hello.jobTypes
            do {
                let jobs = try await store.claim(workerID: id, limit: w.free, leaseMs: config.leaseMs, types: types)
                for (job, event) in jobs {
                    hub.publish(event)
                    if external[id] != nil {
                        external[id]!.held.insert(job.id)
                        external[id]!.push.yield(job)
                        assigned = true
                    }
                    // A worker gone meanwhile: the lease expires and the job is requeued.
                }
            } catch {
                logger.warning("claim for worker failed", metadata: ["reel.worker_id": "\(id)", "error": "\(error)"])
            }
        }
        return assigned
    }

    private func launch(_ job: Job) {
        let id = job.id
        let slot = Slot(jobID: id, scheduler: self)
        running[id] = Task {
            await self.runner(job, slot)
            self.finished(id)
        }
    }

    private func finished(_ id: String) {
        running[id] = nil
        parked.remove(id)
        inProviderLine.remove(id)
        admitUnparked()
        notifyWork()
    }

    /// Renews this reeld's worker lease every third of its length: one write per interval for
    /// all the jobs it runs, not one per job. A lease found lapsed (the process stalled past
    /// it) has had its jobs requeued by then: their runs here stop, and a fresh lease is taken.
    private func heartbeatLoop() async {
        let every = Duration.milliseconds(max(config.leaseMs / 3, 50))
        while !stopping && !Task.isCancelled {
            do {
                let (lapsed, requeued) = try await store.workerHeartbeat(workerID: config.workerID, leaseMs: config.leaseMs)
                for (job, event) in requeued {
                    hub.publish(event)
                    running[job.id]?.cancel()
                    ReelMetrics.jobRetried(stage: job.stage, error: "LEASE_EXPIRED")
                }
                if lapsed && !requeued.isEmpty {
                    logger.warning("worker lease had lapsed; its jobs were requeued", metadata: ["jobs": "\(requeued.count)"])
                    notifyWork()
                }
            } catch {
                logger.warning("lease renewal failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: every)
        }
    }

    /// Delayed jobs (and retries backing off) join the ready queue when their time comes
    /// (`promoteDueJobs`), and the dispatch loop is woken for them. Sleeps until the next one is
    /// due, at most a poll interval, since another reeld may add an earlier one meanwhile.
    private func dueLoop() async {
        while !stopping && !Task.isCancelled {
            var pause = config.pollInterval
            do {
                let (promoted, next) = try await store.promoteDueJobs(limit: 1000)
                if promoted > 0 { notifyWork() }
                if let next {
                    // Due already but not promoted: another reeld holds those rows this instant.
                    let ms = next > 0 ? next : (promoted > 0 ? 0 : 5)
                    pause = min(pause, .milliseconds(ms))
                }
            } catch {
                logger.warning("promoting due jobs failed", metadata: ["error": "\(error)"])
            }
            if pause > .zero { try? await Task.sleep(for: pause) }
        }
    }

    private func reapLoop() async {
        let every = Duration.milliseconds(max(config.leaseMs / 2, 100))
        while !stopping {
            try? await Task.sleep(for: every)
            if stopping { return }
            do {
                let requeued = try await store.requeueExpiredLeases()
                for (job, event) in requeued {
                    hub.publish(event)
                    for id in Array(external.keys) { external[id]?.held.remove(job.id) }
                    ReelMetrics.jobRetried(stage: job.stage, error: "LEASE_EXPIRED")
                    logger.info("requeued job with expired lease", metadata: ["reel.job_id": "\(job.id)"])
                }
                if !requeued.isEmpty { notifyWork() }
            } catch {
                logger.warning("lease reaper failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Stops claiming, stops running jobs at their next checkpoint and hands them back to the queue.
    public func shutdown() async {
        stopping = true
        for (_, w) in external { w.push.finish() }
        external.removeAll()
        admitUnparked()
        notifyWork()
        for l in loops { l.cancel() }
        let tasks = Array(running.values)
        for t in tasks { t.cancel() }
        for t in tasks { await t.value }
        do {
            for (_, event) in try await store.releaseLeases(workerPrefix: config.workerID) { hub.publish(event) }
        } catch {
            logger.warning("could not hand back leases; they will expire", metadata: ["error": "\(error)"])
        }
    }
}

/// The scheduler's side of `WorkerSlot`.
struct Slot: WorkerSlot {
    let jobID: String
    let scheduler: Scheduler
    func park() async { await scheduler.park(jobID) }
    func unpark() async { await scheduler.unpark(jobID) }
    func waitingForProviderSlot(_ waiting: Bool) async { await scheduler.waitingForProviderSlot(jobID, waiting) }
}
