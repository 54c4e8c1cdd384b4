import Testing
import Foundation
import Logging
import Synchronization
import ReelCore
@testable import ReelStore
import ReelTestSupport

/// Migration 11: one notification per statement that inserts events, carrying all of them
/// (chunked under pg_notify's 8000-byte limit), only while more than one reeld is alive; no
/// per-row trigger and no foreign key on `job_events`.
@Suite(.enabled(if: baseURL != nil, "needs REEL_TEST_DATABASE_URL"), .serialized)
struct EventNotifyTests {
    /// Notification payloads as they arrived.
    final class Payloads: Sendable {
        private let list = Mutex<[String]>([])
        func append(_ p: String) { list.withLock { $0.append(p) } }
        func clear() { list.withLock { $0 = [] } }
        var all: [String] { list.withLock { $0 } }
    }

    /// A listener that keeps every payload as sent, LISTENing before this returns.
    private func listening(_ store: PostgresJobStore, _ url: String) async throws -> (EventListener, Payloads) {
        let payloads = Payloads()
        let listener = EventListener(url: url, logger: Logger(label: "test"), onPayload: { payloads.append($0) })
        listener.start()
        let deadline = ContinuousClock.now + .seconds(10)
        while try await count(store, """
            SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN reel_job_events'
            """) == 0 {
            if ContinuousClock.now > deadline { throw ReelError(.unavailable, "the listener never LISTENed") }
            try await Task.sleep(for: .milliseconds(20))
        }
        return (listener, payloads)
    }

    /// Inserts events `seqs` of `jobID` in one statement, with `message(seq)` each.
    private func insertEvents(_ store: PostgresJobStore, _ jobID: String, _ seqs: ClosedRange<Int>,
                              message: String = "'m' || s") async throws {
        let n = try await count(store, """
            WITH i AS (INSERT INTO job_events (job_id, seq, status, stage, progress, message)
                       SELECT '\(jobID)'::uuid, s, 'processing', 'video_generation', s % 100, \(message)
                       FROM generate_series(\(seqs.lowerBound), \(seqs.upperBound)) s RETURNING 1)
            SELECT count(*) FROM i
            """)
        #expect(n == seqs.count)
    }

    private func waitForPayloads(_ payloads: Payloads, atLeast n: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(5)
        while payloads.all.count < n && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        try await Task.sleep(for: .milliseconds(300))  // nothing more is on its way
    }

    @Test func aMultiRowInsertIsOneNotificationWithEveryRowWhileTwoReeldAreAlive() async throws {
        let (store, url) = try await TestDatabase.freshStoreAndURL()
        let (listener, payloads) = try await listening(store, url)
        defer { listener.stop() }
        let job = try await store.createJob(newJob()).job

        #expect(try await store.touchInstance(id: "reeld-a") == 1)
        try await insertEvents(store, job.id, 2...4)
        try await Task.sleep(for: .milliseconds(700))
        #expect(payloads.all.isEmpty, "one reeld alive: no NOTIFY")

        #expect(try await store.touchInstance(id: "reeld-b") == 2)
        try await insertEvents(store, job.id, 5...9)
        try await waitForPayloads(payloads, atLeast: 1)
        let sent = payloads.all
        #expect(sent.count == 1, "one statement, one notification: \(sent)")
        let events = sent.flatMap(EventListener.decode)
        #expect(events.map(\.seq) == [5, 6, 7, 8, 9])
        #expect(events.map(\.message) == ["m5", "m6", "m7", "m8", "m9"])
        #expect(events.allSatisfy { $0.jobID == job.id && $0.status == .processing && $0.stage == .videoGeneration })
        #expect(events.allSatisfy { $0.atUnixMs > 0 })

        // A statement that inserts no event sends nothing.
        payloads.clear()
        #expect(try await count(store, """
            WITH i AS (INSERT INTO job_events (job_id, seq, status, stage, progress, message)
                       SELECT id, 99, status, stage, 0, '' FROM jobs WHERE false RETURNING 1)
            SELECT count(*) FROM i
            """) == 0)
        try await Task.sleep(for: .milliseconds(500))
        #expect(payloads.all.isEmpty, "no rows, no notification")
        await store.removeInstance(id: "reeld-b")
    }

    @Test func aBigStatementIsChunkedUnder8000BytesAndLongMessagesAreCut() async throws {
        let (store, url) = try await TestDatabase.freshStoreAndURL()
        let (listener, payloads) = try await listening(store, url)
        defer { listener.stop() }
        let job = try await store.createJob(newJob()).job
        _ = try await store.touchInstance(id: "reeld-a")
        _ = try await store.touchInstance(id: "reeld-b")
        // 40 events of 1000 characters: more than one payload can carry.
        try await insertEvents(store, job.id, 2...41, message: "repeat('é', 1000)")
        // Too long for a payload as they are: 3000 characters, 1500 control characters (6 bytes each as JSON).
        try await insertEvents(store, job.id, 42...42, message: "repeat('x', 3000)")
        try await insertEvents(store, job.id, 43...43, message: "repeat(chr(1), 1500)")
        try await waitForPayloads(payloads, atLeast: 16)
        let sent = payloads.all
        #expect(sent.allSatisfy { $0.utf8.count < 8000 })
        // About 2,200 bytes an event: three to a payload, so 14 for the 40, then one each.
        #expect(sent.count == 16, "\(sent.map(\.utf8.count))")
        let events = sent.flatMap(EventListener.decode)
        #expect(events.map(\.seq) == Array(2...43))
        #expect(events.filter { $0.seq <= 41 }.allSatisfy { $0.message == String(repeating: "é", count: 1000) })
        #expect(events.first { $0.seq == 42 }?.message == String(repeating: "x", count: 1500))
        #expect(events.first { $0.seq == 43 }?.message == String(repeating: "\u{1}", count: 200))
        await store.removeInstance(id: "reeld-b")
    }

    @Test func eventsHaveNoRowTriggerAndNoForeignKey() async throws {
        let store = try await freshStore()
        #expect(try await count(store, """
            SELECT count(*) FROM pg_trigger WHERE tgrelid = 'job_events'::regclass AND NOT tgisinternal AND tgtype & 1 = 1
            """) == 0, "no FOR EACH ROW trigger")
        #expect(try await count(store, """
            SELECT count(*) FROM pg_trigger WHERE tgrelid = 'job_events'::regclass AND NOT tgisinternal
            """) == 1, "one statement-level trigger")
        #expect(try await count(store, """
            SELECT count(*) FROM pg_constraint WHERE conrelid = 'job_events'::regclass AND contype = 'f'
            """) == 0, "no foreign key to check on each insert")
    }

    @Test func decodeTakesAnArrayOrOneObject() {
        let one = #"{"job_id":"j1","seq":3,"status":"processing","stage":"upload","progress":88,"message":"m","dead_lettered":false,"at_unix_ms":7}"#
        #expect(EventListener.decode(one) == [JobEvent(jobID: "j1", seq: 3, status: .processing, stage: .upload, progress: 88,
                                                       message: "m", atUnixMs: 7)])
        let two = #"[{"job_id":"j1","seq":4,"status":"failed","stage":"upload","progress":88,"message":"x","dead_lettered":true,"at_unix_ms":8},"#
            + #"{"job_id":"j2","seq":1,"status":"queued","stage":"pending","progress":0,"message":"queued","dead_lettered":false,"at_unix_ms":9}]"#
        let events = EventListener.decode(two)
        #expect(events.map(\.jobID) == ["j1", "j2"] && events.map(\.seq) == [4, 1])
        #expect(events[0].deadLettered && events[0].status == .failed && events[1].status == .queued)
        #expect(EventListener.decode("not json").isEmpty && EventListener.decode("[]").isEmpty)
    }
}
