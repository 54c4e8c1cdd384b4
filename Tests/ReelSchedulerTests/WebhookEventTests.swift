import Foundation
import Logging
import ReelCore
import ReelStore
import ReelTestSupport
import Synchronization
import Testing

/// Completion-webhook deliveries as job events (issue #17 item 6), against the real PostgreSQL:
/// each recorded outcome appends the job's next event in the statement that records it.
@Suite(.enabled(if: TestDatabase.baseURL != nil, "needs REEL_TEST_DATABASE_URL"), .serialized)
struct WebhookEventTests {
    @Test func eachRecordedOutcomeIsTheJobsNextEventAndAStaleOneIsNothing() async throws {
        let (store, url) = try await TestDatabase.freshStoreAndURL()
        defer { store.close() }
        // Two reeld alive: events are NOTIFYed for the other's watchers, these too.
        let heard = Mutex<[JobEvent]>([])
        let listener = EventListener(url: url, logger: Logger(label: "test")) { e in heard.withLock { $0.append(e) } }
        listener.start()
        defer { listener.stop() }
        _ = try await store.touchInstance(id: "reeld-a")
        #expect(try await store.touchInstance(id: "reeld-b") == 2)
        try await Task.sleep(for: .milliseconds(500))  // LISTEN is in place
        var input = CreateJobInput(userID: "u", sceneID: "s", type: .sceneCreation, inputText: "hook")
        input.webhookURL = "http://127.0.0.1:9/h?token=secret"
        let id = try await store.createJob(try input.validated(allowPrivateWebhooks: true)).job.id
        // The job ends (the outbox trigger makes its delivery).
        _ = try await store.scalar("""
        INSERT INTO job_events (job_id, seq, status, stage, progress, message) VALUES
          ('\(id)', 2, 'final_ready', 'completed', 100, 'final video ready');
        UPDATE jobs SET status = 'final_ready', stage = 'completed', progress = 100, message = 'final video ready', last_event_seq = 2,
                        completed_at = now() WHERE id = '\(id)';
        SELECT 1
        """)
        let first = try #require(try await store.claimWebhookDeliveries(limit: 5, leaseMs: 60_000).only)
        let retry = WebhookOutcome.retry(afterMs: 0, status: 500, error: "HTTP 500")
        let message = retry.eventMessage(url: first.url, attempt: first.attempt, deliveryID: first.deliveryID)
        #expect(message == "webhook delivery to http://127.0.0.1:9/h failed: HTTP 500 (attempt 1, delivery \(first.deliveryID))")
        let r1 = try #require(try await store.finishWebhookDelivery(id: first.deliveryID, attempt: 1, outcome: retry,
                                                                   body: "{}", eventMessage: message))
        let e1 = try #require(r1.event)
        #expect(e1.seq == 3 && e1.status == .finalReady && e1.stage == .completed && e1.progress == 100)
        #expect(e1.message.hasPrefix(message + "; next attempt at 20") && e1.message.hasSuffix("Z"))
        let second = try #require(try await store.claimWebhookDeliveries(limit: 5, leaseMs: 60_000).only)
        #expect(second.attempt == 2 && second.job.lastEventSeq == 2, "the job as it ended (its snapshot)")
        // A stale attempt (the delivery was claimed again since): nothing, no event.
        #expect(try await store.finishWebhookDelivery(id: first.deliveryID, attempt: 1, outcome: retry, body: "{}",
                                                      eventMessage: message) == nil)
        let ok = WebhookOutcome.delivered(status: 204)
        let r2 = try #require(try await store.finishWebhookDelivery(
            id: second.deliveryID, attempt: 2, outcome: ok, body: "{}",
            eventMessage: ok.eventMessage(url: second.url, attempt: 2, deliveryID: second.deliveryID)))
        #expect(r2.event?.seq == 4)
        #expect(r2.event?.message == "webhook delivered to http://127.0.0.1:9/h: HTTP 204 (attempt 2, delivery \(second.deliveryID))")
        let job = try #require(try await store.job(id: id))
        #expect(job.lastEventSeq == 4 && job.status == .finalReady && job.message == "final video ready")
        #expect(try await store.events(jobID: id, afterSeq: 0).map(\.seq) == [1, 2, 3, 4])
        let deadline = ContinuousClock.now + .seconds(5)
        while heard.withLock({ !$0.contains { $0.seq == 4 } }) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        let notified = heard.withLock { $0 }.filter { $0.jobID == id && $0.seq > 2 }
        #expect(notified.map(\.seq) == [3, 4] && notified.map(\.message) == [e1.message, r2.event?.message ?? ""])
        // The events changed no status: no second delivery.
        #expect(try await store.scalar("SELECT count(*) FROM webhook_deliveries WHERE job_id = '\(id)'") == 1)
    }

    @Test func aDeliveryOfAnEndThatWasRetriedMeanwhileKeepsTheJobsNewState() async throws {
        let store = try await TestDatabase.freshStore()
        defer { store.close() }
        var input = CreateJobInput(userID: "u", sceneID: "s", type: .sceneCreation, inputText: "hook")
        input.webhookURL = "http://127.0.0.1:9/h"
        let id = try await store.createJob(try input.validated(allowPrivateWebhooks: true)).job.id
        // Claimed, then failed for good (dead-lettered): its delivery is made.
        #expect(try await store.claim(workerID: "w0", limit: 1, leaseMs: 60_000, types: nil).count == 1)
        let failed = StateChange(status: .failed, stage: .scriptExpansion, progress: 0, message: "failed",
                                 error: JobError(code: "X", message: "x", stage: .scriptExpansion), deadLettered: true)
        _ = try await store.apply(failed, to: id)
        let a = try #require(try await store.claimWebhookDeliveries(limit: 5, leaseMs: 60_000).only)
        // RetryJob (as JobOperations.retry) while the attempt is under way.
        let retried = try await store.apply(StateChange(status: .queued, stage: .pending, progress: 0, message: "retry requested",
                                                        deadLettered: false, retryCount: 0, runAfterMs: 0), to: id)
        let outcome = WebhookOutcome.retry(afterMs: 60_000, status: 503, error: "HTTP 503")
        let r = try #require(try await store.finishWebhookDelivery(
            id: a.deliveryID, attempt: 1, outcome: outcome, body: "{}",
            eventMessage: outcome.eventMessage(url: a.url, attempt: 1, deliveryID: a.deliveryID)))
        let e = try #require(r.event)
        #expect(e.seq == retried.job.lastEventSeq + 1)
        #expect(e.status == .queued && e.stage == .pending && !e.deadLettered, "the job's state now, unchanged")
        let job = try #require(try await store.job(id: id))
        #expect(job.status == .queued && !job.deadLettered && job.lastEventSeq == e.seq && job.message == "retry requested")
        // Still claimable as the queued job it is; no delivery for an end that did not happen.
        #expect(try await store.scalar("SELECT count(*) FROM job_queue WHERE job_id = '\(id)'") == 1)
        #expect(try await store.scalar("SELECT count(*) FROM webhook_deliveries WHERE job_id = '\(id)'") == 1)
        let claimed = try await store.claim(workerID: "w", limit: 1, leaseMs: 60_000, types: nil)
        #expect(claimed.map(\.job.id) == [id])
        #expect(claimed.first?.event.seq == e.seq + 1)
    }

    @Test func failedForGoodNamesTheReason() {
        let o = WebhookOutcome.failed(status: 0, error: "REFUSED_ADDRESS: refused to send to 10.0.0.1: not a public address")
        #expect(o.eventMessage(url: "https://user:pw@example.com/hook#x", attempt: 1, deliveryID: "d") ==
                "webhook delivery to https://example.com/hook failed for good: REFUSED_ADDRESS: refused to send to 10.0.0.1: not a public address (attempt 1, delivery d)")
    }
}

private extension Array {
    var only: Element? { count == 1 ? self[0] : nil }
}
