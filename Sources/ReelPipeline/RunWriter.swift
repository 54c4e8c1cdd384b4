import ReelCore
import Synchronization

/// Writes one run's state changes, in order. A progress report is handed over without waiting
/// for its commit (`post`); a checkpoint — a stage's artifact, the provider's job id — waits
/// for its own (`commit`) before the run goes on. Changes that queue while a write is in
/// flight go to the store together, in one commit, and each committed event is published in
/// order, so watchers only ever see what is durable. The first change refused (the job was
/// cancelled, the lease was lost) or write that fails stops the run: every later step throws
/// that error and nothing after it is written.
final class RunWriter: Sendable {
    private struct Waiter {
        let upTo: Int
        let cont: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var job: Job
        var pending: [StateChange] = []
        var waiters: [Waiter] = []
        /// Changes handed over so far, and answered so far.
        var posted = 0
        var answered = 0
        var writing = false
        var failure: (any Error)?
    }

    private let state: Mutex<State>
    private let store: any JobStore
    private let publish: @Sendable (JobEvent) -> Void
    let jobID: String

    init(job: Job, store: any JobStore, publish: @escaping @Sendable (JobEvent) -> Void) {
        state = Mutex(State(job: job))
        jobID = job.id
        self.store = store
        self.publish = publish
    }

    /// The job as last committed by this run.
    var job: Job { state.withLock { $0.job } }

    /// Hands `change` over for the next write; throws the error that stopped the run, if any.
    @discardableResult
    func post(_ change: StateChange) throws -> Int {
        let (start, n) = try state.withLock { s throws -> (Bool, Int) in
            if let f = s.failure { throw f }
            s.pending.append(change)
            s.posted += 1
            let start = !s.writing
            s.writing = true
            return (start, s.posted)
        }
        if start { Task { await self.drain() } }
        return n
    }

    /// `change`, and every change before it, committed.
    func commit(_ change: StateChange) async throws {
        try await waitFor(try post(change))
    }

    /// Every change handed over so far committed.
    func flush() async throws {
        try await waitFor(state.withLock { $0.posted })
    }

    private func waitFor(_ n: Int) async throws {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, any Error>) in
            let now: Result<Void, any Error>? = state.withLock { s in
                if let f = s.failure { return .failure(f) }
                if s.answered >= n { return .success(()) }
                s.waiters.append(Waiter(upTo: n, cont: cont))
                return nil
            }
            if let now { cont.resume(with: now) }
        }
    }

    /// Writes what is pending, batch after batch, until nothing is.
    private func drain() async {
        while true {
            let batch: [StateChange] = state.withLock { s in
                if s.pending.isEmpty || s.failure != nil {
                    s.pending = []
                    s.writing = false
                    return []
                }
                defer { s.pending = [] }
                return s.pending
            }
            if batch.isEmpty { return }
            var failure: (any Error)?
            var latest: Job?
            do {
                for r in try await store.apply(batch, to: jobID) {
                    switch r {
                    case .success(let (job, event)):
                        latest = job
                        publish(event)
                    case .failure(let e):
                        if failure == nil { failure = e }
                    }
                }
            } catch {
                failure = error
            }
            let (done, err): ([Waiter], (any Error)?) = state.withLock { s in
                s.answered += batch.count
                if let latest { s.job = latest }
                if let failure, s.failure == nil { s.failure = failure }
                if let f = s.failure {
                    let all = s.waiters
                    s.waiters = []
                    return (all, f)
                }
                let answered = s.answered
                let ready = s.waiters.filter { $0.upTo <= answered }
                s.waiters.removeAll { $0.upTo <= answered }
                return (ready, nil)
            }
            for w in done {
                if let err { w.cont.resume(throwing: err) } else { w.cont.resume() }
            }
        }
    }
}
