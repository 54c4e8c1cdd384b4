/// One change of a job's state, written with its event in one transaction.
/// Fields left nil keep their stored value.
public struct StateChange: Sendable, Equatable {
    public var status: JobStatus
    /// nil keeps the stored stage (a user's cancel doesn't know where the worker is).
    public var stage: Stage?
    /// nil keeps the stored progress.
    public var progress: Int32?
    public var message: String
    public var artifacts: Artifacts?
    public var result: JobResult?
    public var error: JobError?
    public var deadLettered: Bool?
    public var retryCount: Int32?
    /// For a change back to `queued`: when the job may run again (a retry's backoff).
    public var runAfterMs: Int64?
    /// Only the worker holding the lease may write (nil: anyone, e.g. a user's cancel).
    public var requireWorker: String?
    /// With `requireWorker`: only under this claim of the job (`Job.fence`; nil: any of the
    /// worker's claims). A run that outlived its claim (the job was requeued and claimed again,
    /// perhaps by the same worker) writes nothing.
    public var requireFence: Int64?
    /// A progress report: the step keeps the previous step's status and stage and only moves
    /// progress (e.g. while a provider generates). A run's writer may coalesce such reports
    /// (DESIGN §2: at most one per job per 100 ms, the latest value, a stage's last one always
    /// written); the store writes what it is given either way.
    public var progressReport: Bool
    /// The provider that runs this attempt (`Job.provider`; nil keeps it).
    public var provider: String?
    /// A charge to add to the job's `cost_units`, already weighted (the simulated provider
    /// charges when an attempt submits its generation).
    public var chargeUnits: Double?

    public init(status: JobStatus, stage: Stage?, progress: Int32?, message: String,
                artifacts: Artifacts? = nil, result: JobResult? = nil, error: JobError? = nil,
                deadLettered: Bool? = nil, retryCount: Int32? = nil, runAfterMs: Int64? = nil,
                requireWorker: String? = nil, requireFence: Int64? = nil, progressReport: Bool = false) {
        self.status = status; self.stage = stage; self.progress = progress; self.message = message
        self.artifacts = artifacts; self.result = result; self.error = error
        self.deadLettered = deadLettered; self.retryCount = retryCount; self.runAfterMs = runAfterMs
        self.requireWorker = requireWorker; self.requireFence = requireFence; self.progressReport = progressReport
    }
}

/// Retry backoff (DESIGN §4): base·2^(attempt-1), with up to 20 % jitter.
public struct RetryPolicy: Sendable, Equatable {
    public var baseMs: Int64
    public var maxMs: Int64

    public init(baseMs: Int64 = 5_000, maxMs: Int64 = 300_000) { self.baseMs = baseMs; self.maxMs = maxMs }

    /// `attempt` counts from 1 (the first retry). `jitter` is in 0..<1.
    public func delayMs(attempt: Int32, jitter: Double) -> Int64 {
        let raw = cappedDelayMs(attempt: attempt)
        return raw + Int64(Double(raw) * 0.2 * min(max(jitter, 0), 1))
    }

    /// base × 2^(attempt−1), at most `maxMs`, before jitter (never overflows).
    public func cappedDelayMs(attempt: Int32) -> Int64 {
        let exp = max(Int(attempt) - 1, 0)
        if exp >= 62 { return maxMs }
        let (d, overflow) = baseMs.multipliedReportingOverflow(by: Int64(1) << Int64(exp))
        return overflow ? maxMs : min(d, maxMs)
    }
}
