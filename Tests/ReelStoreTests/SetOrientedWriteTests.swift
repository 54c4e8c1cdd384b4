import Testing
import Foundation
import ReelCore
@testable import ReelStore
import ReelTestSupport

/// The set-oriented durable path (issue 14): many jobs' steps in one statement, finalizations
/// in one statement, the narrow queue, leases per worker with a fencing number.
@Suite(.enabled(if: baseURL != nil, "needs REEL_TEST_DATABASE_URL"), .serialized)
struct SetOrientedWriteTests {
    private func step(_ status: JobStatus, _ stage: Stage, _ progress: Int32, _ message: String, worker: String = "w",
                      fence: Int64? = nil, artifacts: Artifacts? = nil) -> StateChange {
        StateChange(status: status, stage: stage, progress: progress, message: message, artifacts: artifacts,
                    requireWorker: worker, requireFence: fence)
    }

    private func claimed(_ store: PostgresJobStore, _ n: Int, worker: String = "w") async throws -> [Job] {
        for i in 0..<n { _ = try await store.createJob(newJob(user: "u\(i)", text: "job \(i)")) }
        let jobs = try await store.claim(workerID: worker, limit: n, leaseMs: 60_000).map(\.job)
        #expect(jobs.count == n)
        return jobs
    }

    @Test func manyJobsStepsGoInOneStatementWithDenseSeqsAndARefusalFailsAlone() async throws {
        let store = try await freshStore()
        let jobs = try await claimed(store, 3)
        var a = Artifacts()
        a.expandedScript = "SHOT 1"
        let batch: [([StateChange], String)] = [
            ([step(.processing, .scriptExpansion, 5, "expanding", fence: jobs[0].fence),
              step(.scriptReady, .scriptExpansion, 25, "expanded", fence: jobs[0].fence, artifacts: a)], jobs[0].id),
            // Another worker's steps for a job it does not hold: refused, and alone.
            ([step(.processing, .scriptExpansion, 5, "not mine", worker: "intruder")], jobs[1].id),
            ([step(.processing, .scriptExpansion, 7, "expanding", fence: jobs[2].fence)], jobs[2].id),
        ]
        let out = try await PostgresJobStore.apply(batch, pool: store.pool).map { try $0.get() }
        let first = try out[0].map { try $0.get() }
        #expect(first.map(\.event.seq) == [3, 4], "claim was seq 2")
        #expect(first.map(\.event.message) == ["expanding", "expanded"])
        #expect(first[1].job.artifacts.expandedScript == "SHOT 1" && first[1].job.progress == 25)
        #expect(throws: ReelError.self) { try out[1][0].get() }
        #expect(try out[2][0].get().event.seq == 3)
        // What was answered is what was stored.
        let stored = try await store.events(jobID: jobs[0].id, afterSeq: 2)
        #expect(stored == first.map(\.event))
        #expect(try await store.job(id: jobs[0].id)!.lastEventSeq == 4)
        #expect(try await store.job(id: jobs[1].id)!.lastEventSeq == 2, "the refused job is untouched")
        #expect(try await store.events(jobID: jobs[2].id, afterSeq: 0).map(\.seq) == [1, 2, 3])
    }

    @Test func aRunFromAnEarlierClaimWritesNothingEvenUnderTheSameWorker() async throws {
        let store = try await freshStore()
        let job = try await claimed(store, 1)[0]
        let stale = job.fence
        // The job is handed back and claimed again by the same worker: a new claim, a new fence.
        #expect(try await store.releaseLeases(workerPrefix: "w").count == 1)
        let again = try await store.claim(workerID: "w", limit: 1, leaseMs: 60_000).map(\.job)
        #expect(again.map(\.id) == [job.id] && again[0].fence == stale + 1)
        await #expect(throws: ReelError.self) {
            try await store.apply(self.step(.scriptReady, .scriptExpansion, 25, "late", fence: stale), to: job.id)
        }
        let chain = try await store.apply([step(.processing, .scriptExpansion, 5, "late", fence: stale),
                                           step(.scriptReady, .scriptExpansion, 25, "late", fence: stale)], to: job.id)
        #expect(chain.allSatisfy { if case .failure = $0 { true } else { false } })
        let r = JobResult(videoURL: "v.mp4", thumbnailURL: "t.jpg")
        await #expect(throws: ReelError.self) {
            try await store.finalize(jobID: job.id, workerID: "w", fence: stale, result: r, durationSeconds: 5)
        }
        // The current claim writes.
        _ = try await store.apply(step(.scriptReady, .scriptExpansion, 25, "now", fence: stale + 1), to: job.id)
        #expect(try await store.job(id: job.id)!.message == "now")
    }

    @Test func finalizationsShareOneStatementAndEachGetsItsOwnBibleVersion() async throws {
        let store = try await freshStore()
        let jobs = try await claimed(store, 6)  // all on scene s1
        for j in jobs {
            _ = try await store.apply([step(.scriptReady, .scriptExpansion, 25, "s", fence: j.fence),
                                       step(.continuityChecked, .continuityValidation, 35, "c", fence: j.fence),
                                       step(.previewReady, .upload, 95, "u", fence: j.fence)], to: j.id).map { try $0.get() }
        }
        let r = JobResult(videoURL: "v.mp4", thumbnailURL: "t.jpg")
        let finals = try await withThrowingTaskGroup(of: (job: Job, event: JobEvent)?.self) { g in
            for j in jobs { g.addTask { try await store.finalize(jobID: j.id, workerID: "w", fence: j.fence, result: r, durationSeconds: 5) } }
            var out: [(job: Job, event: JobEvent)] = []
            for try await f in g { if let f { out.append(f) } }
            return out
        }
        #expect(finals.count == 6)
        #expect(finals.allSatisfy { $0.job.status == .finalReady && $0.event.seq == 6 && $0.job.result?.segmentID.isEmpty == false })
        #expect(Set(finals.compactMap { $0.job.result?.updatedBibleVersion }) == Set(2...7), "one version each, none shared")
        let scene = try await store.scene(id: "s1")!
        #expect(scene.segmentCount == 6 && scene.bibleVersion == 7 && scene.totalDurationSeconds == 30)
        #expect(try await count(store, "SELECT count(*) FROM job_queue") == 0, "ended jobs leave the queue")
        // Finalizing again changes nothing.
        #expect(try await store.finalize(jobID: jobs[0].id, workerID: "w", fence: jobs[0].fence, result: r, durationSeconds: 5) == nil)
        #expect(try await count(store, "SELECT count(*) FROM segments") == 6)
    }

    @Test func theQueueHoldsExactlyTheQueuedAndRunningJobs() async throws {
        let store = try await freshStore()
        let jobs = try await claimed(store, 2)
        let queued = try await store.createJob(newJob(user: "q", text: "waiting")).job
        #expect(try await count(store, "SELECT count(*) FROM job_queue WHERE worker_id IS NULL") == 1)
        #expect(try await count(store, "SELECT count(*) FROM job_queue WHERE worker_id = 'w'") == 2)
        _ = try await store.apply(StateChange(status: .cancelled, stage: nil, progress: nil, message: "cancel"), to: queued.id)
        _ = try await store.apply(StateChange(status: .failed, stage: .error, progress: 5, message: "boom",
                                              error: JobError(code: "X", message: "boom", stage: .scriptExpansion),
                                              requireWorker: "w"), to: jobs[0].id)
        #expect(try await count(store, "SELECT count(*) FROM job_queue") == 1)
        // A retry puts it back, ready after its backoff.
        _ = try await store.apply(StateChange(status: .queued, stage: .pending, progress: 5, message: "retry", retryCount: 1,
                                              runAfterMs: 60_000), to: jobs[0].id)
        #expect(try await count(store, "SELECT count(*) FROM job_queue WHERE worker_id IS NULL AND run_at > now()") == 1)
        #expect(try await store.claim(workerID: "w2", limit: 5, leaseMs: 60_000).isEmpty, "not before its backoff")
    }

    @Test func stepsAfterTheClaimAreHOTUpdates() async throws {
        let store = try await freshStore()
        let jobs = try await claimed(store, 20)
        func stats() async throws -> (upd: Int, hot: Int) {
            (try await count(store, "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'jobs'"),
             try await count(store, "SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'jobs'"))
        }
        // Statistics reach the view within a second or so of each transaction.
        try await Task.sleep(for: .milliseconds(1500))
        let before = try await stats()
        // Status changes included: a partial index over status would make each of them non-HOT.
        let rounds: [(JobStatus, Stage, Int32)] = [(.processing, .scriptExpansion, 5), (.scriptReady, .scriptExpansion, 25),
                                                   (.scriptReady, .continuityValidation, 30), (.continuityChecked, .continuityValidation, 35),
                                                   (.previewReady, .videoGeneration, 85)]
        for (status, stage, progress) in rounds {
            let batch = jobs.map { j in ([step(status, stage, progress, "\(status.name)", fence: j.fence)], j.id) }
            for r in try await PostgresJobStore.apply(batch, pool: store.pool) { _ = try r.get().map { try $0.get() } }
        }
        var after = try await stats()
        for _ in 0..<30 where after.upd - before.upd < 100 {
            try await Task.sleep(for: .milliseconds(200))
            after = try await stats()
        }
        let (upd, hot) = (after.upd - before.upd, after.hot - before.hot)
        #expect(upd >= 100)
        // Not every one: a statement that updates all of a page's rows can fill it before pruning frees it.
        #expect(Double(hot) >= 0.6 * Double(upd), "no index of jobs covers a column a step changes (\(hot) of \(upd) HOT)")
    }
}

@Suite(.enabled(if: baseURL != nil, "needs REEL_TEST_DATABASE_URL"))
struct PreparedStatementTests {
    /// A conflict (a deadlock or serialization failure, answered UNAVAILABLE so the caller
    /// retries) drops the connection's cache of prepared statements; the statements prepared
    /// after it must not reuse a name the server still holds (that failed every later new
    /// statement on the connection with 42P05 "prepared statement already exists").
    @Test func aConflictDoesNotPoisonTheConnection() async throws {
        let (store, url) = try await TestDatabase.freshStoreAndURL()
        defer { store.close() }
        let pool = try PGPool(url: url, size: 1)
        defer { pool.close() }
        try await pool.withConnection { c in
            _ = try c.query("SELECT $1::int + 1", ["1"])
            #expect(throws: ReelError.self) {
                try c.query("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$", [])
            }
            #expect(try c.query("SELECT $1::int * 2", ["21"]).first?[0] == "42")
            #expect(try c.query("SELECT $1::int + 1", ["1"]).first?[0] == "2")
        }
    }
}
