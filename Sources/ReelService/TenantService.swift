import ReelCore
import ReelWire
import ReelHTTP2

/// `reel.v1.TenantService`: admins set and read tenants' budgets (DESIGN §2 "Budgets"). With
/// auth off every caller is the admin of the tenant-less namespace "", whose budget it may set.
struct TenantService: Sendable {
    let budgets: any BudgetStore
    /// Auth is on: a tenant id is required (with auth off "" names the only tenant there is).
    let tenantRequired: Bool

    func add(to r: inout GRPCRouter,
             admin: @escaping @Sendable (GRPCCall, @escaping @Sendable ([UInt8]) async throws -> [UInt8]) async -> GRPCStatus) {
        let s = self
        r.add("/reel.v1.TenantService/SetBudget", GRPCRoute(.unary) { call in await admin(call) { try await s.setBudget($0) } })
        r.add("/reel.v1.TenantService/GetBudget", GRPCRoute(.unary) { call in await admin(call) { try await s.getBudget($0) } })
    }

    func tenant(_ id: String) throws(ReelError) {
        if !id.isEmpty || tenantRequired { try Validate.identifier(id, field: "tenant_id") }
    }

    func setBudget(_ req: [UInt8]) async throws -> [UInt8] {
        let (tenantID, limit, period) = try ProtoCodec.decodeSetBudgetRequest(req)
        try tenant(tenantID)
        let stored = try TenantBudget.validated(limitUnits: limit, periodSeconds: period)
        return ProtoCodec.encode(try await budgets.setBudget(tenantID: tenantID, limitUnits: limit, periodSeconds: stored))
    }

    func getBudget(_ req: [UInt8]) async throws -> [UInt8] {
        let tenantID = try ProtoCodec.decodeGetBudgetRequest(req)
        try tenant(tenantID)
        return ProtoCodec.encode(try await budgets.budget(tenantID: tenantID))
    }
}
