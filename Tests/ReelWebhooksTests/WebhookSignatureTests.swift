import Crypto
import Foundation
import ReelWebhooks
import Testing

@Suite struct WebhookSignatureTests {
    @Test func headerIsTimestampAndHexHMACOverTimestampDotBody() {
        let body = Array(#"{"id":"j1"}"#.utf8)
        let value = WebhookSignature.value(secret: "s3cret", timestamp: 1_765_000_000, body: body)
        // Computed independently: HMAC-SHA256 keyed with the secret over "<t>." + body.
        let mac = HMAC<SHA256>.authenticationCode(for: Array("1765000000.".utf8) + body,
                                                  using: SymmetricKey(data: Array("s3cret".utf8)))
        let hex = mac.map { String(format: "%02x", $0) }.joined()
        #expect(value == "t=1765000000,v1=\(hex)")
        #expect(hex.count == 64)
    }

    @Test func knownVector() {
        // printf '1700000000.{}' | openssl dgst -sha256 -hmac key
        #expect(WebhookSignature.hex(secret: "key", timestamp: 1_700_000_000, body: Array("{}".utf8))
                == "9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae")
    }

    @Test func verifyAcceptsItsOwnAndRefusesTampering() {
        let body = Array("hello".utf8)
        let h = WebhookSignature.value(secret: "k", timestamp: 100, body: body)
        #expect(WebhookSignature.verify(header: h, secret: "k", body: body, now: 100))
        #expect(!WebhookSignature.verify(header: h, secret: "other", body: body, now: 100))
        #expect(!WebhookSignature.verify(header: h, secret: "k", body: Array("hellO".utf8), now: 100))
        #expect(!WebhookSignature.verify(header: h, secret: "k", body: body, now: 100 + 301))
        #expect(!WebhookSignature.verify(header: "t=100", secret: "k", body: body, now: 100))
    }

    @Test func retryDelayDoublesFromTheBaseAndCapsAtAnHour() {
        let p = WebhookRetryPolicy(baseMs: 1000)
        #expect(p.delayMs(afterAttempt: 1) == 1000)
        #expect(p.delayMs(afterAttempt: 2) == 2000)
        #expect(p.delayMs(afterAttempt: 5) == 16000)
        #expect(p.delayMs(afterAttempt: 20) == 3_600_000)
        #expect(p.delayMs(afterAttempt: 200) == 3_600_000)
        // Jitter keeps the delay within [d/2, d].
        #expect(p.nextDelayMs(afterAttempt: 3, createdAtUnixMs: 0, nowUnixMs: 0, jitter: 0) == 2000)
        #expect(p.nextDelayMs(afterAttempt: 3, createdAtUnixMs: 0, nowUnixMs: 0, jitter: 1) == 4000)
    }

    @Test func givesUpWhenTheNextAttemptWouldPassADay() {
        let p = WebhookRetryPolicy(baseMs: 1000)
        let day: Int64 = 24 * 3_600_000
        #expect(p.nextDelayMs(afterAttempt: 30, createdAtUnixMs: 0, nowUnixMs: day - 3_600_001, jitter: 1) != nil)
        #expect(p.nextDelayMs(afterAttempt: 30, createdAtUnixMs: 0, nowUnixMs: day - 1000, jitter: 1) == nil)
    }
}
