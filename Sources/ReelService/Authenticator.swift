import ReelCore
import Synchronization

/// Turns `authorization: Bearer <secret>` into a `Caller`, and applies per-tenant rate limits.
/// With no key store (auth off) every call is the admin of the "" tenant.
public final class Authenticator: Sendable {
    let keys: (any APIKeyStore)?
    /// Requests per second per tenant when the key sets none (0: unlimited).
    let defaultRateLimit: Int32
    private let cache = Mutex<[String: (key: APIKey, until: ContinuousClock.Instant)]>([:])
    private let buckets = Mutex<[String: TokenBucket]>([:])
    /// How long a looked-up key is trusted before asking the database again (revocation delay).
    static let cacheFor: Duration = .seconds(2)

    public init(keys: (any APIKeyStore)?, defaultRateLimit: Int32 = 0) {
        self.keys = keys; self.defaultRateLimit = defaultRateLimit
    }

    public var enabled: Bool { keys != nil }

    public func caller(_ metadata: [String: String]) async throws -> Caller {
        guard let keys else { return .anonymousAdmin }
        guard let header = metadata["authorization"], header.lowercased().hasPrefix("bearer ") else {
            throw ReelError(.unauthenticated, "missing API key: send `authorization: Bearer <key>`")
        }
        let secret = String(header.dropFirst("bearer ".count)).trimmed
        let hash = APIKey.hash(secret: secret)
        let now = ContinuousClock.now
        var key = cache.withLock { c in c[hash].flatMap { $0.until > now ? $0.key : nil } }
        if key == nil {
            key = try await keys.key(secret: secret)
            if let k = key { cache.withLock { $0[hash] = (k, now + Self.cacheFor) } }
        }
        guard let key, !key.revoked else { throw ReelError(.unauthenticated, "unknown or revoked API key") }
        let limit = key.rateLimitPerSecond > 0 ? key.rateLimitPerSecond : defaultRateLimit
        if limit > 0 {
            let allowed = buckets.withLock { b in b[key.tenantID, default: TokenBucket(rate: Double(limit))].take(now: now) }
            if !allowed { throw ReelError(.resourceExhausted, "rate limit of \(limit) requests/s for tenant \(key.tenantID) exceeded") }
        }
        return Caller(tenantID: key.tenantID, admin: key.admin, keyID: key.id)
    }
}

/// A token bucket holding one second's worth of requests.
struct TokenBucket {
    let rate: Double
    var tokens: Double
    var last: ContinuousClock.Instant?

    init(rate: Double) { self.rate = rate; tokens = rate }

    mutating func take(now: ContinuousClock.Instant) -> Bool {
        if let last {
            let dt = Double((now - last).components.seconds) + Double((now - last).components.attoseconds) / 1e18
            tokens = min(rate, tokens + dt * rate)
        }
        last = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
