import Synchronization

/// How long a stage takes, per provider, model, mode and duration: a moving average of what
/// was measured, starting from a configured default (DESIGN §2 "ETA", §5). Video generation's
/// entry also drives that stage's progress, since Kling reports none.
public final class StageTimes: Sendable {
    private let averages = Mutex<[String: Double]>([:])
    /// Weight of the newest measurement.
    public let alpha = 0.3

    public init() {}

    static func key(_ provider: String, _ c: JobConfig, _ stage: Stage) -> String {
        "\(provider)|\(c.model)|\(c.quality == .high ? "pro" : "std")|\(c.targetDurationSeconds <= 5 ? 5 : 10)|\(stage.name)"
    }

    /// The measured average, or `d` before anything was measured.
    public func expected(_ provider: String, _ c: JobConfig, _ stage: Stage = .videoGeneration, default d: Duration) -> Duration {
        guard let s = averages.withLock({ $0[Self.key(provider, c, stage)] }) else { return d }
        return .milliseconds(Int64(s * 1000))
    }

    public func record(_ provider: String, _ c: JobConfig, _ stage: Stage = .videoGeneration, took: Duration) {
        let s = Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18
        guard s >= 0 else { return }
        averages.withLock { a in
            let k = Self.key(provider, c, stage)
            a[k] = a[k].map { $0 + alpha * (s - $0) } ?? s
        }
    }

    /// 40 % at submission, rising with elapsed time against the expected time, never past 84 %
    /// before the result is in.
    public static func progress(elapsed: Duration, expected: Duration) -> Int32 {
        guard expected > .zero else { return 84 }
        let ratio = min(max(elapsed / expected, 0), 1)
        return min(40 + Int32((44 * ratio).rounded(.down)), 84)
    }
}
