/// Percentiles (nearest rank over the sorted samples) and a log-bucketed histogram of
/// latencies in milliseconds.
struct LatencySummary: Sendable {
    struct Bucket: Sendable, Codable, Equatable {
        /// Upper bound (inclusive) in ms; samples above the previous bucket's bound and at most this.
        let leMs: Double
        let count: Int
        enum CodingKeys: String, CodingKey { case leMs = "le_ms", count }
    }

    let count: Int
    let p50: Double, p90: Double, p99: Double, p999: Double, max: Double, mean: Double
    /// Non-cumulative counts, from the first non-empty bucket to the last (every sample falls
    /// in one: the bounds go 1-2-5 from 0.01 ms to 1000 s).
    let histogram: [Bucket]

    /// 0.01, 0.02, 0.05, 0.1 … 1,000,000 ms.
    static let bounds: [Double] = {
        var out: [Double] = []
        var decade = 0.01
        while decade <= 1_000_000 {
            for m in [1.0, 2.0, 5.0] where decade * m <= 1_000_000 { out.append(decade * m) }
            decade *= 10
        }
        return out
    }()

    init(samples: [Double]) {
        let sorted = samples.sorted()
        count = sorted.count
        func rank(_ q: Double) -> Double {
            guard !sorted.isEmpty else { return 0 }
            let i = Int((q * Double(sorted.count)).rounded(.up)) - 1
            return sorted[Swift.min(Swift.max(i, 0), sorted.count - 1)]
        }
        p50 = rank(0.50); p90 = rank(0.90); p99 = rank(0.99); p999 = rank(0.999)
        max = sorted.last ?? 0
        mean = sorted.isEmpty ? 0 : sorted.reduce(0, +) / Double(sorted.count)

        var counts = [Int](repeating: 0, count: Self.bounds.count)
        var b = 0
        for sample in sorted {  // sorted: the bucket index only moves forward
            while b < Self.bounds.count - 1 && sample > Self.bounds[b] { b += 1 }
            counts[b] += 1
        }
        if let first = counts.firstIndex(where: { $0 > 0 }), let last = counts.lastIndex(where: { $0 > 0 }) {
            histogram = (first...last).map { Bucket(leMs: Self.bounds[$0], count: counts[$0]) }
        } else {
            histogram = []
        }
    }
}
