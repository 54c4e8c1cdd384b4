import Testing
import Foundation
import ReelCore
@testable import ReelStore
import ReelTestSupport

/// Issue #17 items 3 and 5 at the store: the claim's fair share by cost across tenants and
/// users, and delayed jobs kept out of the ready indexes until the scheduler promotes them.
@Suite(.enabled(if: baseURL != nil, "needs REEL_TEST_DATABASE_URL"), .serialized)
struct FairShareTests {
    static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// `n` jobs of one tenant's user, each expected to cost `cost`, created in one batch.
    static func jobs(_ n: Int, tenant: String, user: String, cost: Double, runAt: Int64 = 0, tag: String = "") throws -> [NewJob] {
        try (0..<n).map { i in
            var j = try CreateJobInput(userID: user, sceneID: "s", type: .continuation, inputText: "\(tenant)/\(user)/\(tag)\(i)")
                .validated()
            j.tenantID = tenant; j.expectedCostUnits = cost; j.runAtUnixMs = runAt
            return j
        }
    }

    /// Claims `rounds` times `limit` jobs (one claimer) and answers units claimed per key.
    static func claimUnits(_ store: PostgresJobStore, rounds: Int, limit: Int = 1, worker: String = "w",
                           key: (Job) -> String) async throws -> [String: Double] {
        var units: [String: Double] = [:]
        let costs = try await costByJob(store)
        for _ in 0..<rounds {
            for (job, _) in try await store.claim(workerID: worker, limit: limit, leaseMs: 60_000) {
                units[key(job), default: 0] += costs[job.id] ?? 0
            }
        }
        return units
    }

    static func costByJob(_ store: PostgresJobStore) async throws -> [String: Double] {
        try await store.pool.withConnection { c in
            Dictionary(uniqueKeysWithValues: try c.query("SELECT id::text, expected_cost_units FROM jobs", []).rows.map {
                ($0[0]!, Double($0[1]!)!)
            })
        }
    }

    static func setWeight(_ store: PostgresJobStore, _ tenant: String, _ w: Double) async throws {
        _ = try await store.pool.withConnection { c in
            try c.query("INSERT INTO tenants (tenant_id, weight) VALUES ($1, $2::float8) ON CONFLICT (tenant_id) DO UPDATE SET weight = EXCLUDED.weight",
                        [tenant, String(w)])
        }
    }

    @Test func equalWeightsShareUnitsNotJobs() async throws {
        let store = try await freshStore()
        // Tenant "big" floods 2-unit jobs first; tenant "small" then queues 1-unit jobs.
        _ = try await store.createJobs(try Self.jobs(60, tenant: "big", user: "b", cost: 2))
        _ = try await store.createJobs(try Self.jobs(120, tenant: "small", user: "s", cost: 1))
        let units = try await Self.claimUnits(store, rounds: 60) { "\($0.userID)" }
        let big = units["b"] ?? 0, small = units["s"] ?? 0
        #expect(abs(big - small) <= 2, "units claimed: big \(big), small \(small)")
        #expect(big + small >= 78, "60 claims of 1 or 2 units, about 80 when shared equally: \(units)")
    }

    @Test func weightsTwoToOneShareUnitsTwoToOne() async throws {
        let store = try await freshStore()
        try await Self.setWeight(store, "heavy", 2)
        _ = try await store.createJobs(try Self.jobs(100, tenant: "heavy", user: "h", cost: 1))
        _ = try await store.createJobs(try Self.jobs(100, tenant: "light", user: "l", cost: 2))
        // Batches of 3, as free slots come: the batch itself is ordered fairly too.
        let units = try await Self.claimUnits(store, rounds: 30, limit: 3) { $0.userID }
        let heavy = units["h"] ?? 0, light = units["l"] ?? 0
        #expect(abs(heavy - 2 * light) <= 4, "units claimed: heavy \(heavy), light \(light)")
        #expect(heavy + light >= 90)
    }

    @Test func usersOfOneTenantShareItsUnitsByCost() async throws {
        let store = try await freshStore()
        _ = try await store.createJobs(try Self.jobs(40, tenant: "t", user: "pricey", cost: 4))
        _ = try await store.createJobs(try Self.jobs(80, tenant: "t", user: "cheap", cost: 1))
        _ = try await store.createJobs(try Self.jobs(80, tenant: "u", user: "other", cost: 1))
        let units = try await Self.claimUnits(store, rounds: 60) { $0.userID }
        let pricey = units["pricey"] ?? 0, cheap = units["cheap"] ?? 0, other = units["other"] ?? 0
        #expect(abs(pricey - cheap) <= 4, "within tenant t: \(units)")
        #expect(abs((pricey + cheap) - other) <= 4, "tenant t against tenant u: \(units)")
    }

    @Test func severalClaimersAtOnceStayFair() async throws {
        let store = try await freshStore()
        _ = try await store.createJobs(try Self.jobs(100, tenant: "x", user: "x", cost: 2))
        _ = try await store.createJobs(try Self.jobs(200, tenant: "y", user: "y", cost: 1))
        let costs = try await Self.costByJob(store)
        let claimed = try await withThrowingTaskGroup(of: [Job].self) { g in
            for w in 0..<4 {
                g.addTask {
                    var mine: [Job] = []
                    for _ in 0..<20 { mine += try await store.claim(workerID: "w\(w)", limit: 1, leaseMs: 60_000).map(\.job) }
                    return mine
                }
            }
            return try await g.reduce(into: [Job]()) { $0 += $1 }
        }
        #expect(claimed.count == 80 && Set(claimed.map(\.id)).count == 80)
        let x = claimed.filter { $0.userID == "x" }.reduce(0) { $0 + costs[$1.id]! }
        let y = claimed.filter { $0.userID == "y" }.reduce(0) { $0 + costs[$1.id]! }
        #expect(abs(x - y) <= 6, "four claimers: x \(x), y \(y)")
        // Each claimer keeps rows of its own, so they never wait on one another's.
        #expect(try await count(store, "SELECT count(DISTINCT claimer) FROM fair_usage") == 4)
    }

    /// Scarce provider slots (one, here) go in fair-share order among the jobs waiting for one,
    /// not to whichever asks first: the flood's jobs always ask first, yet the units that get a
    /// slot share out equally. The usage charged at claim for jobs still waiting is taken out
    /// (both tenants' whole backlogs were claimed, neither has run anything).
    @Test func scarceProviderSlotsGoInFairShareOrder() async throws {
        let store = try await freshStore()
        _ = try await store.createJobs(try Self.jobs(12, tenant: "flood", user: "f", cost: 2))
        _ = try await store.createJobs(try Self.jobs(12, tenant: "cheap", user: "c", cost: 1))
        let claimed = try await store.claim(workerID: "w", limit: 24, leaseMs: 60_000).map(\.job)
        #expect(claimed.count == 24)
        let order = claimed.sorted { ($0.userID, $0.id) > ($1.userID, $1.id) }  // "f" before "c"
        let costs = try await Self.costByJob(store)
        func record(_ job: Job) -> ProviderTaskRecord {
            ProviderTaskRecord(provider: "kling", jobID: job.id, attempt: 1, externalTaskID: "reel-\(job.id)-1",
                               kind: "text2video", callbackToken: UUID().uuidString)
        }
        var units: [String: Double] = [:]
        var done = Set<String>()
        for _ in 0..<14 {
            var granted: [Job] = []
            for job in order where !done.contains(job.id) {
                if try await store.acquireProviderSlot(record(job), cap: 1) { granted.append(job) }
            }
            #expect(granted.count == 1, "one slot, one job at a time: \(granted.map(\.userID))")
            for job in granted {
                units[job.userID, default: 0] += costs[job.id] ?? 0
                done.insert(job.id)
                try await store.endProviderTask(jobID: job.id, attempt: 1, status: "succeed")
            }
        }
        let f = units["f"] ?? 0, c = units["c"] ?? 0
        #expect(abs(f - c) <= 2, "units given a slot: flood \(f), cheap \(c)")
        #expect(try await count(store, "SELECT count(*) FROM provider_slot_waiters") == 24 - 14)
        // A job that stops waiting leaves the line at once.
        let left = try #require(order.first { !done.contains($0.id) })
        try await store.leaveProviderSlotQueue(provider: "kling", jobID: left.id)
        #expect(try await count(store, "SELECT count(*) FROM provider_slot_waiters") == 24 - 15)
    }

    /// A change holding a job's row (a CancelJob locks the job, then its queue row) makes the
    /// claim skip that job, never wait for it while holding the queue row: the two took their
    /// locks in opposite orders and once deadlocked (seen as UNAVAILABLE).
    @Test func theClaimSkipsAJobWhoseRowAChangeHolds() async throws {
        let (store, url) = try await TestDatabase.freshStoreAndURL()
        let made = try await store.createJobs(try Self.jobs(2, tenant: "t", user: "u", cost: 1))
        let held = try made[0].get().job.id, free = try made[1].get().job.id
        let other = try PGConnection(url: url)
        _ = try other.exec("BEGIN")
        _ = try other.query("SELECT 1 FROM jobs WHERE id = $1::uuid FOR UPDATE", [held])
        let started = ContinuousClock.now
        let first = try await store.claim(workerID: "w", limit: 2, leaseMs: 60_000).map(\.job.id)
        #expect(first == [free], "the held job is skipped: \(first)")
        #expect(ContinuousClock.now - started < .seconds(5), "the claim did not wait for the held row")
        _ = try other.exec("ROLLBACK")
        #expect(try await store.claim(workerID: "w", limit: 2, leaseMs: 60_000).map(\.job.id) == [held])
    }

    @Test func pastUsageDecaysWithTheHalfLife() async throws {
        let store = try await freshStore()
        _ = try await store.createJobs(try Self.jobs(3, tenant: "old", user: "o", cost: 1))
        _ = try await store.createJobs(try Self.jobs(3, tenant: "new", user: "n", cost: 1))
        // "old" spent 1,000 units 4 hours ago (24 half-lives of 600 s: nothing left); "new" 5 units just now.
        _ = try await store.scalar("""
            INSERT INTO fair_usage (tenant_id, user_id, claimer, units, at) VALUES
              ('old', '', 'gone', 1000, now() - interval '4 hours'), ('old', 'o', 'gone', 1000, now() - interval '4 hours'),
              ('new', '', 'gone', 5, now()), ('new', 'n', 'gone', 5, now())
            RETURNING 1
            """)
        let first = try await store.claim(workerID: "w", limit: 3, leaseMs: 60_000).map(\.job.userID)
        #expect(first == ["o", "o", "o"], "the old spend is forgotten; the fresh one counts: \(first)")
        // A fresh spend is not forgotten: "old" just took 3 units, "new" has 5 still.
        _ = try await store.createJobs(try Self.jobs(3, tenant: "old", user: "o", cost: 1, tag: "more"))
        let next = try await store.claim(workerID: "w", limit: 1, leaseMs: 60_000).map(\.job.userID)
        #expect(next == ["o"])
        _ = try await store.scalar("UPDATE fair_usage SET units = 100 WHERE tenant_id = 'old' AND claimer = 'w' RETURNING 1")
        #expect(try await store.claim(workerID: "w", limit: 1, leaseMs: 60_000).map(\.job.userID) == ["n"])
    }

    @Test func delayedJobWaitsOutsideTheReadyQueueUntilPromoted() async throws {
        let store = try await freshStore()
        let runAt = Self.nowMs() + 1500
        let created = try await store.createJobs(try Self.jobs(1, tenant: "", user: "later", cost: 1, runAt: runAt))
        let job = try created[0].get().job
        #expect(job.status == .queued && job.runAtUnixMs == runAt, "the create answers its run time")
        #expect(try await store.job(id: job.id)?.runAtUnixMs == runAt)
        #expect(try await store.listJobs(ListJobsInput(), pageSize: 10).jobs.first?.runAtUnixMs == runAt)
        #expect(try await count(store, "SELECT count(*) FROM job_queue WHERE waiting") == 1)
        #expect(try await store.claim(workerID: "w", limit: 5, leaseMs: 60_000).isEmpty, "not before its time")
        let early = try await store.promoteDueJobs(limit: 100)
        #expect(early.promoted == 0)
        #expect((1...1500).contains(early.nextDueInMs ?? -1), "next due in \(String(describing: early.nextDueInMs)) ms")
        // Even promoted by hand, the claim itself refuses a row whose time has not come.
        _ = try await store.scalar("UPDATE job_queue SET waiting = false RETURNING 1")
        #expect(try await store.claim(workerID: "w", limit: 5, leaseMs: 60_000).isEmpty)
        _ = try await store.scalar("UPDATE job_queue SET waiting = true RETURNING 1")

        try await Task.sleep(for: .milliseconds(max(0, runAt - Self.nowMs()) + 20))
        let due = try await store.promoteDueJobs(limit: 100)
        #expect(due.promoted == 1 && due.nextDueInMs == nil)
        let claimed = try await store.claim(workerID: "w", limit: 5, leaseMs: 60_000).map(\.job)
        #expect(claimed.map(\.id) == [job.id])
        #expect(claimed.first.map { $0.startedAtUnixMs >= runAt } == true, "started at or after its run time")
    }

    @Test func aRetryBackingOffWaitsToo() async throws {
        let store = try await freshStore()
        let job = try await store.createJobs(try Self.jobs(1, tenant: "", user: "r", cost: 1))[0].get().job
        _ = try await store.claim(workerID: "w", limit: 1, leaseMs: 60_000)
        _ = try await store.apply(StateChange(status: .failed, stage: .error, progress: nil, message: "boom",
                                              requireWorker: "w"), to: job.id)
        _ = try await store.apply(StateChange(status: .queued, stage: .pending, progress: 0, message: "retry",
                                              retryCount: 1, runAfterMs: 60_000), to: job.id)
        #expect(try await count(store, "SELECT count(*) FROM job_queue WHERE waiting") == 1)
        #expect(try await store.claim(workerID: "w", limit: 1, leaseMs: 60_000).isEmpty)
    }

    /// The claim's scans over `job_queue` don't walk waiting rows: with 5,000 jobs due in an hour
    /// and one ready job, EXPLAIN ANALYZE of the claim touches a handful of queue rows.
    @Test func claimIsIndexServedPast5000FutureJobs() async throws {
        let store = try await freshStore()
        let later = Self.nowMs() + 3_600_000
        for b in 0..<5 {
            _ = try await store.createJobs(try Self.jobs(1000, tenant: "t\(b % 2)", user: "u\(b)", cost: 1, runAt: later))
        }
        let ready = try await store.createJobs(try Self.jobs(1, tenant: "t0", user: "now", cost: 1))[0].get().job
        _ = try await store.scalar("ANALYZE job_queue; SELECT 1")
        let plan = try await store.pool.withConnection { c in
            try c.query("EXPLAIN (ANALYZE, FORMAT JSON) " + SQL.claim, ["w", "4", "60000", "48", nil, "600"]).rows[0][0]!
        }
        let root = try #require(try JSONSerialization.jsonObject(with: Data(plan.utf8)) as? [[String: Any]])
        var queueRows = 0.0, removed = 0.0, seqScans: [String] = []
        func walk(_ n: [String: Any]) {
            if (n["Relation Name"] as? String) == "job_queue" {
                let loops = (n["Actual Loops"] as? Double) ?? 1
                queueRows += ((n["Actual Rows"] as? Double) ?? 0) * loops
                removed += ((n["Rows Removed by Filter"] as? Double) ?? 0) * loops
                if (n["Node Type"] as? String) == "Seq Scan" { seqScans.append(n["Alias"] as? String ?? "?") }
            }
            for child in (n["Plans"] as? [[String: Any]]) ?? [] { walk(child) }
        }
        walk(try #require(root.first?["Plan"] as? [String: Any]))
        #expect(seqScans.isEmpty, "sequential scans of job_queue: \(seqScans)\n\(plan)")
        #expect(queueRows + removed < 50, "queue rows read \(queueRows), filtered out \(removed)\n\(plan)")
        #expect(try await count(store, "SELECT count(*) FROM job_queue WHERE worker_id = 'w'") == 1)
        #expect(try await store.job(id: ready.id)?.status == .processing)
    }
}
