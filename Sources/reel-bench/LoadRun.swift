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
    /// Items the measured requests completed (create-batch: jobs committed, counted even when
    /// other items of the same call failed); one per OK request in the other modes.
    var items = 0

    mutating func fail(_ key: String, _ detail: String) {
        errors[key, default: 0] += 1
        if errorExamples[key] == nil { errorExamples[key] = detail }
    }

    mutating func merge(_ other: WorkerTally) {
        latenciesMs.append(contentsOf: other.latenciesMs)
        ok += other.ok
        items += other.items
        errors.merge(other.errors, uniquingKeysWith: +)
        errorExamples.merge(other.errorExamples) { mine, _ in mine }
        if let t = other.lastDone { lastDone = lastDone.map { max($0, t) } ?? t }
    }
}

/// `--rate`: a fixed schedule of request start times shared by every worker — the k-th request
/// (counting from the start of the warmup) is due at `start + k / rate`. A worker takes the next
/// slot, waits until it is due, then issues the request, so the offered load stays at `rate` as
/// long as some worker is free (concurrency bounds how far behind it can fall).
final class Pacer: Sendable {
    private let start: ContinuousClock.Instant
    private let intervalNs: Double
    private let next = Atomic<Int>(0)
    /// Requests issued more than 1 ms after they were due (every worker was busy).
    private let late = Atomic<Int>(0)

    init(rate: Double, start: ContinuousClock.Instant) {
        self.start = start
        intervalNs = 1e9 / rate
    }

    /// The due time of the next request.
    func take() -> ContinuousClock.Instant {
        let k = next.wrappingAdd(1, ordering: .relaxed).oldValue
        return start + .nanoseconds(Int64((Double(k) * intervalNs).rounded()))
    }

    func noteLate() { late.wrappingAdd(1, ordering: .relaxed) }
    var lateCount: Int { late.load(ordering: .relaxed) }
}

/// A closed loop: `concurrency` workers per connection, each issuing its next request as soon
/// as the previous one ends (or, with a `Pacer`, as soon as its next slot is due), until the
/// window closes or the budget runs out. Requests that start before `measureStart` (warmup) are
/// not counted; those in flight at `end` finish and count. Latency runs from the moment a request
/// is issued to its answer.
enum ClosedLoop {
    typealias Operation = @Sendable (_ calls: JobCalls, _ worker: Int) async -> Outcome
    /// A request that completes several items (a batch): its outcome and how many items it completed.
    typealias CountedOperation = @Sendable (_ calls: JobCalls, _ worker: Int) async -> (Outcome, items: Int)

    static func run(calls: [JobCalls], concurrency: Int, window: RunWindow, pacer: Pacer? = nil,
                    operation: @escaping Operation) async -> WorkerTally {
        await run(calls: calls, concurrency: concurrency, window: window, pacer: pacer, counted: { calls, worker in
            let outcome = await operation(calls, worker)
            if case .ok = outcome { return (outcome, 1) }
            return (outcome, 0)
        })
    }

    static func run(calls: [JobCalls], concurrency: Int, window: RunWindow, pacer: Pacer? = nil,
                    counted operation: @escaping CountedOperation) async -> WorkerTally {
        await withTaskGroup(of: WorkerTally.self) { group in
            for (c, connection) in calls.enumerated() {
                for w in 0..<concurrency {
                    let worker = c * concurrency + w
                    group.addTask {
                        await work(calls: connection, worker: worker, window: window, pacer: pacer, operation: operation)
                    }
                }
            }
            var total = WorkerTally()
            for await tally in group { total.merge(tally) }
            return total
        }
    }

    private static func work(calls: JobCalls, worker: Int, window: RunWindow, pacer: Pacer?,
                             operation: CountedOperation) async -> WorkerTally {
        var tally = WorkerTally()
        while true {
            if let pacer {
                let due = pacer.take()
                if due >= window.end || Task.isCancelled { break }
                let now = ContinuousClock.now
                if due > now + .microseconds(50) {
                    try? await Task.sleep(until: due, clock: .continuous)
                } else if now - due > .milliseconds(1) && now >= window.measureStart {
                    pacer.noteLate()
                }
            }
            let start = ContinuousClock.now
            if start >= window.end || Task.isCancelled { break }
            let measured = start >= window.measureStart
            if measured && !window.budget.take() { break }
            let (outcome, items) = await operation(calls, worker)
            if measured {
                let done = ContinuousClock.now
                tally.lastDone = done
                tally.items += items
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
