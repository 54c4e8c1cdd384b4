/// The state-transition table of DESIGN §3: the one place that decides which status may follow which.
extension JobStatus {
    /// Statuses that may follow `self`. Staying in the same running status (a progress or
    /// stage update) is allowed for the running statuses only.
    public var allowedNext: Set<JobStatus> {
        switch self {
        case .queued: [.processing, .cancelled]
        case .processing: [.processing, .scriptReady, .failed, .cancelled, .queued]
        case .scriptReady: [.scriptReady, .continuityChecked, .failed, .cancelled, .queued]
        case .continuityChecked: [.continuityChecked, .previewReady, .failed, .cancelled, .queued]
        case .previewReady: [.previewReady, .finalReady, .failed, .cancelled, .queued]
        case .failed: [.queued]
        case .finalReady, .cancelled, .unspecified: []
        }
    }

    public func canTransition(to next: JobStatus) -> Bool { allowedNext.contains(next) }

    /// Where every job starts (DESIGN §2: event seq 1 is `QUEUED`, `PENDING`).
    public static let initial = StateChange(status: .queued, stage: .pending, progress: 0, message: "queued")

    /// Every status from which `target` may be reached: what a conditional UPDATE checks.
    public static func sources(of target: JobStatus) -> [JobStatus] {
        allCases.filter { $0.canTransition(to: target) }
    }

    /// A worker holds the job (claimed, under lease) in these statuses.
    public var isRunning: Bool {
        switch self {
        case .processing, .scriptReady, .continuityChecked, .previewReady: true
        default: false
        }
    }

    /// The job has a row in the narrow queue (`job_queue`): queued, or held by a worker.
    public var isQueuedOrRunning: Bool { self == .queued || isRunning }

    /// `failed` is terminal only once dead-lettered; a failed job that will be retried is not.
    public func isTerminal(deadLettered: Bool) -> Bool {
        switch self {
        case .finalReady, .cancelled: true
        case .failed: deadLettered
        default: false
        }
    }

    public func endsWatch(deadLettered: Bool) -> Bool { isTerminal(deadLettered: deadLettered) }
}
