import ReelWire
import Synchronization

/// When measuring starts and when new work stops; `--requests` caps the measured count.
struct RunWindow: Sendable {
    let measureStart: ContinuousClock.Instant
    let end: ContinuousClock.Instant
    let budget: RequestBudget

    init(warmup: Duration, duration: Duration, maxRequests: Int?) {
        let now = ContinuousClock.now
        measureStart = now + warmup
        end = measureStart + duration
        budget = RequestBudget(limit: maxRequests)
    }
}

/// The measured requests still allowed (shared by every worker).
final class RequestBudget: Sendable {
    let limit: Int?
    private let taken = Atomic<Int>(0)

    init(limit: Int?) { self.limit = limit }

    /// Claims one request; false once the limit is reached.
    func take() -> Bool {
        guard let limit else { return true }
        return taken.wrappingAdd(1, ordering: .relaxed).oldValue < limit
    }
}

/// How one request ended: OK, or failed under a key (`UNAVAILABLE`, `JOB_FAILED` …).
enum Outcome: Sendable {
    case ok
    /// A key to count failures by, and what went wrong (the first of each key is reported).
    case failed(String, detail: String = "")

    static func from(_ error: any Error) -> Outcome {
        if let status = error as? GRPCStatus { return .failed(status.code.name, detail: status.message) }
        return .failed("CLIENT_ERROR", detail: "\(error)")
    }
}

/// What one worker measured; merged at the end.
struct WorkerTally: Sendable {
    var latenciesMs: [Double] = []
    var ok = 0
    var errors: [String: Int] = [:]
    /// The first message seen for each failure key.
    var errorExamples: [String: String] = [:]
    var lastDone: ContinuousClock.Instant?

    mutating func fail(_ key: String, _ detail: String) {
        errors[key, default: 0] += 1
        if errorExamples[key] == nil { errorExamples[key] = detail }
    }

    mutating func merge(_ other: WorkerTally) {
        latenciesMs.append(contentsOf: other.latenciesMs)
        ok += other.ok
        errors.merge(other.errors, uniquingKeysWith: +)
        errorExamples.merge(other.errorExamples) { mine, _ in mine }
        if let t = other.lastDone { lastDone = lastDone.map { max($0, t) } ?? t }
    }
}

/// A closed loop: `concurrency` workers per connection, each issuing its next request as soon
/// as the previous one ends, until the window closes or the budget runs out. Requests that
/// start before `measureStart` (warmup) are not counted; those in flight at `end` finish and count.
enum ClosedLoop {
    typealias Operation = @Sendable (_ calls: JobCalls, _ worker: Int) async -> Outcome

    static func run(calls: [JobCalls], concurrency: Int, window: RunWindow, operation: @escaping Operation) async -> WorkerTally {
        await withTaskGroup(of: WorkerTally.self) { group in
            for (c, connection) in calls.enumerated() {
                for w in 0..<concurrency {
                    let worker = c * concurrency + w
                    group.addTask { await work(calls: connection, worker: worker, window: window, operation: operation) }
                }
            }
            var total = WorkerTally()
            for await tally in group { total.merge(tally) }
            return total
        }
    }

    private static func work(calls: JobCalls, worker: Int, window: RunWindow, operation: Operation) async -> WorkerTally {
        var tally = WorkerTally()
        while true {
            let start = ContinuousClock.now
            if start >= window.end || Task.isCancelled { break }
            let measured = start >= window.measureStart
            if measured && !window.budget.take() { break }
            let outcome = await operation(calls, worker)
            if measured {
                let done = ContinuousClock.now
                tally.lastDone = done
                switch outcome {
                case .ok:
                    tally.ok += 1
                    tally.latenciesMs.append(milliseconds(done - start))
                case .failed(let key, let detail):
                    tally.fail(key, detail)
                }
            }
            if case .failed("UNAVAILABLE", _) = outcome {
                // The server is down or restarting: don't spin on connect() while it comes back.
                try? await Task.sleep(for: .milliseconds(10))
            }
        }
        return tally
    }
}

func milliseconds(_ d: Duration) -> Double {
    let (s, atto) = d.components
    return Double(s) * 1000 + Double(atto) / 1e15
}
