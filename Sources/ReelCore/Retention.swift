/// Retention (`--retention-days`, issue #17 item 7): terminal jobs past it lose their events
/// beyond the transitions and their artifacts (those a segment refers to stay), and failed or
/// cancelled jobs that no segment refers to go altogether. Segments, a scene's content, stay.
public struct RetentionCandidate: Sendable, Equatable {
    public var jobID: String
    /// Terminal (it ended before the cutoff): its extra events and artifacts go.
    public var eligible: Bool
    /// Failed (dead-lettered) or cancelled with no segment: the job itself goes.
    public var deletable: Bool
    /// URLs a segment of this job refers to: their files stay.
    public var keptURLs: [String]

    public init(jobID: String, eligible: Bool, deletable: Bool, keptURLs: [String]) {
        self.jobID = jobID; self.eligible = eligible; self.deletable = deletable; self.keptURLs = keptURLs
    }
}

/// What one `RetentionStore.pruneEvents` did.
public struct EventPrune: Sendable, Equatable {
    /// Events deleted.
    public var events = 0
    /// The jobs it pruned (still terminal and old enough when locked).
    public var jobs: [String] = []
    /// How many of them had their `last_event_seq` changed (their events renumbered).
    public var renumbered = 0
    public init(events: Int = 0, jobs: [String] = [], renumbered: Int = 0) {
        self.events = events; self.jobs = jobs; self.renumbered = renumbered
    }
}

/// The next jobs a retention pass looks at, in the order they ended after the stored cursor, and
/// the cursor to store once they are done (nil: nothing older than the cutoff is left).
public struct RetentionBatch: Sendable {
    public var candidates: [RetentionCandidate]
    public var cursor: String?
    public init(candidates: [RetentionCandidate], cursor: String?) { self.candidates = candidates; self.cursor = cursor }
}

public protocol RetentionStore: Sendable {
    /// Up to `limit` jobs that ended more than `days` ago, after the stored cursor.
    func retentionBatch(olderThanDays days: Int, limit: Int) async throws -> RetentionBatch
    /// In one short transaction: locks those of `jobIDs` that are still terminal and ended
    /// more than `days` ago, deletes their events that change no status (progress and
    /// messages), and renumbers what is left densely 1…k in order with `last_event_seq` = k
    /// (DESIGN §2: `seq` stays dense over the events that exist).
    func pruneEvents(jobIDs: [String], olderThanDays days: Int) async throws -> EventPrune
    /// Deletes those of `jobIDs` that are still failed (dead-lettered) or cancelled with no
    /// segment and no pending webhook delivery, with their events and deliveries.
    func deleteJobs(_ jobIDs: [String]) async throws -> (jobs: Int, events: Int, deliveries: Int)
    /// Finished webhook deliveries older than `days`, `limit` at most per call.
    func pruneWebhookDeliveries(olderThanDays days: Int, limit: Int) async throws -> Int
    func saveRetentionCursor(_ cursor: String) async throws
}
