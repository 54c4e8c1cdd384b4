import Foundation
import ReelCore
import Synchronization

/// ETAs on what the service answers (DESIGN §2): every job it returns and every event it
/// publishes or replays. The estimates come from `ETAEstimator` (stage times, measured in this
/// process); a queued job's wait from a snapshot of the queue read from storage at most once a
/// `refreshInterval`, and only when a queued job is answered. Nothing is stored: an ETA is
/// computed when it is answered.
public final class JobETA: Sendable {
    public let estimator: ETAEstimator
    let store: any JobStore
    let refreshInterval: Duration
    /// Queued jobs whose place is known exactly; the rest count as behind all of them.
    let depth: Int
    private struct Refresh { var at: ContinuousClock.Instant?; var running = false }
    private let refresh = Mutex(Refresh())

    public init(estimator: ETAEstimator, store: any JobStore, refreshInterval: Duration = .milliseconds(500), depth: Int = 5000) {
        self.estimator = estimator; self.store = store; self.refreshInterval = refreshInterval; self.depth = depth
    }

    static var nowMs: Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// The job with its ETA (0 when terminal).
    public func job(_ job: Job) async -> Job {
        if job.status == .queued { await refreshQueueIfStale() }
        return estimator.annotate(job, nowMs: Self.nowMs)
    }

    public func jobs(_ jobs: [Job]) async -> [Job] {
        if jobs.contains(where: { $0.status == .queued }) { await refreshQueueIfStale() }
        let now = Self.nowMs
        return jobs.map { estimator.annotate($0, nowMs: now) }
    }

    /// A live event's ETA (the hub calls this once per event). A queued job's place comes from
    /// the last snapshot; a stale one is refreshed in the background for the next.
    public func event(_ event: JobEvent) -> JobEvent {
        if event.status == .queued, isStale { Task { await refreshQueueIfStale() } }
        return estimator.annotate(event, nowMs: Self.nowMs)
    }

    /// Stored events of `job` (a replay): each with the job's current ETA, never before the
    /// event itself; all 0 once the job is terminal.
    func stored(_ events: [JobEvent], of job: Job) -> [JobEvent] {
        let j = estimator.annotate(job, nowMs: Self.nowMs)
        return events.map { $0.withETA(of: j) }
    }

    private var isStale: Bool {
        refresh.withLock { r in r.at.map { ContinuousClock.now - $0 >= refreshInterval } ?? true }
    }

    func refreshQueueIfStale() async {
        let go = refresh.withLock { r -> Bool in
            guard !r.running, r.at.map({ ContinuousClock.now - $0 >= refreshInterval }) ?? true else { return false }
            r.running = true
            return true
        }
        guard go else { return }
        if let q = try? await store.queueSnapshot(limit: depth) { estimator.updateQueue(q) }
        refresh.withLock { r in r.running = false; r.at = .now }
    }
}
