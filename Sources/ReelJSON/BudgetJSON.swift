import ReelCore

/// `Budget` (DESIGN §2 "Budgets"), the protobuf JSON names.
public struct BudgetJSON: Codable, Sendable, Equatable {
    public var tenantId: String
    public var limitUnits: Double
    public var spentUnits: Double
    public var reservedUnits: Double
    public var periodStartUnixMs: Int64
    public var periodSeconds: Int64

    public init(_ b: TenantBudget) {
        tenantId = b.tenantID; limitUnits = b.limitUnits; spentUnits = b.spentUnits; reservedUnits = b.reservedUnits
        periodStartUnixMs = b.periodStartUnixMs; periodSeconds = b.periodSeconds
    }
}
