/// A tenant's budget in weighted provider units per period (DESIGN §2 "Budgets").
public struct TenantBudget: Sendable, Equatable {
    public var tenantID: String
    /// 0: no budget (unlimited).
    public var limitUnits: Double
    /// Settled charges in the current period.
    public var spentUnits: Double
    /// The expected cost of the tenant's accepted jobs that are not settled yet.
    public var reservedUnits: Double
    public var periodStartUnixMs: Int64
    public var periodSeconds: Int64

    /// `period_seconds` 0 means 30 days.
    public static let defaultPeriodSeconds: Int64 = 2_592_000

    public init(tenantID: String, limitUnits: Double = 0, spentUnits: Double = 0, reservedUnits: Double = 0,
                periodStartUnixMs: Int64 = 0, periodSeconds: Int64 = TenantBudget.defaultPeriodSeconds) {
        self.tenantID = tenantID; self.limitUnits = limitUnits; self.spentUnits = spentUnits
        self.reservedUnits = reservedUnits; self.periodStartUnixMs = periodStartUnixMs; self.periodSeconds = periodSeconds
    }

    /// SetBudget's rules: a finite limit ≥ 0 (0 removes the budget), a period ≥ 0 (0: 30 days).
    /// Answers the period to store.
    public static func validated(limitUnits: Double, periodSeconds: Int64) throws(ReelError) -> Int64 {
        guard limitUnits.isFinite else { throw .invalid("limit_units", "must be a finite number") }
        guard limitUnits >= 0 else { throw .invalid("limit_units", "must not be negative (0 removes the budget)") }
        guard periodSeconds >= 0 else { throw .invalid("period_seconds", "must not be negative (0 means 30 days)") }
        guard periodSeconds <= 10 * 366 * 86_400 else { throw .invalid("period_seconds", "must be at most 10 years") }
        return periodSeconds == 0 ? defaultPeriodSeconds : periodSeconds
    }

    /// The refusal of a create whose expected cost does not fit: RESOURCE_EXHAUSTED naming the budget.
    public static func exhausted(tenantID: String, limitUnits: Double, leftUnits: Double, expectedUnits: Double) -> ReelError {
        let who = tenantID.isEmpty ? "the default tenant's" : "tenant \(tenantID)'s"
        return ReelError(.resourceExhausted, "\(who) budget of \(units(limitUnits)) units has \(units(max(leftUnits, 0))) left; "
                         + "this job is expected to cost \(units(expectedUnits))")
    }

    /// A figure as people write it: 10, 1.5, 0.25.
    public static func units(_ v: Double) -> String {
        let r = (v * 1_000_000).rounded() / 1_000_000
        if r == r.rounded(), abs(r) < 1e15 { return String(Int64(r)) }
        return "\(r)"
    }
}

/// A tenant's fair-share weight (issue #17 item 3): tenants share scarce workers and provider
/// slots in proportion to their weights, by the cost they start.
public enum TenantWeight {
    public static let `default` = 1.0
    public static let maximum = 1000.0

    /// SetWeight's rule: a finite weight > 0 and at most 1000.
    public static func validated(_ weight: Double) throws(ReelError) -> Double {
        guard weight.isFinite, weight > 0 else { throw .invalid("weight", "must be a number greater than 0 (1 is the default)") }
        guard weight <= maximum else { throw .invalid("weight", "must be at most \(Int(maximum))") }
        return weight
    }
}

/// Where budgets live (ReelStore: `tenant_budgets`, checked and reserved in the create
/// statement), and tenants' fair-share weights (`tenants.weight`).
public protocol BudgetStore: Sendable {
    /// Sets (limit > 0) or removes (limit 0) the tenant's budget; a new budget's period starts now.
    func setBudget(tenantID: String, limitUnits: Double, periodSeconds: Int64) async throws -> TenantBudget
    /// The tenant's budget as of now (a passed period rolled over); limit 0 when it has none.
    func budget(tenantID: String) async throws -> TenantBudget
    /// Sets the tenant's fair-share weight; answers it as stored.
    func setWeight(tenantID: String, weight: Double) async throws -> Double
    /// The tenant's fair-share weight (1 when never set).
    func weight(tenantID: String) async throws -> Double
}
