import ReelCore
import Synchronization

/// How long a generation takes, per provider, model, mode and duration: a moving average of
/// what was measured, starting from the provider's published figure (DESIGN §5). Progress in
/// the video stage comes from it, since Kling reports none.
final class GenerationTimes: Sendable {
    private let averages = Mutex<[String: Double]>([:])
    /// Weight of the newest measurement.
    let alpha = 0.3

    static func key(_ provider: String, _ c: JobConfig) -> String {
        "\(provider)|\(c.model)|\(c.quality == .high ? "pro" : "std")|\(c.targetDurationSeconds <= 5 ? 5 : 10)"
    }

    func expected(_ provider: String, _ c: JobConfig, default d: Duration) -> Duration {
        guard let s = averages.withLock({ $0[Self.key(provider, c)] }) else { return d }
        return .milliseconds(Int64(s * 1000))
    }

    func record(_ provider: String, _ c: JobConfig, took: Duration) {
        let s = Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18
        guard s > 0 else { return }
        averages.withLock { a in
            let k = Self.key(provider, c)
            a[k] = a[k].map { $0 + alpha * (s - $0) } ?? s
        }
    }

    /// 40 % at submission, rising with elapsed time against the expected time, never past 84 %
    /// before the result is in.
    static func progress(elapsed: Duration, expected: Duration) -> Int32 {
        guard expected > .zero else { return 84 }
        let ratio = min(max(elapsed / expected, 0), 1)
        return min(40 + Int32((44 * ratio).rounded(.down)), 84)
    }
}
