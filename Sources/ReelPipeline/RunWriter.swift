import ReelCore
import Synchronization

/// Writes one run's state changes, in order. A progress report is handed over without waiting
/// for its commit (`post`); a checkpoint — a stage's artifact, the provider's job id — waits
/// for its own (`commit`) before the run goes on. Changes that queue while a write is in
/// flight go to the store together, in one commit, and each committed event is published in
/// order, so watchers only ever see what is durable. The first change refused (the job was
/// cancelled, the lease was lost) or write that fails stops the run: every later step throws
/// that error and nothing after it is written.
///
/// Progress reports are coalesced (DESIGN §2). A report (`StateChange.progressReport`, with the
/// status and stage of the change before it) goes to the store only once the job's previous
/// report is committed and `reportInterval` has passed since; until then it waits, and a newer
/// report replaces it, so the value written is always the latest. A waiting report is written
/// when its time comes, or at once ahead of the next change that is not a report (a status or
/// stage change, a message step), a `commit` or a `flush`: a stage's last progress is never
/// dropped. A report that is replaced is never written and takes no seq, so `seq` stays dense.
final class RunWriter: Sendable {
    /// At most one progress report per job is written in this much time (DESIGN §2).
    static let reportInterval: Duration = .milliseconds(100)

    private struct Waiter {
        let upTo: Int
        let cont: CheckedContinuation<Void, any Error>
    }

    /// A change handed over and the number it was handed over as (1, 2, 3 … in order).
    private struct Entry {
        var change: StateChange
        var ticket: Int
        /// A report that could have been coalesced (`isReport`).
        var report: Bool
    }

    private struct State {
        var job: Job
        var pending: [Entry] = []
        var waiters: [Waiter] = []
        /// Changes handed over so far (the last ticket), and the last ticket written: a ticket
        /// is answered once it or a later one is (a replaced report is answered by its replacement).
        var posted = 0
        var answered = 0
        var writing = false
        var failure: (any Error)?
        /// Status and stage of the last change handed over: a report keeps them.
        var status: JobStatus
        var stage: Stage
        /// The newest report not yet handed to the store, waiting for its time.
        var held: Entry?
        /// Reports in `pending` or being written: the next one waits until they are committed.
        var reportsOutstanding = 0
        /// When the next report may go to the store.
        var nextReportAt: ContinuousClock.Instant
        var timerArmed = false
    }

    private let state: Mutex<State>
    private let store: any JobStore
    private let publish: @Sendable (JobEvent) -> Void
    private let reportInterval: Duration
    let jobID: String

    init(job: Job, store: any JobStore, reportInterval: Duration = RunWriter.reportInterval,
         publish: @escaping @Sendable (JobEvent) -> Void) {
        state = Mutex(State(job: job, status: job.status, stage: job.stage, nextReportAt: .now))
        jobID = job.id
        self.store = store
        self.reportInterval = reportInterval
        self.publish = publish
    }

    /// The job as last committed by this run.
    var job: Job { state.withLock { $0.job } }

    /// What `post` and the timer decided to start once the lock is released.
    private struct Start {
        var drain = false
        var timerAt: ContinuousClock.Instant?
    }

    /// Hands `change` over for the next write (a progress report may wait for its time, see the
    /// type's comment); throws the error that stopped the run, if any.
    @discardableResult
    func post(_ change: StateChange) throws -> Int {
        let (start, n) = try state.withLock { s throws -> (Start, Int) in
            if let f = s.failure { throw f }
            s.posted += 1
            let entry = Entry(change: change, ticket: s.posted, report: change.progressReport
                              && change.status == s.status && (change.stage ?? s.stage) == s.stage)
            var start = Start()
            if entry.report {
                if let last = s.pending.indices.last, s.pending[last].report {
                    // The report before it is still unwritten: the newer value takes its place.
                    s.pending[last] = entry
                } else if s.held == nil && s.reportsOutstanding == 0 && ContinuousClock.now >= s.nextReportAt {
                    s.pending.append(entry)
                    s.reportsOutstanding += 1
                    start.drain = Self.startWriting(&s)
                } else {
                    s.held = entry
                    start.timerAt = Self.armTimer(&s)
                }
            } else {
                Self.releaseHeld(&s)
                s.pending.append(entry)
                s.status = change.status
                s.stage = change.stage ?? s.stage
                start.drain = Self.startWriting(&s)
            }
            return (start, s.posted)
        }
        run(start)
        return n
    }

    /// `change`, and every change before it, committed.
    func commit(_ change: StateChange) async throws {
        let n = try post(change)
        releaseHeldNow()
        try await waitFor(n)
    }

    /// Every change handed over so far committed (a report waiting for its time is written now).
    func flush() async throws {
        releaseHeldNow()
        try await waitFor(state.withLock { $0.posted })
    }

    private func releaseHeldNow() {
        let start = state.withLock { s -> Start in
            guard s.failure == nil, s.held != nil else { return Start() }
            Self.releaseHeld(&s)
            return Start(drain: Self.startWriting(&s))
        }
        run(start)
    }

    /// The held report, if any, goes to `pending` (ahead of what comes next).
    private static func releaseHeld(_ s: inout State) {
        guard let h = s.held else { return }
        s.held = nil
        s.pending.append(h)
        s.reportsOutstanding += 1
    }

    /// True when the caller is to start a drain (none is running).
    private static func startWriting(_ s: inout State) -> Bool {
        guard !s.writing, !s.pending.isEmpty else { return false }
        s.writing = true
        return true
    }

    /// When a timer is to release the held report (nil: one is armed already, or the report
    /// waits for the outstanding ones to be committed, whose drain arms it).
    private static func armTimer(_ s: inout State) -> ContinuousClock.Instant? {
        guard s.held != nil, s.reportsOutstanding == 0, !s.timerArmed else { return nil }
        s.timerArmed = true
        return s.nextReportAt
    }

    private func run(_ start: Start) {
        if start.drain { Task { await self.drain() } }
        if let at = start.timerAt {
            Task {
                try? await Task.sleep(until: at, clock: .continuous)
                self.timerFired()
            }
        }
    }

    /// A held report's time has come: it goes to the store (unless something released it first).
    private func timerFired() {
        let start = state.withLock { s -> Start in
            s.timerArmed = false
            guard s.failure == nil, s.held != nil, s.reportsOutstanding == 0 else { return Start() }
            if ContinuousClock.now < s.nextReportAt { return Start(timerAt: Self.armTimer(&s)) }
            Self.releaseHeld(&s)
            return Start(drain: Self.startWriting(&s))
        }
        run(start)
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
            let batch: [Entry] = state.withLock { s in
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
                for r in try await store.apply(batch.map(\.change), to: jobID) {
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
            let (done, err, timerAt): ([Waiter], (any Error)?, ContinuousClock.Instant?) = state.withLock { s in
                s.answered = max(s.answered, batch[batch.count - 1].ticket)
                if let latest { s.job = latest }
                if let failure, s.failure == nil { s.failure = failure }
                if let f = s.failure {
                    let all = s.waiters
                    s.waiters = []
                    s.held = nil
                    return (all, f, nil)
                }
                // The next report goes out no sooner than `reportInterval` after this one committed.
                let reports = batch.count(where: \.report)
                var timerAt: ContinuousClock.Instant?
                if reports > 0 {
                    s.reportsOutstanding -= reports
                    if s.reportsOutstanding == 0 {
                        s.nextReportAt = .now + reportInterval
                        timerAt = Self.armTimer(&s)
                    }
                }
                let answered = s.answered
                let ready = s.waiters.filter { $0.upTo <= answered }
                s.waiters.removeAll { $0.upTo <= answered }
                return (ready, nil, timerAt)
            }
            run(Start(timerAt: timerAt))
            for w in done {
                if let err { w.cont.resume(throwing: err) } else { w.cont.resume() }
            }
        }
    }
}
