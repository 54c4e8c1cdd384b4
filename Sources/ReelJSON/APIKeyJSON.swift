import ReelCore

/// `ApiKey` (the secret only when just created; the webhook secret only on a tenant's first key).
public struct APIKeyJSON: Codable, Sendable, Equatable {
    public var id: String
    public var tenantId: String
    public var prefix: String
    public var admin: Bool
    public var rateLimitPerSecond: Int32
    public var revoked: Bool
    public var secret: String?
    /// The tenant's completion-webhook signing secret, on its first key's creation only.
    public var webhookSecret: String?

    public init(_ k: APIKey, secret: String? = nil) {
        id = k.id; tenantId = k.tenantID; prefix = k.prefix; admin = k.admin
        rateLimitPerSecond = k.rateLimitPerSecond; revoked = k.revoked; self.secret = secret
    }
}
