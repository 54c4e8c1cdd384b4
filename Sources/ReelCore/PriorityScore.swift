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
}
