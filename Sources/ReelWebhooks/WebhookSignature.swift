import Crypto
import Foundation
import ReelCore

/// The `Reel-Signature` header of a completion webhook (DESIGN §8): `t=UNIX,v1=HEX`, where HEX
/// is the lowercase HMAC-SHA256, keyed with the secret's UTF-8 bytes, of the bytes `<t>.`
/// followed by the body. A receiver recomputes it with its secret and compares.
public enum WebhookSignature {
    public static let header = "Reel-Signature"

    /// The header's value for `body` sent at `timestamp` (Unix seconds).
    public static func value(secret: String, timestamp: Int64, body: [UInt8]) -> String {
        "t=\(timestamp),v1=\(hex(secret: secret, timestamp: timestamp, body: body))"
    }

    /// The `v1` part: lowercase hex of HMAC-SHA256(secret, "<t>." + body).
    public static func hex(secret: String, timestamp: Int64, body: [UInt8]) -> String {
        var hmac = HMAC<SHA256>(key: SymmetricKey(data: Array(secret.utf8)))
        hmac.update(data: Array("\(timestamp).".utf8))
        hmac.update(data: body)
        return hmac.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Whether `header` signs `body` with `secret`, sent within `tolerance` seconds of `now`.
    public static func verify(header: String, secret: String, body: [UInt8], now: Int64, tolerance: Int64 = 300) -> Bool {
        var t: Int64?
        var v1: [String] = []
        for part in header.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2 else { continue }
            if kv[0] == "t" { t = Int64(kv[1]) } else if kv[0] == "v1" { v1.append(kv[1]) }
        }
        guard let t, abs(now - t) <= tolerance else { return false }
        let expected = Array(hex(secret: secret, timestamp: t, body: body).utf8)
        // Constant time over the candidate's bytes.
        return v1.contains { candidate in
            let c = Array(candidate.utf8)
            guard c.count == expected.count else { return false }
            return zip(c, expected).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
        }
    }
}

/// When a failed delivery is tried again (DESIGN §8): `--retry-base-ms` × 2ⁿ with jitter,
/// capped at one hour, and not past 24 h after the job ended.
public struct WebhookRetryPolicy: Sendable {
    public var baseMs: Int64
    public var maxDelayMs: Int64 = 3_600_000
    public var giveUpAfterMs: Int64 = 24 * 3_600_000

    public init(baseMs: Int64) { self.baseMs = max(1, baseMs) }

    /// The delay after failed attempt number `attempt` (from 1), before jitter: base × 2^(attempt−1), capped.
    public func delayMs(afterAttempt attempt: Int32) -> Int64 {
        RetryPolicy(baseMs: baseMs, maxMs: maxDelayMs).cappedDelayMs(attempt: attempt)
    }

    /// The delay with jitter, in [½·d, d]; nil when the next attempt would come more than
    /// 24 h after `createdAtUnixMs`: give up.
    public func nextDelayMs(afterAttempt attempt: Int32, createdAtUnixMs: Int64, nowUnixMs: Int64,
                            jitter: Double = Double.random(in: 0...1)) -> Int64? {
        let d = delayMs(afterAttempt: attempt)
        let delay = d / 2 + Int64(Double(d - d / 2) * min(max(jitter, 0), 1))
        return nowUnixMs + delay > createdAtUnixMs + giveUpAfterMs ? nil : delay
    }
}
