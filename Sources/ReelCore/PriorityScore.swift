/// The priority score of DESIGN §4 and seed 002 (`calculatePriority`): lower runs first.
/// The only place that knows the weights.
public struct PriorityScore: Sendable, Equatable {
    public static let base: Int64 = 100
    public static let sceneCreationBonus: Int64 = 20
    public static let firstJobTodayBonus: Int64 = 10
    /// Premium runs before standard: worth this many points, far more than the other terms.
    public static let premiumBonus: Int64 = 1_000
    /// Aging: one point of score is worth this many milliseconds of waiting. Linear aging makes
    /// `sortKey` time-invariant, so an index on it holds the claim order.
    public static let millisecondsPerPoint: Int64 = 6_000

    /// A deadline job is keyed as if enqueued this long before the latest moment it could
    /// start and still make its deadline (see `enqueuedAt`).
    public static let deadlineMarginMs: Int64 = 300_000

    public let points: Int64

    public init(tier: Tier, type: JobType, firstJobToday: Bool) {
        var p = Self.base
        if type == .sceneCreation { p -= Self.sceneCreationBonus }
        if firstJobToday { p -= Self.firstJobTodayBonus }
        if tier == .premium { p -= Self.premiumBonus }
        points = p
    }

    /// `base + k·enqueued_at` in milliseconds: a job that has waited `points × k` longer beats
    /// one with a better score, so nothing starves.
    public func sortKey(enqueuedAtUnixMs: Int64) -> Int64 {
        enqueuedAtUnixMs + points * Self.millisecondsPerPoint
    }

    /// The enqueue time a job's key is computed from. Without a deadline: when it becomes
    /// runnable (`max(now, runAt)`). With one: no later than `deadline − expectedRun − margin`,
    /// as if it had been enqueued then. The key stays fixed (the index holds the order) while
    /// every later job's key grows with its enqueue time, so a deadline job overtakes more
    /// jobs of its class the nearer its deadline comes; a far deadline changes nothing.
    public static func enqueuedAt(nowUnixMs now: Int64, runAtUnixMs: Int64, deadlineUnixMs: Int64,
                                  expectedRunMs: Int64) -> Int64 {
        let runnable = max(now, runAtUnixMs)
        guard deadlineUnixMs > 0 else { return runnable }
        return min(runnable, deadlineUnixMs - max(0, expectedRunMs) - deadlineMarginMs)
    }
}
