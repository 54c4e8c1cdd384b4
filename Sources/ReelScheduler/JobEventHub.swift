import ReelCore
import Synchronization

/// Fans committed job events out to the watchers of each job, in this process.
/// A watcher that stops iterating (or whose task is cancelled) is removed at once.
public final class JobEventHub: Sendable {
    private struct State {
        var nextID = 0
        var watchers: [String: [Int: AsyncStream<JobEvent>.Continuation]] = [:]
        var direct: [String: [Int: any JobEventReceiver]] = [:]
    }
    private let state = Mutex(State())
    /// Events a watcher may have pending before it counts as fallen behind.
    public let bufferLimit: Int
    /// Applied once to each published event before any watcher sees it: its ETA and at-risk
    /// flag (DESIGN §2), so every watcher gets the same event, encoded once.
    private let annotate: (@Sendable (JobEvent) -> JobEvent)?

    public init(bufferLimit: Int = 1024, annotate: (@Sendable (JobEvent) -> JobEvent)? = nil) {
        self.bufferLimit = bufferLimit; self.annotate = annotate
    }

    /// Starts buffering `jobID`'s events. The stream ends early (without a terminal event) only
    /// when the watcher falls more than `bufferLimit` events behind.
    public func subscribe(jobID: String) -> AsyncStream<JobEvent> {
        let (stream, cont) = AsyncStream<JobEvent>.makeStream(bufferingPolicy: .bufferingOldest(bufferLimit))
        let id = state.withLock { s in
            let id = s.nextID
            s.nextID += 1
            s.watchers[jobID, default: [:]][id] = cont
            return id
        }
        cont.onTermination = { [weak self] _ in self?.remove(jobID: jobID, id: id) }
        return stream
    }

    private func remove(jobID: String, id: Int) {
        state.withLock { s in
            s.watchers[jobID]?[id] = nil
            if s.watchers[jobID]?.isEmpty == true { s.watchers[jobID] = nil }
        }
    }

    /// Hands `jobID`'s events to `receiver` on the publisher's thread, as they are published,
    /// until `unsubscribe` with the returned token. The receiver must not block.
    public func subscribe(jobID: String, receiver: any JobEventReceiver) -> Int {
        state.withLock { s in
            let id = s.nextID
            s.nextID += 1
            s.direct[jobID, default: [:]][id] = receiver
            return id
        }
    }

    public func unsubscribe(jobID: String, token: Int) {
        state.withLock { s in
            s.direct[jobID]?[token] = nil
            if s.direct[jobID]?.isEmpty == true { s.direct[jobID] = nil }
        }
    }

    public func publish(_ raw: JobEvent) {
        let event = annotate?(raw) ?? raw
        let (conts, receivers) = state.withLock { s in
            (s.watchers[event.jobID].map { Array($0.values) } ?? [], s.direct[event.jobID].map { Array($0.values) } ?? [])
        }
        for c in conts {
            // A full buffer means the watcher fell behind: end its stream rather than hold
            // events without bound; it resumes from storage with `after_seq`.
            if case .dropped = c.yield(event) { c.finish() }
        }
        for r in receivers { r.receive(event) }
    }

    public var watcherCount: Int {
        state.withLock { s in s.watchers.values.reduce(0) { $0 + $1.count } + s.direct.values.reduce(0) { $0 + $1.count } }
    }
}

/// Takes a job's events synchronously as they are published (see `JobEventHub.subscribe(jobID:receiver:)`).
public protocol JobEventReceiver: AnyObject, Sendable {
    func receive(_ event: JobEvent)
}
