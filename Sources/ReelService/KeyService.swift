import ReelCore
import ReelWire
import ReelHTTP2

/// `reel.v1.KeyService`: admins create, list and revoke tenants' API keys. A secret is shown
/// once, in CreateKey's answer; only its hash is stored.
struct KeyService: Sendable {
    let keys: any APIKeyStore

    func add(to r: inout GRPCRouter,
             admin: @escaping @Sendable (GRPCCall, @escaping @Sendable ([UInt8]) async throws -> [UInt8]) async -> GRPCStatus) {
        let s = self
        r.add("/reel.v1.KeyService/CreateKey", GRPCRoute(.unary) { call in await admin(call) { try await s.create($0) } })
        r.add("/reel.v1.KeyService/ListKeys", GRPCRoute(.unary) { call in await admin(call) { try await s.list($0) } })
        r.add("/reel.v1.KeyService/RevokeKey", GRPCRoute(.unary) { call in await admin(call) { try await s.revoke($0) } })
    }

    static func newSecret() -> String {
        var g = SystemRandomNumberGenerator()
        let hex = Array("0123456789abcdef")
        return "reel_" + String((0..<40).map { _ in hex[Int(g.next() % 16)] })
    }

    func create(_ req: [UInt8]) async throws -> [UInt8] {
        let (tenant, admin, rate) = try ProtoCodec.decodeCreateKeyRequest(req)
        try Validate.identifier(tenant, field: "tenant_id")
        if rate < 0 || rate > 100_000 { throw ReelError.invalid("rate_limit_per_second", "must be between 0 and 100000") }
        let secret = Self.newSecret()
        let key = try await keys.createKey(tenantID: tenant, secret: secret, admin: admin, rateLimitPerSecond: rate)
        // The tenant's first key also makes its completion-webhook signing secret, shown here once.
        let hookSecret = "whsec_" + Self.newSecret().dropFirst(5)
        let made = try await keys.makeWebhookSecret(tenantID: tenant, secret: hookSecret)
        return ProtoCodec.encode(key, secret: secret, webhookSecret: made ? hookSecret : "")
    }

    func list(_ req: [UInt8]) async throws -> [UInt8] {
        let tenant = try ProtoCodec.decodeListKeysRequest(req)
        if !tenant.isEmpty { try Validate.identifier(tenant, field: "tenant_id") }
        return ProtoCodec.encode(keys: try await keys.listKeys(tenantID: tenant.isEmpty ? nil : tenant))
    }

    func revoke(_ req: [UInt8]) async throws -> [UInt8] {
        let id = try Validate.jobID(ProtoCodec.decodeRevokeKeyRequest(req), field: "id")
        guard let key = try await keys.revokeKey(id: id) else { throw ReelError(.notFound, "key \(id) not found") }
        return ProtoCodec.encode(key)
    }
}
