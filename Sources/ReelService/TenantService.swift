import ReelCore
import ReelWire
import ReelHTTP2

/// `reel.v1.TenantService`: admins set and read tenants' budgets (DESIGN §2 "Budgets") and
/// fair-share weights. With
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
        r.add("/reel.v1.TenantService/SetWeight", GRPCRoute(.unary) { call in await admin(call) { try await s.setWeight($0) } })
        r.add("/reel.v1.TenantService/GetWeight", GRPCRoute(.unary) { call in await admin(call) { try await s.getWeight($0) } })
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

    func setWeight(_ req: [UInt8]) async throws -> [UInt8] {
        let (tenantID, weight) = try ProtoCodec.decodeSetWeightRequest(req)
        try tenant(tenantID)
        let stored = try await budgets.setWeight(tenantID: tenantID, weight: try TenantWeight.validated(weight))
        return ProtoCodec.encodeTenantWeight(tenantID: tenantID, weight: stored)
    }

    func getWeight(_ req: [UInt8]) async throws -> [UInt8] {
        let tenantID = try ProtoCodec.decodeGetWeightRequest(req)
        try tenant(tenantID)
        return ProtoCodec.encodeTenantWeight(tenantID: tenantID, weight: try await budgets.weight(tenantID: tenantID))
    }

    func getBudget(_ req: [UInt8]) async throws -> [UInt8] {
        let tenantID = try ProtoCodec.decodeGetBudgetRequest(req)
        try tenant(tenantID)
        return ProtoCodec.encode(try await budgets.budget(tenantID: tenantID))
    }
}
