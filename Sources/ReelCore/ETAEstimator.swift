import Synchronization

/// When a job is expected to reach FINAL_READY (DESIGN §2 "ETA"): now, plus the wait for a
/// worker slot given the queued jobs ahead of it, plus the expected time of each stage it has
/// left. Stage times start from the configured ones (the simulated provider: `--sim-stage-ms`
/// per step) and follow what this process measures (`StageTimes`, a moving average per
/// provider, model, mode and duration). The one place ETAs are made: the service asks it for
/// every job it answers and every event it publishes. Per process, in memory.
public final class ETAEstimator: Sendable {
    /// What stages take before anything is measured.
    public struct Defaults: Sendable {
        /// One pipeline step's wait (`--sim-stage-ms`): script expansion, continuity and (without
        /// a post-processor) upload take one each.
        public var stepDelay: Duration
        /// Video generation for a config: the simulated provider's polls × `stepDelay`, a real
        /// provider's published figure.
        public var generation: @Sendable (JobConfig) -> Duration
        /// Upload / post-processing (nil: one `stepDelay`).
        public var upload: Duration?

        public init(stepDelay: Duration, generation: @escaping @Sendable (JobConfig) -> Duration, upload: Duration? = nil) {
            self.stepDelay = stepDelay; self.generation = generation; self.upload = upload
        }

        /// The simulated provider: each generation is `polls` polls, one `stepDelay` apart.
        public static func simulated(stepDelay: Duration, polls: Int) -> Defaults {
            Defaults(stepDelay: stepDelay, generation: { _ in stepDelay * max(1, polls) })
        }
    }

    /// Where the job stands in the queue (refreshed by the service from storage).
    public struct QueueSnapshot: Sendable {
        /// Queued job ids in claim order (the first few thousand).
        public var order: [String: Int]
        public var queued: Int
        public var running: Int
        /// Worker slots serving the queue across every live reeld on the database (their own
        /// workers and the external workers connected to them); 0: unknown.
        public var slots: Int
        public init(order: [String: Int] = [:], queued: Int = 0, running: Int = 0, slots: Int = 0) {
            self.order = order; self.queued = queued; self.running = running; self.slots = slots
        }
    }

    /// Stages in pipeline order with the progress each starts and ends at (DESIGN §5).
    static let bands: [(stage: Stage, from: Int32, to: Int32)] = [
        (.scriptExpansion, 0, 25), (.continuityValidation, 25, 35), (.videoGeneration, 35, 85),
        (.upload, 85, 95), (.finalization, 95, 100),
    ]

    public let provider: String
    public let defaults: Defaults
    /// Worker slots that serve the queue (at least 1): this process's, until a queue snapshot
    /// tells how many all instances have.
    public let slots: Int
    /// A real provider's account slots (`--provider-concurrency`), shared by every instance: no
    /// more jobs than that run at once, however many workers there are. nil: no such limit.
    public let providerSlots: Int?
    public let times: StageTimes
    private struct Profile { var config: JobConfig; var deadlineUnixMs: Int64; var runAtUnixMs: Int64 }
    private struct State {
        var profiles: [String: Profile] = [:]
        var queue = QueueSnapshot()
    }
    private let state = Mutex(State())
    /// Jobs remembered at most (a job's config and deadline, for its events).
    let capacity: Int

    public init(provider: String, defaults: Defaults, slots: Int, providerSlots: Int? = nil, times: StageTimes = StageTimes(),
                capacity: Int = 100_000) {
        self.provider = provider; self.defaults = defaults; self.slots = max(1, slots); self.times = times
        self.providerSlots = providerSlots.map { max(1, $0) }
        self.capacity = max(1, capacity)
    }

    // MARK: - Stage times

    public func defaultTime(_ config: JobConfig, _ stage: Stage) -> Duration {
        switch stage {
        case .scriptExpansion, .continuityValidation: defaults.stepDelay
        case .videoGeneration: defaults.generation(config)
        case .upload: defaults.upload ?? defaults.stepDelay
        default: .zero
        }
    }

    /// The expected time of `stage` for `config`: measured, else the default.
    public func expected(_ config: JobConfig, _ stage: Stage) -> Duration {
        times.expected(provider, config, stage, default: defaultTime(config, stage))
    }

    /// A stage of `config` took `took` (fed by the pipeline as it leaves each stage).
    public func record(_ config: JobConfig, _ stage: Stage, took: Duration) {
        times.record(provider, config, stage, took: took)
    }

    /// The whole run, from claim to FINAL_READY, in milliseconds.
    public func expectedRunMs(_ config: JobConfig) -> Int64 {
        Self.bands.reduce(0) { $0 + expected(config, $1.stage).inMilliseconds }
    }

    /// What is left of a run at `stage` and `progress`: the rest of the current stage (by its
    /// progress band) and every later stage. A queued (or pending) job has the whole run left.
    public func remainingMs(_ config: JobConfig, stage: Stage, progress: Int32) -> Int64 {
        guard let at = Self.bands.firstIndex(where: { $0.stage == stage }) else { return expectedRunMs(config) }
        var ms: Int64 = 0
        for (i, band) in Self.bands.enumerated() where i >= at {
            let whole = expected(config, band.stage).inMilliseconds
            if i == at {
                let done = Double(min(max(progress, band.from), band.to) - band.from) / Double(band.to - band.from)
                ms += Int64((Double(whole) * (1 - done)).rounded(.up))
            } else {
                ms += whole
            }
        }
        return ms
    }

    /// The wait for a slot with `ahead` queued jobs before this one and `running` jobs holding
    /// slots: nothing while a slot is free for it, else a whole run per round of `slots` jobs.
    /// `slots`: those serving the queue across instances (0: this process's own), at most the
    /// provider's account slots.
    public func waitMs(ahead: Int, running: Int, runMs: Int64, slots all: Int = 0) -> Int64 {
        let serving = max(1, min(all > 0 ? all : slots, providerSlots ?? .max))
        let free = max(0, serving - running)
        guard ahead >= free else { return 0 }
        let rounds = (ahead - free) / serving + 1
        return Int64(rounds) * runMs
    }

    // MARK: - ETAs

    /// The job's ETA at `nowMs`: 0 when it is terminal, else never before `nowMs`.
    public func eta(of job: Job, nowMs: Int64) -> Int64 {
        eta(id: job.id, status: job.status, stage: job.stage, progress: job.progress, deadLettered: job.deadLettered,
            profile: Profile(config: job.config, deadlineUnixMs: job.deadlineUnixMs, runAtUnixMs: job.runAtUnixMs), nowMs: nowMs)
    }

    private func eta(id: String, status: JobStatus, stage: Stage, progress: Int32, deadLettered: Bool,
                     profile: Profile, nowMs: Int64) -> Int64 {
        if status.isTerminal(deadLettered: deadLettered) || status == .unspecified { return 0 }
        let run = expectedRunMs(profile.config)
        // A failure that will be retried goes back to the queue: the whole run again.
        if status == .queued || status == .failed {
            let q = state.withLock { $0.queue }
            let ahead = q.order[id] ?? q.queued
            let start = max(nowMs + waitMs(ahead: ahead, running: q.running, runMs: run, slots: q.slots), profile.runAtUnixMs)
            return start + run
        }
        return nowMs + remainingMs(profile.config, stage: stage, progress: progress)
    }

    /// The job with its ETA set (and remembered, so its events can carry one).
    public func annotate(_ job: Job, nowMs: Int64) -> Job {
        var j = job
        remember(job)
        j.etaUnixMs = eta(of: job, nowMs: nowMs)
        return j
    }

    /// The event with its ETA and at-risk flag (`JobEvent.withETA`), from the job's remembered
    /// config and deadline (a job never seen here: the default config, no deadline). An event
    /// that ends the job makes it forgotten.
    public func annotate(_ event: JobEvent, nowMs: Int64) -> JobEvent {
        let profile: Profile = state.withLock { s in
            if event.endsWatch { return s.profiles.removeValue(forKey: event.jobID) }
            return s.profiles[event.jobID]
        } ?? Profile(config: JobConfig(), deadlineUnixMs: 0, runAtUnixMs: 0)
        var job = Job(id: event.jobID, status: event.status, stage: event.stage, progress: event.progress,
                      deadLettered: event.deadLettered)
        job.config = profile.config; job.deadlineUnixMs = profile.deadlineUnixMs; job.runAtUnixMs = profile.runAtUnixMs
        job.etaUnixMs = eta(id: event.jobID, status: event.status, stage: event.stage, progress: event.progress,
                            deadLettered: event.deadLettered, profile: profile, nowMs: max(nowMs, event.atUnixMs))
        return event.withETA(of: job)
    }

    /// Keeps the job's config and deadline for its events (until it ends).
    public func remember(_ job: Job) {
        guard !job.isFinished else { return }
        state.withLock { s in
            if s.profiles[job.id] == nil && s.profiles.count >= capacity, let any = s.profiles.keys.first {
                s.profiles[any] = nil
            }
            s.profiles[job.id] = Profile(config: job.config, deadlineUnixMs: job.deadlineUnixMs, runAtUnixMs: job.runAtUnixMs)
        }
    }

    public func updateQueue(_ q: QueueSnapshot) { state.withLock { $0.queue = q } }

    /// The expected time from create to FINAL_READY of a new job that starts at once (what a
    /// deadline's priority boost is computed from, `PriorityScore.enqueuedAt`).
    public func expectedRunMs(of new: NewJob) -> Int64 { expectedRunMs(new.config) }
}

extension Duration {
    /// Whole milliseconds (rounded down; negative durations stay negative).
    var inMilliseconds: Int64 {
        let c = components
        return c.seconds * 1000 + c.attoseconds / 1_000_000_000_000_000
    }
}
