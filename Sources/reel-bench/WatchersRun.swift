import ReelCore
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

    /// Samples recorded on the loop threads, as events arrive.
    final class Recorder: Sendable {
        struct State {
            var deliveriesMs: [Double] = []
            var opensMs: [Double] = []
            var undecodable = 0
        }
        let state = Mutex(State())
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
        let recorder = Recorder()
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
            await watchRound(calls: calls, watchers: watchers, jobID: jobID!, window: window, recorder: recorder,
                             result: &result)
            result.finished = .now
            if fixedJob { break }
            jobID = nil
        }
        recorder.state.withLock { s in
            result.tally.latenciesMs = s.deliveriesMs
            result.tally.ok = s.deliveriesMs.count
            result.opensMs = s.opensMs
            if s.undecodable > 0 {
                result.tally.errors["UNDECODABLE_EVENT"] = s.undecodable
                result.tally.errorExamples["UNDECODABLE_EVENT"] = "a WatchJob message did not decode as JobEvent"
            }
        }
        return result
    }

    private static func watchRound(calls: [JobCalls], watchers: Int, jobID: String, window: RunWindow,
                                   recorder: Recorder, result: inout Result) async {
        let roundStart = ContinuousClock.now
        let measured = roundStart >= window.measureStart
        await withTaskGroup(of: StreamEnd.self) { group in
            group.addTask {
                try? await Task.sleep(until: window.end, clock: .continuous)
                return .timeUp
            }
            for first in stride(from: 0, to: watchers, by: watchersPerGroup) {
                let indices = first..<min(first + watchersPerGroup, watchers)
                group.addTask {
                    let outcomes = await withTaskGroup(of: Outcome.self) { inner in
                        for i in indices {
                            let connection = calls[i % calls.count]
                            inner.addTask {
                                do {
                                    try await connection.watchJob(id: jobID) { event in
                                        record(event, roundStart: roundStart, measureOpen: measured, window: window,
                                               recorder: recorder)
                                    }
                                    return .ok
                                } catch {
                                    return .from(error)
                                }
                            }
                        }
                        return await inner.reduce(into: [Outcome]()) { $0.append($1) }
                    }
                    return .streams(outcomes)
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

    private static func record(_ event: JobEvent?, roundStart: ContinuousClock.Instant, measureOpen: Bool,
                               window: RunWindow, recorder: Recorder) {
        let now = ContinuousClock.now
        let wallMs = unixMilliseconds()
        guard let event else {
            recorder.state.withLock { $0.undecodable += 1 }
            return
        }
        if event.snapshot != nil {
            if measureOpen { recorder.state.withLock { $0.opensMs.append(milliseconds(now - roundStart)) } }
        } else if now >= window.measureStart {
            let latency = max(0, wallMs - Double(event.atUnixMs))
            recorder.state.withLock { $0.deliveriesMs.append(latency) }
        }
    }

    /// Wall-clock time in ms (with its fraction), the clock `at_unix_ms` is stamped with.
    static func unixMilliseconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) * 1000 + Double(ts.tv_nsec) / 1e6
    }
}
