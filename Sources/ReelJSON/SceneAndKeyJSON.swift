import ReelCore

/// `ApiKey` (the secret only when just created).
public struct APIKeyJSON: Codable, Sendable, Equatable {
    public var id: String
    public var tenantId: String
    public var prefix: String
    public var admin: Bool
    public var rateLimitPerSecond: Int32
    public var revoked: Bool
    public var secret: String?

    public init(_ k: APIKey, secret: String? = nil) {
        id = k.id; tenantId = k.tenantID; prefix = k.prefix; admin = k.admin
        rateLimitPerSecond = k.rateLimitPerSecond; revoked = k.revoked; self.secret = secret
    }
}

/// `Scene`, its bible as stored.
public struct SceneJSON: Codable, Sendable, Equatable {
    public var id: String
    public var bibleVersion: Int32
    public var segmentCount: Int32
    public var totalDurationSeconds: Double
    public var bible: SceneBible

    public init(_ s: Scene) {
        id = s.id; bibleVersion = s.bibleVersion; segmentCount = s.segmentCount
        totalDurationSeconds = s.totalDurationSeconds; bible = s.bible
    }
}
