import Foundation

/// What a run measured, printed as a table for people or one JSON object for machines.
struct BenchReport: Sendable {
    var mode: String
    var address: String
    var connections: Int
    var concurrency: Int
    var ok: Int
    var errorsByCode: [String: Int]
    /// The first message seen for each failure key.
    var errorExamples: [String: String] = [:]
    var elapsedSeconds: Double
    var latency: LatencySummary
    /// A note on how `ok`, latency and throughput are counted in this mode.
    var unit: String
    /// watchers mode only
    var watchers: WatchersDetail?
    /// `--rate` only: the offered rate, and how many measured calls started over 1 ms late.
    var rate: Double?
    var late: Int?
    /// create-batch only: jobs per call, and the jobs the measured calls committed.
    var batch: Int?
    var jobs: Int?

    struct WatchersDetail: Sendable {
        var watchers: Int
        var jobs: Int
        var streamsOK: Int
        var open: LatencySummary
        var events: Int
    }

    var failed: Int { errorsByCode.values.reduce(0, +) }
    var throughput: Double { elapsedSeconds > 0 ? Double(ok) / elapsedSeconds : 0 }
    var jobsPerSecond: Double? { jobs.map { elapsedSeconds > 0 ? Double($0) / elapsedSeconds : 0 } }

    // MARK: JSON

    private struct Percentiles: Encodable {
        let p50: Double, p90: Double, p99: Double, p999: Double, max: Double, mean: Double
        init(_ s: LatencySummary) {
            p50 = round3(s.p50); p90 = round3(s.p90); p99 = round3(s.p99); p999 = round3(s.p999)
            max = round3(s.max); mean = round3(s.mean)
        }
    }

    private struct WatchersJSON: Encodable {
        let watchers: Int, jobs: Int, streams_ok: Int, open_count: Int
        let open_ms: Percentiles
    }

    private struct JSONShape: Encodable {
        let mode: String, address: String, connections: Int, concurrency: Int
        let ok: Int, failed: Int, errors_by_code: [String: Int], error_examples: [String: String]
        let elapsed_s: Double, throughput_rps: Double
        let latency_ms: Percentiles
        let histogram: [LatencySummary.Bucket]
        let unit: String
        let watchers: WatchersJSON?
        let rate_rps: Double?
        let late: Int?
        let batch: Int?
        let jobs: Int?
        let jobs_per_s: Double?
    }

    func json() -> String {
        let shape = JSONShape(
            mode: mode, address: address, connections: connections, concurrency: concurrency, ok: ok, failed: failed,
            errors_by_code: errorsByCode, error_examples: errorExamples, elapsed_s: round6(elapsedSeconds), throughput_rps: round3(throughput),
            latency_ms: Percentiles(latency), histogram: latency.histogram, unit: unit,
            watchers: watchers.map {
                WatchersJSON(watchers: $0.watchers, jobs: $0.jobs, streams_ok: $0.streamsOK, open_count: $0.open.count,
                             open_ms: Percentiles($0.open))
            }, rate_rps: rate, late: late, batch: batch, jobs: jobs, jobs_per_s: jobsPerSecond.map(round3))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(shape) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    // MARK: table

    func table() -> String {
        var lines: [String] = []
        lines.append("reel-bench \(mode) → \(address)")
        lines.append(row("connections", "\(connections) × \(concurrency) in flight"))
        if let rate {
            lines.append(row("rate", String(format: "%.0f/s offered", rate) + ", \(late ?? 0) call(s) started over 1 ms late"))
        }
        if let w = watchers {
            lines.append(row("watchers", "\(w.watchers) per job, \(w.jobs) job(s), \(w.streamsOK) stream(s) ended OK"))
            lines.append(row("open", "all \(w.open.count) opened: p50 \(ms(w.open.p50))  p99 \(ms(w.open.p99))  "
                                 + "max \(ms(w.open.max)) ms after the job was created"))
        }
        let failures = errorsByCode.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        lines.append(row("requests", "\(ok) ok, \(failed) failed" + (failures.isEmpty ? "" : " (\(failures))")))
        for (key, example) in errorExamples.sorted(by: { $0.key < $1.key }) {
            lines.append(row("", "e.g. \(key): \(example.isEmpty ? "(no message)" : example)"))
        }
        lines.append(row("elapsed", String(format: "%.3f s", elapsedSeconds)))
        lines.append(row("throughput", String(format: "%.1f", throughput) + (unit == "events" ? " events/s" : mode == "e2e" ? " jobs/s" : " req/s")))
        if let jobs, let batch, let perSecond = jobsPerSecond {
            lines.append(row("jobs", "\(jobs) committed (batches of \(batch)), " + String(format: "%.1f jobs/s", perSecond)))
        }
        lines.append(row("latency ms", "p50 \(ms(latency.p50))  p90 \(ms(latency.p90))  p99 \(ms(latency.p99))  "
                             + "p99.9 \(ms(latency.p999))  max \(ms(latency.max))  mean \(ms(latency.mean))"))
        lines.append(row("measured", unit == "events"
            ? "delivery latency: receive time − event.at_unix_ms, live events of every watcher"
            : "latency of successful \(unit)"))
        if !latency.histogram.isEmpty {
            lines.append("  histogram (ms)")
            let top = latency.histogram.map(\.count).max() ?? 1
            let width = 40
            for bucket in latency.histogram {
                let bar = bucket.count == 0 ? 0 : Swift.max(1, bucket.count * width / Swift.max(top, 1))
                let label = "≤ " + ms(bucket.leMs)
                lines.append("    " + pad(label, 10) + " │" + String(repeating: "█", count: bar)
                             + String(repeating: " ", count: width - bar) + " " + String(bucket.count))
            }
        }
        return lines.joined(separator: "\n")
    }

    private func row(_ name: String, _ value: String) -> String { "  " + pad(name, 12) + value }

    private func pad(_ s: String, _ n: Int) -> String {
        s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count)
    }

    private func ms(_ v: Double) -> String {
        if v == 0 { return "0" }
        if v < 1 { return String(format: "%.3f", v) }
        if v < 100 { return String(format: "%.2f", v) }
        return String(format: "%.0f", v)
    }
}

private func round3(_ v: Double) -> Double { (v * 1000).rounded() / 1000 }
/// Elapsed time to the microsecond: a short fast run (300 calls in 20 ms) rounded to the
/// millisecond would no longer give back its own throughput as ok / elapsed_s.
private func round6(_ v: Double) -> Double { (v * 1e6).rounded() / 1e6 }
