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
        let secret = try Self.secret(metadata)
        let hash = APIKey.hash(secret: secret)
        let now = ContinuousClock.now
        if let known = cached(hash, now: now) { return try admit(known, now: now) }
        let key = try await keys.key(secret: secret)
        if let k = key { cache.withLock { $0[hash] = (k, now + Self.cacheFor) } }
        return try admit(key, now: now)
    }

    /// `caller` when it can answer without the database (auth off, or the key seen in the last
    /// `cacheFor`); nil otherwise. Never waits, so the event loop may call it inline.
    public func callerIfKnown(_ metadata: [String: String]) throws -> Caller? {
        guard keys != nil else { return .anonymousAdmin }
        let hash = APIKey.hash(secret: try Self.secret(metadata))
        let now = ContinuousClock.now
        guard let known = cached(hash, now: now) else { return nil }
        return try admit(known, now: now)
    }

    private static func secret(_ metadata: [String: String]) throws -> String {
        guard let header = metadata["authorization"], header.lowercased().hasPrefix("bearer ") else {
            throw ReelError(.unauthenticated, "missing API key: send `authorization: Bearer <key>`")
        }
        return String(header.dropFirst("bearer ".count)).trimmed
    }

    private func cached(_ hash: String, now: ContinuousClock.Instant) -> APIKey? {
        cache.withLock { c in c[hash].flatMap { $0.until > now ? $0.key : nil } }
    }

    /// A found key's caller, after revocation and the tenant's rate limit.
    private func admit(_ key: APIKey?, now: ContinuousClock.Instant) throws -> Caller {
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
