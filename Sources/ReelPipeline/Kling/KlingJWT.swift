import Crypto
import Foundation
import Synchronization

/// Kling's API token (DESIGN §5): a JWT, HS256, `{"iss": access key, "exp": now+1800,
/// "nbf": now-5}`, signed with the secret key. One token is reused until shortly before it
/// expires; `invalidate` forces a new one (after an auth error). The keys never leave here.
public final class KlingJWT: Sendable {
    private let accessKey: String
    /// The secret's bytes (a `SymmetricKey` is made per signature: it is not `Sendable`).
    private let secret: [UInt8]
    private let lifetime: Int64
    /// A token is replaced this long before it expires.
    private let renewBefore: Int64
    private let now: @Sendable () -> Int64
    private let cached = Mutex<(token: String, exp: Int64)?>(nil)

    public init(accessKey: String, secretKey: String, lifetimeSeconds: Int64 = 1800, renewBeforeSeconds: Int64 = 300,
                now: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }) {
        self.accessKey = accessKey
        self.secret = Array(secretKey.utf8)
        self.lifetime = lifetimeSeconds
        self.renewBefore = min(renewBeforeSeconds, lifetimeSeconds / 2)
        self.now = now
    }

    /// The current token, made anew when there is none or it is close to expiring.
    public func token() -> String {
        let t = now()
        return cached.withLock { c in
            if let c, t < c.exp - renewBefore { return c.token }
            let exp = t + lifetime
            let made = sign(iat: t, exp: exp)
            c = (made, exp)
            return made
        }
    }

    /// Drops the cached token: the next call makes a new one.
    public func invalidate() { cached.withLock { $0 = nil } }

    private func sign(iat: Int64, exp: Int64) -> String {
        struct Header: Encodable { let alg = "HS256"; let typ = "JWT" }
        struct Claims: Encodable { let iss: String; let exp: Int64; let nbf: Int64 }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        // Encoding two plain structs can't fail.
        let header = Self.base64URL(try! encoder.encode(Header()))
        let claims = Self.base64URL(try! encoder.encode(Claims(iss: accessKey, exp: exp, nbf: iat - 5)))
        let input = header + "." + claims
        let mac = HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: SymmetricKey(data: secret))
        return input + "." + Self.base64URL(Data(mac))
    }

    static func base64URL(_ data: Data) -> String {
        var s = data.base64EncodedString()
        s = s.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        while s.hasSuffix("=") { s.removeLast() }
        return s
    }
}
