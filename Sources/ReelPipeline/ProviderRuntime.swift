import Logging
import ReelCore
import ReelObservability

/// What a run needs to use a real provider (DESIGN §5): the account's task slots (held in the
/// database across every reeld), its parked and throttled state, the callbacks that reach this
/// process, and the measured generation times.
public final class ProviderRuntime: Sendable {
    public struct Settings: Sendable {
        /// Live tasks at most, for the account, across all instances (`--provider-concurrency`).
        public var concurrency: Int
        /// Polling, the fallback for callbacks that never come (`--provider-poll-ms`).
        public var pollInterval: Duration
        /// Where the HTTP listener is reachable from outside (`--public-url`); nil: no callbacks.
        public var publicURL: String?
        /// At most one probe submission this often while parked.
        public var probeInterval: Duration
        /// The first wait after a throttled answer or a server error (`--retry-base-ms`).
        public var backoffBase: Duration
        /// Server errors in a row before the attempt fails (and is retried later).
        public var serverErrorAttempts: Int
        /// This provider's weight for `cost_units` (`--provider-cost-weight`, default 1).
        public var costWeight: Double = 1

        public init(concurrency: Int, pollInterval: Duration, publicURL: String? = nil,
                    probeInterval: Duration = .seconds(30), backoffBase: Duration = .seconds(1),
                    serverErrorAttempts: Int = 4) {
            self.concurrency = max(1, concurrency); self.pollInterval = pollInterval
            var url = publicURL.flatMap { $0.isEmpty ? nil : $0 }
            while url?.hasSuffix("/") == true { url!.removeLast() }
            self.publicURL = url
            self.probeInterval = probeInterval; self.backoffBase = backoffBase
            self.serverErrorAttempts = max(1, serverErrorAttempts)
        }
    }

    public let provider: any VideoProvider
    public let settings: Settings
    public let callbacks: ProviderCallbacks
    let tasks: any ProviderTaskStore
    let gate: ProviderGate
    let slots = Doorbell()
    /// Measured generation times (shared with the ETA estimator when reeld wires one).
    let times: StageTimes
    let logger: Logger

    public init(provider: any VideoProvider, tasks: any ProviderTaskStore, settings: Settings,
                callbacks: ProviderCallbacks = ProviderCallbacks(), times: StageTimes = StageTimes(), logger: Logger) {
        self.provider = provider; self.tasks = tasks; self.settings = settings; self.callbacks = callbacks
        self.times = times
        var log = logger
        log[metadataKey: "reel.provider"] = "\(provider.name)"
        self.logger = log
        self.gate = ProviderGate(provider: provider.name, probeInterval: settings.probeInterval,
                                 throttleBase: settings.backoffBase, logger: log)
        ReelMetrics.providerHealthy(provider: provider.name, true)
    }

    public var isParked: Bool { gate.isParked }

    func callbackURL(token: String) -> String? {
        settings.publicURL.map { $0 + ProviderCallbacks.path(provider: provider.name, token: token) }
    }

    /// One ask for an account slot for `record`: true when taken (or already held), else the
    /// job is in this provider's line for one (`acquireSlot` waits; routing asks each provider).
    func acquireSlotOnce(_ record: ProviderTaskRecord) async throws -> Bool {
        try await tasks.acquireProviderSlot(record, cap: settings.concurrency)
    }

    func releaseSlot(_ record: ProviderTaskRecord) async throws {
        try await tasks.releaseProviderSlot(jobID: record.jobID, attempt: record.attempt)
        slots.ring()
    }

    /// The attempt ended; `charge` is what the provider says it cost (Kling's
    /// `final_unit_deduction`), recorded with the attempt and added to the job's `cost_units`.
    func end(_ record: ProviderTaskRecord, _ status: String, charge: Double? = nil) async throws {
        if let added = try await tasks.endProviderTask(jobID: record.jobID, attempt: record.attempt, status: status,
                                                        charge: charge, weight: settings.costWeight) {
            ReelMetrics.costCharged(tenant: added.tenantID, user: added.userID, units: added.units)
        }
        slots.ring()
    }

    /// Reel's use of the account is lowered to the tasks it has live besides `refused` (whose
    /// slot it still holds), for a while: the provider refused one more for the account's
    /// concurrency, so another client holds slots.
    func yieldSlots(besides refused: ProviderTaskRecord, holdFor hold: Duration) async throws {
        let live = max(0, try await tasks.liveProviderTasks(provider: provider.name) - 1)
        try await tasks.limitProviderCap(provider: provider.name, cap: live, holdMs: max(Int64(hold.wholeMilliseconds), 1))
        logger.notice("the provider refused a task for the account's concurrency: Reel holds to \(live) live task(s) for \(hold)")
    }

    func markUnhealthy() { gate.markUnhealthy() }

    /// The provider's state for `GET /v1/providers` (its live tasks read from the database).
    public func status(order: Int) async -> ProviderStatus {
        let g = gate.snapshot
        let live = (try? await tasks.liveProviderTasks(provider: provider.name)) ?? 0
        return ProviderStatus(name: provider.name, order: order, parked: g.parked, parkedReason: g.reason,
                              circuitOpen: g.circuitOpen, healthy: g.healthy, liveTasks: live, concurrency: settings.concurrency)
    }

    // MARK: - Tasks nobody follows

    /// One pass over live tasks that no run follows (the job was cancelled or ended, or a
    /// newer attempt exists): a task the provider has ended gives its slot back. Kling has no
    /// cancel call, so a cancelled job's task keeps its slot until Kling ends it.
    public func sweep() async {
        do {
            for r in try await tasks.unfollowedProviderTasks(provider: provider.name, limit: 50) {
                let found: ProviderTask?
                do {
                    found = r.taskID.isEmpty ? try await provider.find(externalTaskID: r.externalTaskID, kind: r.kind)
                        : try await provider.query(taskID: r.taskID, kind: r.kind)
                } catch let e as ProviderError where e.providerCode == 1203 || e.providerCode == 1202 {
                    found = nil
                }
                switch found?.state {
                case nil: try await end(r, "gone")
                case .succeeded?: try await end(r, "succeed", charge: found?.costUnits)
                case .failed?: try await end(r, "failed", charge: found?.costUnits)
                default: continue
                }
                logger.info("an unfollowed provider task ended; its slot is free",
                            metadata: ["reel.job_id": "\(r.jobID)", "reel.provider_job_id": "\(r.taskID)"])
            }
            let live = try await tasks.liveProviderTasks(provider: provider.name)
            ReelMetrics.providerTasks(provider: provider.name, live: live, cap: settings.concurrency)
        } catch {
            logger.debug("provider task sweep failed", metadata: ["error": "\(error)"])
        }
    }

    /// How often `sweep` runs: every poll interval, at least every 30 s and at most every second.
    public var sweepInterval: Duration { min(max(settings.pollInterval, .seconds(1)), .seconds(30)) }

    // MARK: - Callbacks

    public struct CallbackAnswer: Sendable, Equatable {
        public var status: Int
        public var message: String
    }

    /// A provider's POST to `/v1/providers/<name>/callback/<token>`: matched to its attempt by
    /// the token, then by task id and external id; anything that does not match changes nothing.
    public func receiveCallback(token: String, body: [UInt8]) async -> CallbackAnswer {
        guard token.count >= 32, token.allSatisfy(\.isHexDigit) else { return .init(status: 404, message: "unknown callback") }
        let record: ProviderTaskRecord?
        do { record = try await tasks.providerTask(callbackToken: token) } catch {
            return .init(status: 503, message: "storage unavailable")
        }
        guard let record, record.provider == provider.name else { return .init(status: 404, message: "unknown callback") }
        guard var task = provider.parseCallback(body) else {
            return .init(status: 400, message: "the body is not a \(provider.name) task")
        }
        if task.kind.isEmpty { task.kind = record.kind }
        switch callbacks.deliver(task, for: record) {
        case .mismatch(let why):
            logger.warning("callback ignored", metadata: ["reel.job_id": "\(record.jobID)", "reason": "\(why)"])
            return .init(status: 409, message: why)
        case .delivered:
            return .init(status: 200, message: "ok")
        case .notFollowedHere:
            // No run here follows it (one elsewhere polls, or none does: a cancelled job). The
            // task has ended at the provider either way, so its slot is free now; a later run
            // of the job still resumes a succeeded task, and makes a new attempt after a failed one.
            if task.state.hasEnded, record.live, !record.taskID.isEmpty {
                try? await end(record, task.state == .succeeded ? "succeed" : "failed", charge: task.costUnits)
            }
            return .init(status: 200, message: "ok")
        }
    }
}
