import ArgumentParser
import ReelClient
import ReelCore
import ReelWire
#if canImport(Glibc)
import Glibc
#endif

enum BenchMode: String, ExpressibleByArgument, CaseIterable, Sendable {
    case create, get, e2e, watchers
    case createBatch = "create-batch"
}

/// A failure before any load ran (can't connect, server not serving …): exit 1.
struct SetupFailure: Error {
    let message: String
}

@main
struct ReelBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reel-bench",
        abstract: "Load generator for reeld: many concurrent gRPC calls over multiplexed HTTP/2 connections.",
        discussion: """
        Modes:
          create    CreateJob with unique inputs, user ids spread over --users:
                    durable create throughput.
          create-batch
                    CreateJobs with --batch new jobs per call (one statement and
                    one commit on the server): committed jobs/s. A call is OK
                    when every item came back with a job; latency is per call.
          get       creates one job, then GetJob it again and again.
          e2e       CreateJob, then WatchJob until the stream ends; OK when the
                    job reached FINAL_READY. Latency: create → final event.
                    Run reeld with --sim-stage-ms 0 for no-op jobs.
          watchers  creates a job (or takes --job-id), opens --watchers
                    WatchJob streams on it and measures each live event's
                    delivery latency (receive time − event.at_unix_ms) on
                    every stream, and the time to open them (their snapshot).
                    Jobs follow one another until the time is up. Needs jobs
                    that take a while: one that ends before its watchers open
                    has no live events to measure.

        A closed loop: each connection keeps --concurrency calls in flight
        (watchers: the streams are spread over the connections). With
        --rate R the calls start on a fixed schedule, R per second in all,
        each on a free worker (latency at a given load; "late" counts calls
        that started over 1 ms behind schedule because every worker was busy). The run
        stops by itself after --requests measured requests (watchers: jobs)
        or --duration seconds, whichever comes first; calls in flight then
        finish and count. Percentiles cover successful requests; failures
        are counted by gRPC code (e2e also JOB_FAILED, JOB_CANCELLED).

        --json prints one object: mode, address, connections, concurrency,
        ok, failed, errors_by_code, error_examples (first message of each
        kind), elapsed_s, throughput_rps (ok / elapsed_s), latency_ms {p50,
        p90, p99, p999, max, mean}, histogram [{le_ms, count}] (counts per
        1-2-5 bucket, not cumulative), unit; with --rate also rate_rps and
        late; create-batch adds batch, jobs (committed: items answered with
        a job, in measured calls) and jobs_per_s (jobs / elapsed_s);
        watchers mode adds watchers
        {watchers, jobs, streams_ok, open_count, open_ms {...}}.

        Only loopback addresses unless --allow-remote.
        Exit codes: 0 the run happened (even with failed requests),
        1 setup failed (cannot connect, not SERVING, setup job not created),
        2 usage error.
        """)

    @Argument(help: ArgumentHelp("What to measure (see the modes above).", valueName: "mode"))
    var mode: BenchMode

    @Option(help: ArgumentHelp("Server address host:port.", valueName: "host:port"))
    var address = "127.0.0.1:50051"

    @Option(help: "HTTP/2 connections.")
    var connections = 1

    @Option(help: "Calls in flight per connection.")
    var concurrency = 16

    @Option(help: "Stop after this many measured requests (watchers: jobs). Default: unlimited.")
    var requests: Int?

    @Option(help: ArgumentHelp("Measure for this long.", valueName: "seconds"))
    var duration: Double = 10

    @Option(help: ArgumentHelp("Run unmeasured for this long first.", valueName: "seconds"))
    var warmup: Double = 0

    @Flag(help: "Print one JSON object instead of the table.")
    var json = false

    @Option(help: "create/e2e: spread jobs over this many user ids.")
    var users = 100

    @Option(help: ArgumentHelp("create/e2e: spread jobs over this many scene ids (1: all on `bench-scene`, "
                               + "whose row every create and finalization updates).", valueName: "n"))
    var scenes = 1

    @Option(help: ArgumentHelp("create-batch: jobs per CreateJobs call (default 1000, the server's limit).",
                               valueName: "n"))
    var batch: Int?

    @Option(help: "watchers: WatchJob streams per job.")
    var watchers = 100

    @Option(name: .customLong("job-id"), help: "watchers: watch this job instead of creating jobs.")
    var jobID: String?

    @Option(help: ArgumentHelp("Deadline of each call (e2e: of each watch too).", valueName: "seconds"))
    var timeout: Double = 10

    @Option(help: ArgumentHelp("create/get/e2e: start requests at this fixed rate (all connections together) "
                               + "instead of back to back; --connections × --concurrency bounds how many are in flight.",
                               valueName: "per-second"))
    var rate: Double?

    @Option(help: "Client event-loop threads shared by the connections.")
    var threads = 1

    @Flag(help: "Allow a non-loopback --address.")
    var allowRemote = false

    mutating func validate() throws {
        let target = try BenchAddress.parse(address)
        if !target.isLoopback && !allowRemote {
            throw ValidationError("\(address) is not a loopback address; pass --allow-remote to load a remote server")
        }
        if connections < 1 || connections > 1024 { throw ValidationError("--connections must be 1-1024") }
        if concurrency < 1 || concurrency > 100_000 { throw ValidationError("--concurrency must be 1-100000") }
        if let requests, requests < 1 { throw ValidationError("--requests must be at least 1") }
        if !duration.isFinite || duration <= 0 { throw ValidationError("--duration must be a number of seconds > 0") }
        if !warmup.isFinite || warmup < 0 { throw ValidationError("--warmup must be a number of seconds >= 0") }
        if !timeout.isFinite || timeout <= 0 { throw ValidationError("--timeout must be a number of seconds > 0") }
        if users < 1 { throw ValidationError("--users must be at least 1") }
        if scenes < 1 { throw ValidationError("--scenes must be at least 1") }
        if watchers < 1 || watchers > 1_000_000 { throw ValidationError("--watchers must be 1-1000000") }
        if threads < 1 || threads > 64 { throw ValidationError("--threads must be 1-64") }
        if jobID != nil && mode != .watchers { throw ValidationError("--job-id applies to the watchers mode only") }
        if let batch {
            if mode != .createBatch { throw ValidationError("--batch applies to the create-batch mode only") }
            if batch < 1 || batch > 100_000 { throw ValidationError("--batch must be 1-100000") }
        }
        if let rate {
            if !rate.isFinite || rate <= 0 || rate > 10_000_000 { throw ValidationError("--rate must be a number > 0") }
            if mode == .watchers { throw ValidationError("--rate applies to create, create-batch, get and e2e") }
        }
    }

    /// ArgumentParser's entry point, except that usage errors exit 2 and setup failures 1.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var bench = command as? ReelBench {
                try await bench.run()
            } else {
                try command.run()
            }
        } catch let failure as SetupFailure {
            printError("reel-bench: \(failure.message)")
            Glibc.exit(1)
        } catch {
            if exitCode(for: error) == .validationFailure {
                printError(fullMessage(for: error))
                Glibc.exit(2)
            }
            exit(withError: error)
        }
    }

    mutating func run() async throws {
        let target = try BenchAddress.parse(address)
        let callTimeout = Duration.milliseconds(Int64((timeout * 1000).rounded(.up)))
        let group = GRPCClient.LoopGroup(threads: min(threads, connections))
        defer { group.shutdown() }

        // Setup: every connection answers a health check before any load starts.
        var calls: [JobCalls] = []
        for _ in 0..<connections {
            do {
                let client = try GRPCClient(host: target.host, port: target.port, group: group,
                                                       maxReceiveMessageSize: 64 * 1024 * 1024)
                calls.append(JobCalls(client: client, timeout: callTimeout))
            } catch {
                await close(calls)
                throw SetupFailure(message: error.message)  // "cannot connect to host:port: reason"
            }
        }
        // Setup calls get a generous deadline of their own: a tiny --timeout is for the load.
        let setup = JobCalls(client: calls[0].client, timeout: max(callTimeout, .seconds(10)))
        do {
            let serving = try await setup.healthCheck()
            if serving != 1 { throw SetupFailure(message: "\(target) is not SERVING (health status \(serving))") }
        } catch let failure as SetupFailure {
            await close(calls)
            throw failure
        } catch {
            await close(calls)
            throw SetupFailure(message: "\(target) does not answer gRPC health checks: \(describe(error))")
        }

        let runID = Self.randomHex(8)
        if !json {
            let what = mode == .watchers ? "\(watchers) watchers" : "\(concurrency) in flight each"
            printError("reel-bench: \(mode.rawValue) on \(connections) connection(s), \(what), for \(duration) s"
                       + (warmup > 0 ? " after \(warmup) s of warmup" : "")
                       + (requests.map { " or \($0) \(mode == .watchers ? "jobs" : "requests")" } ?? ""))
        }

        let report: BenchReport
        do {
            report = try await measure(calls: calls, setup: setup, target: target, runID: runID,
                                       callTimeout: callTimeout)
        } catch {
            await close(calls)
            throw error
        }
        await close(calls)
        print(json ? report.json() : report.table())
    }

    private func measure(calls: [JobCalls], setup: JobCalls, target: BenchAddress, runID: String,
                         callTimeout: Duration) async throws -> BenchReport {
        let durationD = Duration.milliseconds(Int64((duration * 1000).rounded()))
        let warmupD = Duration.milliseconds(Int64((warmup * 1000).rounded()))
        var report = BenchReport(mode: mode.rawValue, address: "\(target)", connections: connections,
                                 concurrency: concurrency, ok: 0, errorsByCode: [:], elapsedSeconds: 0,
                                 latency: LatencySummary(samples: []), unit: "requests")
        // The job that get and watchers use is made before the clock of the run starts.
        var setupID: String?
        switch mode {
        case .get: setupID = try await setupJob(setup, runID: runID)
        case .watchers:
            if let jobID {
                do {
                    setupID = try await setup.getJob(id: jobID).id
                } catch {
                    throw SetupFailure(message: "cannot watch job \(jobID): \(describe(error))")
                }
            } else {
                setupID = try await setupJob(setup, runID: runID)
            }
        default: break
        }
        let tally: WorkerTally
        let window = RunWindow(warmup: warmupD, duration: durationD, maxRequests: requests)
        let pacer = rate.map { Pacer(rate: $0, start: .now) }  // --rate is refused for watchers
        switch mode {
        case .create:
            tally = await ClosedLoop.run(calls: calls, concurrency: concurrency, window: window, pacer: pacer,
                                         operation: Operations.create(runID: runID, users: users, scenes: scenes))
        case .createBatch:
            let size = batch ?? 1000
            tally = await ClosedLoop.run(calls: calls, concurrency: concurrency, window: window, pacer: pacer,
                                         counted: Operations.createBatch(runID: runID, batch: size, users: users,
                                                                         scenes: scenes))
            report.unit = "CreateJobs calls of \(size) jobs"
            report.batch = size
        case .get:
            let id = setupID!
            tally = await ClosedLoop.run(calls: calls, concurrency: concurrency, window: window, pacer: pacer,
                                         operation: Operations.get(id: id))
        case .e2e:
            tally = await ClosedLoop.run(calls: calls, concurrency: concurrency, window: window, pacer: pacer,
                                         operation: Operations.endToEnd(runID: runID, users: users, scenes: scenes,
                                                                        watchTimeout: callTimeout))
            report.unit = "jobs (create → FINAL_READY)"
        case .watchers:
            let id = setupID!
            if jobID == nil { _ = window.budget.take() }  // the setup job is the first of the budget
            let result = await WatchersRun.run(calls: calls, watchers: watchers, firstJobID: id, fixedJob: jobID != nil,
                                               window: window, runID: runID, users: users)
            var t = result.tally
            t.lastDone = result.finished
            tally = t
            report.concurrency = (watchers + connections - 1) / connections
            report.unit = "events"
            report.watchers = .init(watchers: watchers, jobs: result.jobs, streamsOK: result.streamsOK,
                                    open: LatencySummary(samples: result.opensMs), events: result.tally.ok)
        }
        if let pacer {
            report.rate = rate
            report.late = pacer.lateCount
        }
        let finished = max(tally.lastDone ?? .now, window.measureStart)
        report.ok = tally.ok
        if report.batch != nil { report.jobs = tally.items }
        report.errorsByCode = tally.errors
        report.errorExamples = tally.errorExamples
        report.elapsedSeconds = milliseconds(finished - window.measureStart) / 1000
        report.latency = LatencySummary(samples: tally.latenciesMs)
        return report
    }

    /// The job `get` reads and `watchers` starts with; failing to create it is a setup failure.
    private func setupJob(_ calls: JobCalls, runID: String) async throws -> String {
        do {
            let job = try await calls.createJob(Operations.newJob(runID: runID, n: -1, users: 1))
            return job.id
        } catch {
            throw SetupFailure(message: "cannot create the job to \(mode == .get ? "read" : "watch"): \(describe(error))")
        }
    }

    private func close(_ calls: [JobCalls]) async {
        for c in calls { await c.client.close() }
    }

    private func describe(_ error: any Error) -> String {
        if let status = error as? GRPCStatus {
            return "\(status.code.name): \(status.message.isEmpty ? "(no message)" : status.message)"
        }
        return "\(error)"
    }

    static func randomHex(_ count: Int) -> String {
        var g = SystemRandomNumberGenerator()
        return String((0..<count).map { _ in "0123456789abcdef".randomElement(using: &g)! })
    }
}

func printError(_ line: String) {
    var bytes = Array((line + "\n").utf8)
    var off = 0
    while off < bytes.count {
        let n = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress! + off, $0.count - off) }
        if n < 0 {
            if errno == EINTR { continue }
            return
        }
        off += n
    }
}
