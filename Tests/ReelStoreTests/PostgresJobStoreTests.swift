import Testing
import Foundation
import Logging
import Synchronization
import ReelCore
@testable import ReelStore
import ReelTestSupport

/// Integration tests against the real PostgreSQL that `scripts/test` starts
/// (REEL_TEST_DATABASE_URL). Each test gets a database of its own.
let baseURL = TestDatabase.baseURL

func freshStore() async throws -> PostgresJobStore {
    let store = try await TestDatabase.freshStore()
    #expect(try await store.migrate() == [], "migrations apply once")
    return store
}

func newJob(user: String = "u1", scene: String = "s1", text: String = "text", key: String = "",
            type: JobType = .continuation, tier: Tier = .standard) throws -> NewJob {
    try CreateJobInput(userID: user, sceneID: scene, type: type, inputText: text, idempotencyKey: key, tier: tier).validated()
}

func count(_ store: PostgresJobStore, _ sql: String) async throws -> Int { try await store.scalar(sql) }

@Suite(.enabled(if: baseURL != nil, "needs REEL_TEST_DATABASE_URL"), .serialized)
struct PostgresJobStoreTests {
    @Test func createStoresJobAndFirstEvent() async throws {
        let store = try await freshStore()
        let (job, event) = try await store.createJob(newJob())
        #expect(job.status == .queued && job.stage == .pending && job.lastEventSeq == 1)
        #expect(job.maxRetries == 3 && job.bibleVersion == 1)
        let events = try await store.events(jobID: job.id, afterSeq: 0)
        #expect(events.map(\.seq) == [1])
        #expect(events.first?.status == .queued)
        #expect(event == events.first, "the create answers the event row it stored")
        #expect(try await store.job(id: job.id) == job)
    }

    @Test func concurrentCreatesWithOneKeyMakeOneJob() async throws {
        let store = try await freshStore()
        let ids = try await withThrowingTaskGroup(of: (String, Bool).self) { g in
            for _ in 0..<20 { g.addTask { let r = try await store.createJob(try newJob(key: "same")); return (r.job.id, r.event != nil) } }
            return try await g.reduce(into: [(String, Bool)]()) { $0.append($1) }
        }
        #expect(Set(ids.map(\.0)).count == 1)
        #expect(ids.filter(\.1).count == 1, "exactly one call created it")
        #expect(try await count(store, "SELECT count(*) FROM jobs") == 1)
        #expect(try await count(store, "SELECT count(*) FROM job_events") == 1)
        let other = try await store.createJob(newJob(user: "u2", key: "same"))
        #expect(other.event != nil, "keys are per user")
    }

    @Test func concurrentCreatesShareCommitsAndEachGetsItsOwnAnswer() async throws {
        let store = try await freshStore()
        // Text that an array literal must quote: commas, braces, quotes, backslashes, "NULL", unicode.
        let texts = ["a,b", "{x}", "say \"hi\"", "back\\slash", "NULL", "", "é ✓ 🎬", "  spaced  "]
        let results = try await withThrowingTaskGroup(of: (Int, Job, Bool).self) { g in
            for i in 0..<200 {
                g.addTask {
                    let text = "\(texts[i % texts.count]) #\(i)"
                    var j = try newJob(user: i % 10 == 0 ? "ud" : "u\(i % 7)", scene: "scene-\(i % 3)", text: text,
                                       key: i % 10 == 0 ? "dup-\(i % 20)" : "")
                    j.tenantID = i % 2 == 0 ? "t\"1" : ""
                    let r = try await store.createJob(j)
                    return (i, r.job, r.event != nil)
                }
            }
            return try await g.reduce(into: [(Int, Job, Bool)]()) { $0.append($1) }
        }
        for (i, job, _) in results where i % 10 != 0 {
            #expect(job.inputText == "\(texts[i % texts.count]) #\(i)")
            #expect(job.userID == "u\(i % 7)" && job.sceneID == "scene-\(i % 3)")
            #expect(job.tenantID == (i % 2 == 0 ? "t\"1" : ""))
        }
        // User ud's keys dup-0 and dup-10 are each used by 10 calls: one job each, one call created it.
        let dup = Dictionary(grouping: results.filter { $0.0 % 10 == 0 }, by: { $0.1.idempotencyKey })
        #expect(dup.count == 2)
        for (_, calls) in dup {
            #expect(Set(calls.map(\.1.id)).count == 1)
            #expect(calls.filter(\.2).count == 1)
        }
        #expect(try await count(store, "SELECT count(*) FROM jobs") == 182)
        #expect(try await count(store, "SELECT count(*) FROM job_events") == 182)
        #expect(Set(results.map(\.1.id)).count == 182)
        // Each (tenant, user) has exactly one job scored as its first of the day (its key a
        // minute ahead of the user's others), batches or not.
        let firsts = try await count(store, """
            SELECT count(*) FROM jobs j WHERE EXISTS (SELECT 1 FROM jobs k WHERE k.tenant_id = j.tenant_id
              AND k.user_id = j.user_id AND k.priority_key - j.priority_key > 30000)
            """)
        #expect(firsts == 15)
    }

    @Test func concurrentStateChangesShareCommitsAndARefusedOneFailsAlone() async throws {
        let store = try await freshStore()
        for i in 0..<40 { _ = try await store.createJob(newJob(user: "u\(i % 5)", text: "batch \(i)")) }
        let jobs = try await store.claim(workerID: "w", limit: 40, leaseMs: 60_000).map(\.job)
        #expect(jobs.count == 40)
        let outcomes = await withTaskGroup(of: (String, Bool, Bool).self) { g in
            for (i, job) in jobs.enumerated() {
                g.addTask {
                    let ok = (try? await store.apply(StateChange(status: .scriptReady, stage: .scriptExpansion, progress: 25,
                                                                 message: "mine", requireWorker: "w"), to: job.id)) != nil
                    return (job.id, true, ok)
                }
                if i < 10 {
                    g.addTask {
                        let ok = (try? await store.apply(StateChange(status: .scriptReady, stage: .scriptExpansion, progress: 99,
                                                                     message: "intruder", requireWorker: "intruder"), to: job.id)) != nil
                        return (job.id, false, ok)
                    }
                }
            }
            return await g.reduce(into: [(String, Bool, Bool)]()) { $0.append($1) }
        }
        let holders = outcomes.filter { $0.1 }, intruders = outcomes.filter { !$0.1 }
        #expect(holders.count == 40 && holders.filter(\.2).count == 40, "every holder's change committed")
        #expect(intruders.count == 10 && intruders.filter(\.2).isEmpty, "every intruder's change was refused")
        #expect(try await count(store, "SELECT count(*) FROM job_events") == 120)
        #expect(try await count(store, "SELECT count(*) FROM jobs WHERE status = 'script_ready' AND progress = 25 AND last_event_seq = 3") == 40)
        #expect(try await count(store, "SELECT count(*) FROM job_events WHERE message = 'intruder'") == 0)
    }

    @Test func oneBatchAppliesAJobsChangesInOrderAndARefusalFailsAlone() async throws {
        let store = try await freshStore()
        let (a, _) = try await store.createJob(newJob(text: "a"))
        let (b, _) = try await store.createJob(newJob(text: "b"))
        _ = try await store.claim(workerID: "w", limit: 2, leaseMs: 60_000)
        // Large artifacts: the batch must not stall on full socket buffers in either direction.
        var art = Artifacts()
        art.expandedScript = String(repeating: "scene text ", count: 40_000)
        let batch: [([StateChange], String)] = [
            ([StateChange(status: .scriptReady, stage: .scriptExpansion, progress: 25, message: "a1", artifacts: art, requireWorker: "w"),
              StateChange(status: .processing, stage: .scriptExpansion, progress: 30, message: "back", requireWorker: "w"),
              StateChange(status: .continuityChecked, stage: .continuityValidation, progress: 35, message: "a2", artifacts: art, requireWorker: "w")],
             a.id),
            ([StateChange(status: .scriptReady, stage: .scriptExpansion, progress: 25, message: "b1", requireWorker: "w"),
              StateChange(status: .scriptReady, stage: .scriptExpansion, progress: 26, message: "b2", requireWorker: "w")], b.id),
        ]
        let results = try await PostgresJobStore.apply(batch, pool: store.pool).map { try $0.get() }
        #expect(try results[0][0].get().event.seq == 3)
        #expect(throws: ReelError.self) { try results[0][1].get() }   // script_ready → processing is not in the table
        #expect(try results[0][2].get().event.seq == 4 && results[0][2].get().job.artifacts.expandedScript == art.expandedScript)
        #expect(try results[1][0].get().event.seq == 3)
        #expect(try results[1][1].get().event.seq == 4)
        let events = try await store.events(jobID: a.id, afterSeq: 0).map(\.message)
        #expect(events == ["queued", events[1], "a1", "a2"])
        // A statement the database rejects rolls the whole list back and says so.
        let broken = [
            StateChange(status: .previewReady, stage: .videoGeneration, progress: 85, message: "ok", requireWorker: "w"),
            StateChange(status: .queued, stage: .pending, progress: 0, message: "run after the end of time",
                        runAfterMs: .max, requireWorker: "w"),
        ]
        await #expect(throws: ReelError.self) { _ = try await store.apply(broken, to: a.id) }
        #expect(try await store.job(id: a.id)?.status == .continuityChecked)
        // The connections are still usable afterwards.
        #expect(try await store.apply(StateChange(status: .previewReady, stage: .videoGeneration, progress: 85, message: "ok",
                                                  requireWorker: "w"), to: a.id).event.seq == 5)
    }

    @Test func aRunOfStepsAsOneStatementWritesWhatTheStepsOneByOneWould() async throws {
        let store = try await freshStore()
        let (x, _) = try await store.createJob(newJob(text: "one by one"))
        let (y, _) = try await store.createJob(newJob(text: "as a chain"))
        let (z, _) = try await store.createJob(newJob(text: "cancelled"))
        _ = try await store.claim(workerID: "w", limit: 3, leaseMs: 60_000)
        var art = Artifacts()
        art.expandedScript = "SCENE s1 — \"quoted\", {braced}, back\\slash"
        art.providerJobID = "task-1"
        let steps = [
            StateChange(status: .processing, stage: .scriptExpansion, progress: 5, message: "expanding, {x}", requireWorker: "w"),
            StateChange(status: .scriptReady, stage: .scriptExpansion, progress: 25, message: "expanded", artifacts: art, requireWorker: "w"),
            StateChange(status: .scriptReady, stage: .continuityValidation, progress: 30, message: "validating \"now\"", requireWorker: "w"),
            StateChange(status: .continuityChecked, stage: .continuityValidation, progress: 35, message: "checked", requireWorker: "w"),
        ]
        #expect(PostgresJobStore.isChain(steps))
        #expect(!PostgresJobStore.isChain([steps[1], steps[0]]), "script_ready → processing is not in the table")
        for st in steps { _ = try await store.apply(st, to: x.id) }
        let chained = try await store.apply(steps, to: y.id).map { try $0.get() }
        #expect(chained.map(\.event.seq) == [3, 4, 5, 6])
        #expect(chained.map(\.event.message) == steps.map(\.message))
        #expect(chained.map(\.event.progress) == [5, 25, 30, 35])
        let one = try #require(try await store.job(id: x.id)), all = try #require(try await store.job(id: y.id))
        #expect(all.status == one.status && all.stage == one.stage && all.progress == one.progress && all.message == one.message)
        #expect(all.artifacts == one.artifacts && all.artifacts.expandedScript == art.expandedScript)
        #expect(all.lastEventSeq == one.lastEventSeq && chained[3].job.lastEventSeq == 6)
        let ex = try await store.events(jobID: x.id, afterSeq: 2), ey = try await store.events(jobID: y.id, afterSeq: 2)
        #expect(ex.map { [$0.seq, Int64($0.progress)] } == ey.map { [$0.seq, Int64($0.progress)] })
        #expect(ex.map(\.message) == ey.map(\.message) && ex.map(\.status) == ey.map(\.status) && ex.map(\.stage) == ey.map(\.stage))
        // A chain whose first step is refused (the job was cancelled) writes nothing at all.
        _ = try await store.apply(StateChange(status: .cancelled, stage: nil, progress: nil, message: "cancelled"), to: z.id)
        let refused = try await store.apply(steps, to: z.id)
        #expect(refused.count == 4)
        for r in refused { #expect(throws: ReelError.self) { try r.get() } }
        #expect(try await store.events(jobID: z.id, afterSeq: 0).count == 3)
    }

    @Test func invalidTransitionChangesNothing() async throws {
        let store = try await freshStore()
        let (job, _) = try await store.createJob(newJob())
        await #expect(throws: ReelError.self) {
            _ = try await store.apply(StateChange(status: .finalReady, stage: .completed, progress: 100, message: "x"), to: job.id)
        }
        await #expect(throws: ReelError.self) {
            _ = try await store.apply(StateChange(status: .processing, stage: .upload, progress: 101, message: "x"), to: job.id)
        }
        #expect(try await store.job(id: job.id) == job)
        #expect(try await store.events(jobID: job.id, afterSeq: 0).count == 1)
        do {
            _ = try await store.apply(StateChange(status: .queued, stage: .pending, progress: 0, message: "x"),
                                      to: "00000000-0000-0000-0000-000000000000")
            Issue.record("expected notFound")
        } catch let e as ReelError {
            #expect(e.code == .notFound)
        }
    }

    @Test func everyChangeWritesTheNextEvent() async throws {
        let store = try await freshStore()
        let (job, _) = try await store.createJob(newJob())
        let (claimed, e2) = try await store.claim(workerID: "w", limit: 10, leaseMs: 60_000).first!
        #expect(claimed.id == job.id && claimed.status == .processing && e2.seq == 2 && claimed.workerID == "w")
        let (j3, e3) = try await store.apply(StateChange(status: .scriptReady, stage: .scriptExpansion, progress: 25,
                                                         message: "ok", requireWorker: "w"), to: job.id)
        #expect(e3.seq == 3 && j3.lastEventSeq == 3 && j3.progress == 25)
        await #expect(throws: ReelError.self, "another worker cannot write") {
            _ = try await store.apply(StateChange(status: .continuityChecked, stage: .continuityValidation, progress: 35,
                                                  message: "x", requireWorker: "intruder"), to: job.id)
        }
        let stored = try await store.events(jobID: job.id, afterSeq: 1)
        #expect(stored.map(\.seq) == [2, 3])
        #expect(try await store.events(jobID: job.id, afterSeq: 3).isEmpty)
    }

    @Test func claimFollowsPriorityAndNeverHandsAJobOutTwice() async throws {
        let store = try await freshStore()
        // u1's first job today gets the bonus; later ones don't.
        let a = try await store.createJob(newJob(user: "u1", text: "a")).job
        let b = try await store.createJob(newJob(user: "u1", text: "b")).job
        let c = try await store.createJob(newJob(user: "u1", text: "c", type: .sceneCreation)).job
        let d = try await store.createJob(newJob(user: "u1", text: "d", tier: .premium)).job
        let order = try await store.claim(workerID: "w", limit: 10, leaseMs: 60_000).map(\.job.id)
        #expect(order == [d.id, c.id, a.id, b.id])

        for i in 0..<40 { _ = try await store.createJob(newJob(user: "bulk", text: "t\(i)")) }
        let claims = try await withThrowingTaskGroup(of: [String].self) { g in
            for w in 0..<8 { g.addTask { try await store.claim(workerID: "w\(w)", limit: 7, leaseMs: 60_000).map(\.job.id) } }
            return try await g.reduce(into: [String]()) { $0 += $1 }
        }
        #expect(claims.count == 40)
        #expect(Set(claims).count == 40, "no job claimed twice")
    }

    @Test func oneUsersFloodDoesNotStarveAnothersSingleJob() async throws {
        let store = try await freshStore()
        // 5,000 queued jobs of one user, inserted in bulk, all older than the other user's job.
        _ = try await store.scalar("""
            WITH ins AS (
              INSERT INTO jobs (user_id, scene_id, type, status, stage, input_text, idempotency_key, tier, priority_key)
              SELECT 'flood', 's1', 'scene_creation', 'queued', 'pending', 'x' || g, 'k' || g, 'standard', g
              FROM generate_series(1, 5000) g RETURNING *),
            q AS (
              INSERT INTO job_queue (job_id, tenant_id, user_id, type, tier, priority_key, run_at)
              SELECT id, tenant_id, user_id, type, tier, priority_key, run_at FROM ins)
            INSERT INTO job_events (job_id, seq, status, stage, progress, message) SELECT id, 1, 'queued', 'pending', 0, 'queued' FROM ins
            """)
        let single = try await store.createJob(newJob(user: "quiet", text: "just one")).job
        #expect(try await count(store, "SELECT count(*) FROM jobs WHERE status = 'queued'") == 5001)
        // The next round of 8 free slots takes the single job along with the flood's best.
        let round = try await store.claim(workerID: "w", limit: 8, leaseMs: 60_000).map(\.job)
        #expect(round.count == 8)
        #expect(round.contains { $0.id == single.id })
        #expect(round.filter { $0.userID == "flood" }.count == 7)
        // Within the flood, priority order still holds.
        let flood = round.filter { $0.userID == "flood" }.map(\.inputText)
        #expect(flood == (1...7).map { "x\($0)" })
    }

    @Test func agingLetsAnOldJobBeatNewerBetterScoredOnes() async throws {
        let store = try await freshStore()
        let old = try await store.createJob(newJob(user: "ager", text: "old, plain continuation")).job
        // It was enqueued ten minutes ago: its key is what PriorityScore gives for that time.
        let tenMinutesAgo = Int64(Date().timeIntervalSince1970 * 1000) - 600_000
        let key = PriorityScore(tier: .standard, type: .continuation, firstJobToday: false).sortKey(enqueuedAtUnixMs: tenMinutesAgo)
        _ = try await store.scalar("UPDATE job_queue SET priority_key = \(key) WHERE job_id = '\(old.id)'")
        for i in 0..<20 { _ = try await store.createJob(newJob(user: "ager", text: "fresh \(i)", type: .sceneCreation)) }
        let first = try await store.claim(workerID: "w", limit: 1, leaseMs: 60_000)
        #expect(first.map(\.job.id) == [old.id], "20 points of score are worth 2 minutes; it waited 10")
    }

    @Test func aJobNearItsDeadlineIsClaimedAheadOfOlderJobsWithoutOne() async throws {
        let store = try await freshStore()
        let older = try await store.createJobs((0..<3).map { try newJob(user: "dl", text: "older \($0)") }).map { try $0.get().job }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        var far = try newJob(user: "dl", text: "deadline in an hour")
        far.deadlineUnixMs = now + 3_600_000
        far.expectedRunMs = 1_400
        var near = try newJob(user: "dl", text: "deadline in 2 s")
        near.deadlineUnixMs = now + 2_000
        near.expectedRunMs = 1_400
        let farJob = try await store.createJob(far).job
        let nearJob = try await store.createJob(near).job
        #expect(nearJob.deadlineUnixMs == near.deadlineUnixMs, "the deadline is stored")
        let order = try await store.claim(workerID: "w", limit: 5, leaseMs: 60_000).map(\.job.id)
        #expect(order.first == nearJob.id, "the near deadline overtakes the older jobs")
        #expect(Set(order.dropFirst().prefix(3)) == Set(older.map(\.id)))
        #expect(order.last == farJob.id, "a far deadline is no boost: it keeps its place")
    }

    @Test func expiredLeaseIsRequeuedWithTheAttemptCounted() async throws {
        let store = try await freshStore()
        let (job, _) = try await store.createJob(newJob())
        _ = try await store.claim(workerID: "w", limit: 1, leaseMs: 1)
        try await Task.sleep(for: .milliseconds(50))
        // Another worker's heartbeat holds nothing of this job.
        #expect(try await store.workerHeartbeat(workerID: "other", leaseMs: 1000).requeued.isEmpty)
        #expect(try await store.heldJobIDs(workerID: "other").isEmpty)
        let requeued = try await store.requeueExpiredLeases()
        #expect(requeued.map(\.job.id) == [job.id])
        let j = try await store.job(id: job.id)!
        #expect(j.status == .queued && j.retryCount == 1)
        #expect(try await store.requeueExpiredLeases().isEmpty)
        // Handing back at shutdown does not count an attempt.
        _ = try await store.claim(workerID: "reeld-1-w", limit: 1, leaseMs: 60_000)
        #expect(try await store.workerHeartbeat(workerID: "reeld-1-w", leaseMs: 60_000).lapsed == false)
        #expect(try await store.heldJobIDs(workerID: "reeld-1-w") == [job.id])
        #expect(try await store.releaseLeases(workerPrefix: "reeld-1").count == 1)
        #expect(try await store.job(id: job.id)!.retryCount == 1)
    }

    @Test func aWorkerWhoseLeaseExpiredWritesNothingEvenBeforeTheReaperRuns() async throws {
        let store = try await freshStore()
        let (job, _) = try await store.createJob(newJob())
        _ = try await store.claim(workerID: "w", limit: 1, leaseMs: 1)
        try await Task.sleep(for: .milliseconds(50))
        // No reaper has run: the job is still `processing` under w's name, but the lease is gone.
        #expect(try await store.job(id: job.id)!.status == .processing)
        #expect(try await store.heldJobIDs(workerID: "w").isEmpty)
        await #expect(throws: ReelError.self) {
            try await store.apply(StateChange(status: .scriptReady, stage: .scriptExpansion, progress: 25, message: "late",
                                              requireWorker: "w"), to: job.id)
        }
        let r = JobResult(videoURL: "v.mp4", thumbnailURL: "t.jpg")
        await #expect(throws: ReelError.self) {
            try await store.finalize(jobID: job.id, workerID: "w", result: r, durationSeconds: 5)
        }
        let after = try await store.job(id: job.id)!
        #expect(after.status == .processing && after.lastEventSeq == 2)
        #expect(try await store.scalar("SELECT count(*) FROM segments WHERE job_id = '\(job.id)'") == 0)
        // A live lease is renewed as before.
        #expect(try await store.requeueExpiredLeases().map(\.job.id) == [job.id])
        _ = try await store.claim(workerID: "w2", limit: 1, leaseMs: 60_000)
        #expect(try await store.workerHeartbeat(workerID: "w2", leaseMs: 60_000).lapsed == false)
        #expect(try await store.heldJobIDs(workerID: "w2") == [job.id])
    }

    @Test func scenesBelongToATenant() async throws {
        let store = try await freshStore()
        let bible = SceneBible(characters: [], locations: [], style: ["palette": "cold"], forbidden: ["dragon"])
        #expect(try await store.putSceneBible(tenantID: "acme", sceneID: "s1", bible: bible).bibleVersion == 1)
        #expect(try await store.scene(tenantID: "globex", id: "s1") == nil)
        #expect(try await store.putSceneBible(tenantID: "globex", sceneID: "s1", bible: .empty).bibleVersion == 1)
        #expect(try await store.scene(tenantID: "acme", id: "s1")?.bible == bible)
        var j = try newJob(scene: "s1")
        j.tenantID = "globex"
        let (job, _) = try await store.createJob(j)
        _ = try await store.claim(workerID: "w", limit: 1, leaseMs: 60_000)
        #expect(try await store.sceneContext(tenantID: "globex", sceneID: "s1", bibleVersion: 1, recent: 3).bible == .empty)
        for (s, st, p) in [(JobStatus.scriptReady, Stage.scriptExpansion, Int32(25)), (.continuityChecked, .continuityValidation, 35),
                           (.previewReady, .videoGeneration, 85)] {
            _ = try await store.apply(StateChange(status: s, stage: st, progress: p, message: "m", requireWorker: "w"), to: job.id)
        }
        _ = try await store.finalize(jobID: job.id, workerID: "w", result: JobResult(videoURL: "v", thumbnailURL: "t"), durationSeconds: 2)
        #expect(try await store.scene(tenantID: "globex", id: "s1")?.segmentCount == 1)
        #expect(try await store.scene(tenantID: "acme", id: "s1")?.segmentCount == 0)
        #expect(try await store.scene(tenantID: "acme", id: "s1")?.bibleVersion == 1)
    }

    @Test func eventsAreNotifiedOnlyWhileAnotherReeldIsAlive() async throws {
        let (store, url) = try await TestDatabase.freshStoreAndURL()
        let heard = Mutex<[String]>([])
        let listener = EventListener(url: url, logger: Logger(label: "test")) { e in heard.withLock { $0.append(e.jobID) } }
        listener.start()
        defer { listener.stop() }
        #expect(try await store.touchInstance(id: "reeld-a") == 1)
        try await Task.sleep(for: .milliseconds(500))  // LISTEN is in place
        let alone = try await store.createJob(newJob(text: "alone")).job
        try await Task.sleep(for: .milliseconds(700))
        #expect(heard.withLock { $0 }.isEmpty, "one reeld: nobody else needs the NOTIFY, so none is sent")
        #expect(try await store.touchInstance(id: "reeld-b") == 2)
        let shared = try await store.createJob(newJob(text: "shared")).job
        let deadline = ContinuousClock.now + .seconds(5)
        while heard.withLock({ !$0.contains(shared.id) }) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(heard.withLock { $0 } == [shared.id], "two reeld: the event reaches the other's listener")
        #expect(!heard.withLock { $0 }.contains(alone.id))
        await store.removeInstance(id: "reeld-b")
        #expect(try await store.touchInstance(id: "reeld-a") == 1)
    }

    @Test func finalizeIsIdempotent() async throws {
        let store = try await freshStore()
        let (job, _) = try await store.createJob(newJob())
        _ = try await store.claim(workerID: "w", limit: 1, leaseMs: 60_000)
        for (s, st, p) in [(JobStatus.scriptReady, Stage.scriptExpansion, Int32(25)), (.continuityChecked, .continuityValidation, 35),
                           (.previewReady, .videoGeneration, 85)] {
            _ = try await store.apply(StateChange(status: s, stage: st, progress: p, message: "m", requireWorker: "w"), to: job.id)
        }
        let r = JobResult(videoURL: "v.mp4", thumbnailURL: "t.jpg")
        let first = try await store.finalize(jobID: job.id, workerID: "w", result: r, durationSeconds: 5)
        #expect(first?.job.status == .finalReady && first?.job.progress == 100)
        #expect(first?.job.result?.segmentID.isEmpty == false)
        #expect(first?.job.result?.updatedBibleVersion == 2)
        #expect(first?.job.completedAtUnixMs ?? 0 > 0)
        #expect(try await store.finalize(jobID: job.id, workerID: "w", result: r, durationSeconds: 5) == nil)
        #expect(try await count(store, "SELECT count(*) FROM segments") == 1)
        #expect(try await count(store, "SELECT segment_count FROM scenes WHERE id = 's1'") == 1)
    }

    @Test func listIsNewestFirstAndPagesCoverEverythingOnce() async throws {
        let store = try await freshStore()
        var ids: [String] = []
        for i in 0..<7 { ids.append(try await store.createJob(newJob(user: "lister", text: "t\(i)")).job.id) }
        _ = try await store.createJob(newJob(user: "someone-else"))
        var seen: [Job] = []
        var token = ""
        repeat {
            let page = try await store.listJobs(ListJobsInput(userID: "lister", pageToken: token), pageSize: 3)
            #expect(page.jobs.count <= 3)
            seen += page.jobs
            token = page.nextPageToken
        } while !token.isEmpty
        #expect(seen.map(\.id).sorted() == ids.sorted())
        #expect(zip(seen, seen.dropFirst()).allSatisfy { $0.createdAtUnixMs >= $1.createdAtUnixMs })
        let queued = try await store.listJobs(ListJobsInput(status: .queued), pageSize: 50)
        #expect(queued.jobs.count == 8)
        #expect(try await store.listJobs(ListJobsInput(deadLetteredOnly: true), pageSize: 50).jobs.isEmpty)
        await #expect(throws: ReelError.self) {
            _ = try await store.listJobs(ListJobsInput(pageToken: "garbage"), pageSize: 5)
        }
    }

    @Test func cancelIsTerminal() async throws {
        let store = try await freshStore()
        let (job, _) = try await store.createJob(newJob())
        let (c, e) = try await store.apply(StateChange(status: .cancelled, stage: .pending, progress: 0, message: "cancelled"), to: job.id)
        #expect(c.status == .cancelled && e.seq == 2 && c.completedAtUnixMs > 0)
        #expect(try await store.claim(workerID: "w", limit: 5, leaseMs: 1000).isEmpty)
        await #expect(throws: ReelError.self) {
            _ = try await store.apply(StateChange(status: .queued, stage: .pending, progress: 0, message: "x"), to: job.id)
        }
    }
}
