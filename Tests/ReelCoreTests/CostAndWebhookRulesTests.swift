import Foundation
import Testing
@testable import ReelCore

/// DESIGN §2 "Cost" and §8's webhook address rules.
struct CostAndWebhookRulesTests {
    @Test func theSimulatedProviderChargesPerStartedFiveSecondsDoubledForHigh() {
        func charge(_ seconds: Int32, _ q: Quality = .standard) -> Double {
            CostModel.simulatedCharge(JobConfig(targetDurationSeconds: seconds, quality: q))
        }
        #expect(charge(0) == 1, "0 counts as 5 s")
        #expect(charge(1) == 1 && charge(5) == 1)
        #expect(charge(6) == 2 && charge(10) == 2 && charge(11) == 3)
        #expect(charge(10, .high) == 4 && charge(0, .preview) == 1)
    }

    @Test func weightsMultiplyTheExpectedCost() throws {
        let m = CostModel(weights: try CostModel.parseWeights("kling=1.5, runway=0.25"))
        #expect(m.expectedCost(provider: "kling", config: JobConfig(targetDurationSeconds: 10)) == 3)
        #expect(m.expectedCost(provider: "runway", config: JobConfig(targetDurationSeconds: 5)) == 0.25)
        #expect(m.expectedCost(provider: "simulated", config: JobConfig()) == 1, "unlisted: weight 1")
        for bad in ["kling", "kling=0", "kling=-1", "=2", "kling=abc", "kling=inf"] {
            #expect(throws: ReelError.self, "\(bad)") { try CostModel.parseWeights(bad) }
        }
        #expect(try CostModel.parseWeights("") == [:])
    }

    @Test func privateWebhookAddressesAreRecognised() {
        for host in ["localhost", "LOCALHOST.", "api.localhost", "127.0.0.1", "127.9.9.9", "10.0.0.1", "172.16.0.1",
                     "172.31.255.255", "192.168.0.1", "169.254.169.254", "0.0.0.0", "100.64.0.1", "[::1]", "::",
                     "fe80::1", "fd00::1", "[::ffff:10.0.0.1]", "255.255.255.255"] {
            #expect(WebhookAddress.isPrivateLiteral(host), "\(host) is refused")
        }
        for host in ["example.com", "8.8.8.8", "172.32.0.1", "192.169.0.1", "[2606:4700::1111]", "1.1.1.1",
                     "localhost.example.com"] {
            #expect(!WebhookAddress.isPrivateLiteral(host), "\(host) is allowed")
        }
        #expect(WebhookAddress.isPrivateIP("not-an-ip") == nil)
    }

    @Test func createValidationOfTheMoneyAndTimeFields() throws {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        func input(_ f: (inout CreateJobInput) -> Void) -> CreateJobInput {
            var i = CreateJobInput(userID: "u", sceneID: "s", type: .sceneCreation, inputText: "t")
            f(&i)
            return i
        }
        func field(_ i: CreateJobInput, allowPrivate: Bool = false) -> String? {
            do { _ = try i.validated(allowPrivateWebhooks: allowPrivate); return nil } catch { return error.field }
        }
        #expect(field(input { $0.runAtUnixMs = now + 400 * 86_400_000 }) == "run_at_unix_ms")
        #expect(field(input { $0.deadlineUnixMs = now - 1 }) == "deadline_unix_ms")
        #expect(field(input { $0.webhookURL = "http://127.0.0.1:8080/h" }) == "webhook_url")
        #expect(field(input { $0.webhookURL = "http://127.0.0.1:8080/h" }, allowPrivate: true) == nil,
                "--webhook-allow-private lets loopback through")
        #expect(field(input { $0.webhookURL = "mailto:a@b.c" }, allowPrivate: true) == "webhook_url")
        #expect(field(input { $0.webhookURL = "https://user:pw@example.com/h" }) == "webhook_url")
        let ok = try input { $0.runAtUnixMs = now + 60_000; $0.deadlineUnixMs = now + 120_000
                             $0.webhookURL = "https://example.com/h" }.validated()
        #expect(ok.runAtUnixMs == now + 60_000 && ok.deadlineUnixMs == now + 120_000 && ok.webhookURL == "https://example.com/h")
    }
}
