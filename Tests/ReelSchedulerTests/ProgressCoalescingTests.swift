import Testing
import Foundation
import Synchronization
import ReelCore
import ReelStore
@testable import ReelPipeline
import ReelTestSupport

/// Progress coalescing in a run's writer (DESIGN §2): status and stage changes and messages are
/// always written; progress reports at most one per job per 100 ms, the latest value, a stage's
/// last report never dropped; `seq` dense over the events that exist.
@Suite(.enabled(if: hasDB, "needs REEL_TEST_DATABASE_URL"), .serialized)
struct ProgressCoalescingTests {
    /// What a writer published, in order.
    final class Published: Sendable {
        private let list = Mutex<[JobEvent]>([])
        func append(_ e: JobEvent) { list.withLock { $0.append(e) } }
        var all: [JobEvent] { list.withLock { $0 } }
    }

    /// A claimed job (events 1 and 2) and a writer for its run, publishing into `published`.
    private func claimedRun(_ store: PostgresJobStore, published: Published) async throws -> RunWriter {
        let created = try await store.createJob(try CreateJobInput(userID: "u", sceneID: "s", type: .continuation,
                                                                   inputText: "coalesce").validated()).job
        let claimed = try #require(try await store.claim(workerID: "w", limit: 1, leaseMs: 60_000).first).job
        #expect(claimed.id == created.id && claimed.lastEventSeq == 2)
        return RunWriter(job: claimed, store: store) { published.append($0) }
    }

    private func change(_ status: JobStatus, _ stage: Stage, _ progress: Int32, _ message: String,
                        report: Bool = false) -> StateChange {
        StateChange(status: status, stage: stage, progress: progress, message: message, requireWorker: "w",
                    progressReport: report)
    }

    @Test func fastReportsAreWrittenAtMostEvery100msWithTheLatestValueAndTheStagesLast() async throws {
        let store = try await TestDatabase.freshStore()
        let published = Published()
        let w = try await claimedRun(store, published: published)
        try await w.commit(change(.processing, .scriptExpansion, 5, "expanding"))

        let started = ContinuousClock.now
        let n = 200
        for i in 0..<n {
            try w.post(change(.processing, .scriptExpansion, Int32(6 + i / 4), "report \(i)", report: true))
            try await Task.sleep(for: .milliseconds(5))
        }
        let elapsed = ContinuousClock.now - started
        try await w.commit(change(.scriptReady, .scriptExpansion, 60, "script expanded"))
        try await w.flush()

        let events = try await store.events(jobID: w.jobID, afterSeq: 0)
        #expect(events.map { $0.seq } == Array(1...Int64(events.count)), "seq is dense")
        #expect(published.all == Array(events.dropFirst(2)), "watchers got exactly what was committed, in order")
        #expect(events.contains { $0.message == "expanding" } && events.last?.message == "script expanded")

        let reports = events.filter { $0.message.hasPrefix("report ") }
        let indices = reports.map { Int($0.message.dropFirst("report ".count))! }
        let windows = Int(elapsed / RunWriter.reportInterval)
        #expect(reports.count >= 2 && reports.count <= windows + 2,
                "\(reports.count) reports written in \(elapsed) (≤ one per 100 ms, and the stage's last)")
        #expect(indices == indices.sorted() && Set(indices).count == indices.count, "newer values only: \(indices)")
        #expect(reports.allSatisfy { $0.progress == Int32(6 + Int($0.message.dropFirst("report ".count))! / 4) })
        // The stage's last progress is written, right before the change that ends the stage.
        #expect(indices.last == n - 1)
        let last = try #require(reports.last)
        #expect(events.first { $0.seq == last.seq + 1 }?.message == "script expanded")
        // Between the reports that were not forced out by the stage's end: 100 ms at least, by
        // the events' own timestamps (microseconds, as stored).
        let minGapMicros = try await store.scalar("""
            SELECT COALESCE(min(gap), 1000000)::int8 FROM (
                SELECT seq, extract(epoch FROM at - lag(at) OVER (ORDER BY seq)) * 1000000 AS gap
                FROM job_events WHERE job_id = '\(w.jobID)' AND message LIKE 'report %') g
            WHERE seq < \(last.seq)
            """)
        #expect(minGapMicros >= 100_000, "reports \(minGapMicros) µs apart")
        #expect(try await store.job(id: w.jobID)?.lastEventSeq == events.last?.seq)
    }

    @Test func theReportBeforeEveryMessageStepIsWritten() async throws {
        let store = try await TestDatabase.freshStore()
        let published = Published()
        let w = try await claimedRun(store, published: published)
        for round in 0..<10 {
            for k in 0..<5 {
                try w.post(change(.processing, .scriptExpansion, Int32(round * 5 + k), "r\(round).\(k)", report: true))
            }
            try w.post(change(.processing, .scriptExpansion, Int32(round * 5 + 4), "message \(round)"))
        }
        // A report as the last thing handed over: `flush` writes it rather than wait for its time.
        try w.post(change(.processing, .scriptExpansion, 99, "final report", report: true))
        try await w.flush()

        let events = try await store.events(jobID: w.jobID, afterSeq: 0)
        #expect(events.map { $0.seq } == Array(1...Int64(events.count)), "seq is dense")
        #expect(published.all == Array(events.dropFirst(2)))
        for round in 0..<10 {
            let i = try #require(events.firstIndex { $0.message == "message \(round)" }, "every message is written")
            #expect(events[i - 1].message == "r\(round).4", "the report before message \(round) is its round's last")
        }
        #expect(events.last?.message == "final report" && events.last?.progress == 99)
        #expect(events.filter { $0.message.hasPrefix("r") }.count < 50, "reports were coalesced")
    }

    @Test func aReportThatChangesStatusOrStageIsAlwaysWritten() async throws {
        let store = try await TestDatabase.freshStore()
        let published = Published()
        let w = try await claimedRun(store, published: published)
        try w.post(change(.processing, .scriptExpansion, 10, "a", report: true))
        try w.post(change(.processing, .scriptExpansion, 11, "b", report: true))
        try w.post(change(.scriptReady, .scriptExpansion, 25, "c: a new status", report: true))
        try w.post(change(.scriptReady, .continuityValidation, 30, "d: a new stage", report: true))
        try w.post(change(.scriptReady, .continuityValidation, 31, "e", report: true))
        try await w.flush()
        let messages = try await store.events(jobID: w.jobID, afterSeq: 2).map(\.message)
        #expect(messages.contains("c: a new status") && messages.contains("d: a new stage"))
        #expect(messages.contains("b"), "the stage's last report before the status change")
        #expect(messages.last == "e")
    }

    @Test func aPipelineCoalescesItsProviderPolls() async throws {
        let store = try await TestDatabase.freshStore()
        let provider = ScriptedProvider(pollsBeforeDone: 9)
        let h = Harness(store: store, provider: provider, workers: 1,
                        config: .init(stageDelay: .zero, pollInterval: .milliseconds(2)))
        let job = try await store.createJob(try CreateJobInput(userID: "u", sceneID: "s", type: .continuation,
                                                               inputText: "polls").validated()).job
        await h.scheduler.start()
        #expect(try await waitUntil { try await store.job(id: job.id)?.status == .finalReady })
        await h.scheduler.shutdown()
        let events = try await store.events(jobID: job.id, afterSeq: 0)
        #expect(events.map { $0.seq } == Array(1...Int64(events.count)), "seq is dense")
        let polls = events.filter { $0.message.hasPrefix("generating video") }
        #expect(polls.count >= 1 && polls.count < 9, "9 reports in ~20 ms coalesced: \(polls.map(\.message))")
        let last = try #require(polls.last)
        #expect(last.message == "generating video (90%)", "the stage's last report is written")
        #expect(events.first { $0.seq == last.seq + 1 }?.status == .previewReady)
    }
}
