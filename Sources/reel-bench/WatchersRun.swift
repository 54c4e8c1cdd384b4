import ReelCore
import ReelWire
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `watchers` mode: per job, N concurrent WatchJob streams; each live event's delivery latency
/// (receive time − `at_unix_ms`) on every stream, and how long the streams took to open
/// (their snapshot event). Jobs follow one another until the window closes (one job with `--job-id`).
enum WatchersRun {
    struct Result: Sendable {
        var tally = WorkerTally()
        var opensMs: [Double] = []
        var jobs = 0
        var streamsOK = 0
        var finished: ContinuousClock.Instant?
    }

    /// Samples recorded on the loop threads, as events arrive: one recorder per connection (a
    /// connection's callbacks run on one thread), so that the threads receiving the events do
    /// not share a lock and a reference count that each event touches 10,000 times.
    final class Recorder: Sendable {
        struct State {
            var deliveriesMs: [Double] = []
            var opensMs: [Double] = []
            var undecodable = 0
        }
        let state = Mutex(State())
    }

    private final class Ends: Sendable {
        let list = Mutex<[Outcome]>([])
    }

    private enum StreamEnd: Sendable {
        case streams([Outcome])
        case timeUp
    }

    /// Watchers per inner task group. Removing a finished child from a task group walks the
    /// group's children (Swift's runtime keeps them in a list), so one group of 10,000 watchers
    /// spends seconds of CPU at the end of each round, delaying every other delivery: groups
    /// of this size keep that negligible.
    static let watchersPerGroup = 128

    static func run(calls: [JobCalls], watchers: Int, firstJobID: String, fixedJob: Bool, window: RunWindow,
                    runID: String, users: Int) async -> Result {
        var result = Result()
        let recorders = calls.map { _ in Recorder() }
        var jobID: String? = firstJobID
        var n = 0
        while ContinuousClock.now < window.end && !Task.isCancelled {
            if jobID == nil {
                guard window.budget.take() else { break }
                do {
                    jobID = try await calls[n % calls.count].createJob(
                        Operations.newJob(runID: runID, n: n, users: users)).id
                } catch {
                    if case .failed(let key, let detail) = Outcome.from(error) { result.tally.fail("CREATE_" + key, detail) }
                    n += 1
                    continue
                }
            }
            n += 1
            result.jobs += 1
            await watchRound(calls: calls, watchers: watchers, jobID: jobID!, window: window, recorders: recorders,
                             result: &result)
            result.finished = .now
            if fixedJob { break }
            jobID = nil
        }
        for recorder in recorders { recorder.state.withLock { s in
            result.tally.latenciesMs.append(contentsOf: s.deliveriesMs)
            result.tally.ok += s.deliveriesMs.count
            result.opensMs.append(contentsOf: s.opensMs)
            if s.undecodable > 0 {
                result.tally.errors["UNDECODABLE_EVENT", default: 0] += s.undecodable
                result.tally.errorExamples["UNDECODABLE_EVENT"] = "a WatchJob message was not a well-formed JobEvent of the job watched"
            }
        } }
        return result
    }

    private static func watchRound(calls: [JobCalls], watchers: Int, jobID: String, window: RunWindow,
                                   recorders: [Recorder], result: inout Result) async {
        let clocks = Clocks(window: window)
        // One copy per connection (each connection's callbacks run on one thread): a buffer
        // shared by the threads would bounce its reference count between their cores.
        let jobIDBytes = calls.map { _ in Array(jobID.utf8) }
        await withTaskGroup(of: StreamEnd.self) { group in
            group.addTask {
                try? await Task.sleep(until: window.end, clock: .continuous)
                return .timeUp
            }
            for first in stride(from: 0, to: watchers, by: watchersPerGroup) {
                let indices = first..<min(first + watchersPerGroup, watchers)
                group.addTask {
                    // A discarding group: a watcher that ends does not wake this task (10,000
                    // wake-ups at the end of every job, competing with the deliveries still
                    // arriving on the same two cores); its outcome goes to `ends`.
                    let ends = Ends()
                    await withDiscardingTaskGroup { inner in
                        for i in indices {
                            let connection = calls[i % calls.count]
                            let recorder = recorders[i % calls.count]
                            let watched = jobIDBytes[i % calls.count]
                            inner.addTask {
                                let outcome: Outcome
                                do {
                                    try await connection.client.serverStreaming(
                                        path: "/reel.v1.JobService/WatchJob",
                                        request: ProtoCodec.encodeWatchJobRequest(id: jobID, afterSeq: 0)
                                    ) { message in
                                        record(message, jobID: watched, clocks: clocks, recorder: recorder)
                                    }
                                    outcome = .ok
                                } catch {
                                    outcome = .from(error)
                                }
                                ends.list.withLock { $0.append(outcome) }
                            }
                        }
                    }
                    return .streams(ends.list.withLock { $0 })
                }
            }
            var open = (watchers + watchersPerGroup - 1) / watchersPerGroup
            var timeUp = false
            for await end in group {
                switch end {
                case .timeUp:
                    // The window closed: stop watching; streams cut here are not failures.
                    timeUp = true
                    group.cancelAll()
                case .streams(let outcomes):
                    open -= 1
                    for outcome in outcomes {
                        switch outcome {
                        case .ok: result.streamsOK += 1
                        case .failed(let key, let detail) where !(timeUp && key == "CANCELLED"):
                            if ContinuousClock.now >= window.measureStart { result.tally.fail(key, detail) }
                        case .failed: break
                        }
                    }
                    if open == 0 { group.cancelAll() }  // ends the timer too
                }
            }
        }
    }

    /// The round's clocks in wall-clock ms (`at_unix_ms`'s clock), so that a message needs one
    /// clock read.
    struct Clocks: Sendable {
        let roundStart: Double
        let measureStart: Double
        init(window: RunWindow) {
            let now = ContinuousClock.now, wall = WatchersRun.unixMilliseconds()
            roundStart = wall
            measureStart = wall + milliseconds(window.measureStart - now)
        }
        /// The round opened after the warm-up: its openings count.
        var measuresOpen: Bool { roundStart >= measureStart }
    }

    /// One message as it arrives, on the connection's loop thread: its delivery latency
    /// (arrival − `at_unix_ms`), or for the snapshot how long the stream took to open.
    private static func record(_ message: [UInt8], jobID: [UInt8], clocks: Clocks, recorder: Recorder) {
        let wallMs = unixMilliseconds()
        guard let event = EventScan(message, jobID: jobID) else {
            recorder.state.withLock { $0.undecodable += 1 }
            return
        }
        if event.snapshot {
            if clocks.measuresOpen { recorder.state.withLock { $0.opensMs.append(wallMs - clocks.roundStart) } }
        } else if wallMs >= clocks.measureStart {
            let latency = max(0, wallMs - Double(event.atUnixMs))
            recorder.state.withLock { $0.deliveriesMs.append(latency) }
        }
    }

    /// What the measurement reads of a `reel.v1.JobEvent`, straight from its wire bytes: every
    /// field is walked and bounds-checked and the job id compared, but no event is built (no
    /// strings, no allocation). One process here stands in for 10,000 clients that would each
    /// decode their own message: building 10,000 events per event on the two cores reeld runs
    /// on measured the load generator as much as the server (the decode and its allocations
    /// were about a fifth of reel-bench's CPU in a profile of this run).
    struct EventScan {
        var seq: Int64 = 0
        var atUnixMs: Int64 = 0
        var snapshot = false

        /// nil: not a well-formed JobEvent of `jobID`.
        init?(_ m: [UInt8], jobID: [UInt8]) {
            let ok = m.withUnsafeBufferPointer { b -> Bool in
                var i = 0, sawJob = false
                func varint() -> UInt64? {
                    var v: UInt64 = 0, shift: UInt64 = 0
                    while i < b.count && shift < 64 {
                        let byte = b[i]
                        i += 1
                        v |= UInt64(byte & 0x7f) << shift
                        if byte & 0x80 == 0 { return v }
                        shift += 7
                    }
                    return nil
                }
                while i < b.count {
                    guard let key = varint() else { return false }
                    let field = key >> 3
                    switch key & 7 {
                    case 0:
                        guard let v = varint() else { return false }
                        if field == 2 { seq = Int64(bitPattern: v) } else if field == 7 { atUnixMs = Int64(bitPattern: v) }
                    case 1: i += 8
                    case 5: i += 4
                    case 2:
                        guard let n = varint(), n <= UInt64(b.count - i) else { return false }
                        let start = i
                        i += Int(n)
                        if field == 1 {
                            sawJob = Int(n) == jobID.count && jobID.withUnsafeBufferPointer { j in
                                memcmp(b.baseAddress! + start, j.baseAddress!, Int(n)) == 0
                            }
                        } else if field == 9 {
                            snapshot = true
                        }
                    default: return false
                    }
                }
                return i == b.count && sawJob && seq > 0
            }
            if !ok { return nil }
        }
    }

    /// Wall-clock time in ms (with its fraction), the clock `at_unix_ms` is stamped with.
    static func unixMilliseconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) * 1000 + Double(ts.tv_nsec) / 1e6
    }
}
