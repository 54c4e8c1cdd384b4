/// Tenants and API keys (issue #6): who is calling, and what they may see.
public struct APIKey: Sendable, Equatable {
    public var id: String
    public var tenantID: String
    public var prefix: String
    public var admin: Bool
    public var rateLimitPerSecond: Int32
    public var createdAtUnixMs: Int64
    public var revoked: Bool
    public init(id: String, tenantID: String, prefix: String, admin: Bool, rateLimitPerSecond: Int32,
                createdAtUnixMs: Int64, revoked: Bool) {
        self.id = id; self.tenantID = tenantID; self.prefix = prefix; self.admin = admin
        self.rateLimitPerSecond = rateLimitPerSecond; self.createdAtUnixMs = createdAtUnixMs; self.revoked = revoked
    }

    /// Secrets are stored as this hash only.
    public static func hash(secret: String) -> String { Hashing.sha256Hex(secret) }
    public static func prefix(of secret: String) -> String { String(secret.prefix(12)) }
}

/// The caller of an RPC. With auth off everyone is the admin of the "" tenant.
public struct Caller: Sendable, Equatable {
    public var tenantID: String
    public var admin: Bool
    public var keyID: String
    public init(tenantID: String, admin: Bool, keyID: String) { self.tenantID = tenantID; self.admin = admin; self.keyID = keyID }

    public static let anonymousAdmin = Caller(tenantID: "", admin: true, keyID: "")

    /// A job is visible to its own tenant, and to an admin.
    public func owns(_ job: Job) -> Bool { admin || job.tenantID == tenantID }
}

public protocol APIKeyStore: Sendable {
    /// Stores a key (its hash) for `tenantID`; creating one that exists un-revokes it.
    func createKey(tenantID: String, secret: String, admin: Bool, rateLimitPerSecond: Int32) async throws -> APIKey
    func key(secret: String) async throws -> APIKey?
    func listKeys(tenantID: String?) async throws -> [APIKey]
    func revokeKey(id: String) async throws -> APIKey?
    /// Sets the tenant's completion-webhook signing secret if it has none yet (its first key);
    /// true when this call set it, so that it is shown once.
    func makeWebhookSecret(tenantID: String, secret: String) async throws -> Bool
}

extension APIKeyStore {
    public func makeWebhookSecret(tenantID: String, secret: String) async throws -> Bool { false }
}
