import Testing
import Foundation
import ReelCore
import ReelStore
import ReelTestSupport

/// Tenant budgets (DESIGN §2 "Budgets"): a create's check and reservation are one step in the
/// database; a job's end settles its reservation with its real charge; periods roll over.
@Suite(.enabled(if: TestDatabase.baseURL != nil, "needs REEL_TEST_DATABASE_URL"), .serialized)
struct BudgetStoreTests {
    func new(_ tenant: String, _ n: Int, cost: Double) throws -> NewJob {
        var j = try CreateJobInput(userID: "u\(n % 3)", sceneID: "s", type: .sceneCreation, inputText: "job \(n)",
                                   idempotencyKey: "k\(n)").validated()
        j.tenantID = tenant
        j.expectedCostUnits = cost
        return j
    }

    /// Claims `job` and runs it up to preview_ready with `charge` added on the way.
    func runWithCharge(_ store: PostgresJobStore, _ job: Job, charge: Double, worker: String = "w1") async throws -> Job {
        _ = try await store.claim(workerID: worker, limit: 10, leaseMs: 60_000)
        let held = try #require(try await store.job(id: job.id))
        #expect(held.status == .processing && held.workerID == worker)
        var steps = [
            StateChange(status: .processing, stage: .scriptExpansion, progress: 5, message: "expanding"),
            StateChange(status: .scriptReady, stage: .scriptExpansion, progress: 25, message: "expanded"),
            StateChange(status: .continuityChecked, stage: .continuityValidation, progress: 35, message: "checked"),
            StateChange(status: .continuityChecked, stage: .videoGeneration, progress: 40, message: "submitted"),
            StateChange(status: .previewReady, stage: .videoGeneration, progress: 85, message: "preview"),
        ]
        for i in steps.indices { steps[i].requireWorker = worker; steps[i].requireFence = held.fence }
        steps[3].provider = "simulated"
        steps[3].chargeUnits = charge
        let out = try await store.apply(steps, to: job.id)
        return try out.last!.get().job
    }

    @Test func aTenantWithoutABudgetIsUnlimitedAndABudgetCanBeSetAndRemoved() async throws {
        let store = try await TestDatabase.freshStore()
        let none = try await store.budget(tenantID: "acme")
        #expect(none.limitUnits == 0 && none.spentUnits == 0 && none.reservedUnits == 0)
        #expect(none.periodSeconds == TenantBudget.defaultPeriodSeconds)
        let set = try await store.setBudget(tenantID: "acme", limitUnits: 10, periodSeconds: 3600)
        #expect(set.limitUnits == 10 && set.periodSeconds == 3600 && set.periodStartUnixMs > 0)
        let removed = try await store.setBudget(tenantID: "acme", limitUnits: 0, periodSeconds: 3600)
        #expect(removed.limitUnits == 0)
        #expect(removed.periodStartUnixMs == set.periodStartUnixMs, "the period goes on")
        // Without a limit nothing is refused.
        let results = try await store.createJobs((0..<5).map { try new("acme", $0, cost: 100) })
        #expect(results.allSatisfy { (try? $0.get()) != nil })
    }

    @Test func itemsThatFitAreAcceptedInOrderAndTheOthersFailAloneNamingTheBudget() async throws {
        let store = try await TestDatabase.freshStore()
        _ = try await store.setBudget(tenantID: "acme", limitUnits: 5, periodSeconds: 0)
        let results = try await store.createJobs([
            try new("acme", 0, cost: 2), try new("acme", 1, cost: 2), try new("acme", 2, cost: 2),
            try new("acme", 3, cost: 1), try new("other", 4, cost: 50),
        ])
        #expect((try? results[0].get()) != nil && (try? results[1].get()) != nil)
        guard case .failure(let why) = results[2] else { Issue.record("the third item must not fit"); return }
        #expect(why.code == .resourceExhausted)
        #expect(why.message == "tenant acme's budget of 5 units has 1 left; this job is expected to cost 2")
        #expect((try? results[3].get()) != nil, "a later item that fits is still accepted")
        #expect((try? results[4].get()) != nil, "another tenant has no budget")
        let b = try await store.budget(tenantID: "acme")
        #expect(b.reservedUnits == 5 && b.spentUnits == 0)
        // The same keys again: the jobs that exist are answered and take no more room.
        let again = try await store.createJobs([try new("acme", 0, cost: 2), try new("acme", 3, cost: 1)])
        #expect(again.allSatisfy { (try? $0.get())?.event == nil })
        #expect(try await store.budget(tenantID: "acme").reservedUnits == 5)
        // One create alone (grouped commits) fails with the same error.
        await #expect(throws: ReelError.self) { _ = try await store.createJob(try new("acme", 9, cost: 0.5)) }
    }

    @Test func concurrentCreatesOnTwoStoresNeverOverspend() async throws {
        let (a, url) = try await TestDatabase.freshStoreAndURL()
        let b = try PostgresJobStore(url: url, poolSize: 4, logger: .init(label: "test"))
        _ = try await a.setBudget(tenantID: "acme", limitUnits: 4, periodSeconds: 0)
        let accepted = try await withThrowingTaskGroup(of: Bool.self) { group in
            for n in 0..<20 {
                let store = n % 2 == 0 ? a : b
                let job = try new("acme", n, cost: 2)
                group.addTask {
                    do { _ = try await store.createJob(job); return true } catch let e as ReelError where e.code == .resourceExhausted {
                        return false
                    }
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(accepted == 2)
        #expect(try await a.budget(tenantID: "acme").reservedUnits == 4)
        b.close()
    }

    @Test func aJobsEndSettlesItsReservationWithItsRealCharge() async throws {
        let store = try await TestDatabase.freshStore()
        _ = try await store.setBudget(tenantID: "acme", limitUnits: 10, periodSeconds: 0)
        let created = try await store.createJobs([try new("acme", 0, cost: 2), try new("acme", 1, cost: 2), try new("acme", 2, cost: 2)])
        let jobs = try created.map { try $0.get().job }
        #expect(try await store.budget(tenantID: "acme").reservedUnits == 6)

        // Finished: the charge (3, more than expected) is spent, the reservation gone.
        let ran = try await runWithCharge(store, jobs[0], charge: 3)
        #expect(ran.costUnits == 3 && ran.provider == "simulated")
        let done = try #require(try await store.finalize(jobID: jobs[0].id, workerID: "w1", fence: nil,
                                                         result: JobResult(videoURL: "v", thumbnailURL: "t"), durationSeconds: 5))
        #expect(done.job.status == .finalReady && done.job.costUnits == 3)
        var b = try await store.budget(tenantID: "acme")
        #expect(b.spentUnits == 3 && b.reservedUnits == 4)

        // Cancelled before it ran: released, nothing spent.
        _ = try await store.apply(StateChange(status: .cancelled, stage: nil, progress: nil, message: "cancelled"), to: jobs[1].id)
        b = try await store.budget(tenantID: "acme")
        #expect(b.spentUnits == 3 && b.reservedUnits == 2)

        // Failed for good after the provider charged it: the charge still counts.
        _ = try await runWithCharge(store, jobs[2], charge: 1.5)
        _ = try await store.apply(StateChange(status: .failed, stage: nil, progress: nil, message: "failed", deadLettered: true,
                                              requireWorker: "w1"), to: jobs[2].id)
        b = try await store.budget(tenantID: "acme")
        #expect(b.spentUnits == 4.5 && b.reservedUnits == 0)

        // RetryJob reserves again; it is refused once it no longer fits.
        let retry = StateChange(status: .queued, stage: .pending, progress: 0, message: "retry requested",
                                deadLettered: false, retryCount: 0, runAfterMs: 0)
        _ = try await store.apply(retry, to: jobs[2].id)
        b = try await store.budget(tenantID: "acme")
        #expect(b.reservedUnits == 2)
        _ = try await store.apply(StateChange(status: .cancelled, stage: nil, progress: nil, message: "cancelled"), to: jobs[2].id)
        b = try await store.budget(tenantID: "acme")
        #expect(b.spentUnits == 4.5 && b.reservedUnits == 0, "its earlier charge is not counted twice")

        _ = try await store.setBudget(tenantID: "acme", limitUnits: 5, periodSeconds: 0)
        let another = try #require(try await store.createJobs([try new("acme", 3, cost: 0.5)]).first).get().job
        _ = try await runWithCharge(store, another, charge: 0.5)
        _ = try await store.apply(StateChange(status: .failed, stage: nil, progress: nil, message: "failed", deadLettered: true,
                                              requireWorker: "w1"), to: another.id)
        #expect(try await store.budget(tenantID: "acme").spentUnits == 5)
        do {
            _ = try await store.apply(retry, to: another.id)
            Issue.record("a retry that does not fit must be refused")
        } catch let e as ReelError {
            #expect(e.code == .resourceExhausted)
            #expect(e.message.contains("tenant acme's budget of 5 units has 0 left"))
        }
        #expect(try await store.job(id: another.id)?.status == .failed)
    }

    @Test func aPassedPeriodRollsOverSpendingButKeepsReservations() async throws {
        let store = try await TestDatabase.freshStore()
        _ = try await store.setBudget(tenantID: "acme", limitUnits: 4, periodSeconds: 3600)
        let jobs = try await store.createJobs([try new("acme", 0, cost: 2), try new("acme", 1, cost: 2)]).map { try $0.get().job }
        _ = try await runWithCharge(store, jobs[0], charge: 2)
        _ = try await store.apply(StateChange(status: .cancelled, stage: nil, progress: nil, message: "cancelled"), to: jobs[0].id)
        let before = try await store.budget(tenantID: "acme")
        #expect(before.spentUnits == 2 && before.reservedUnits == 2)
        let full = try await store.createJobs([try new("acme", 2, cost: 1)])
        #expect((try? full[0].get()) == nil, "2 spent + 2 reserved leave no room")
        // Two and a half periods later.
        let moved = try await store.scalar("""
            WITH u AS (UPDATE tenant_budgets SET period_start = period_start - interval '9000 seconds' RETURNING 1) SELECT count(*) FROM u
            """)
        #expect(moved == 1)
        let after = try await store.budget(tenantID: "acme")
        #expect(after.spentUnits == 0 && after.reservedUnits == 2)
        #expect(after.periodStartUnixMs == before.periodStartUnixMs - 9_000_000 + 2 * 3_600_000)
        let fits = try await store.createJobs([try new("acme", 3, cost: 2)])
        #expect((try? fits[0].get()) != nil, "the new period has room again")
        #expect(try await store.budget(tenantID: "acme").reservedUnits == 4)
    }

    @Test func aProviderChargeIsRecordedOncePerAttemptAndWeighted() async throws {
        let store = try await TestDatabase.freshStore()
        let job = try await store.createJob(try new("acme", 0, cost: 2)).job
        let r = ProviderTaskRecord(provider: "kling", jobID: job.id, attempt: 1,
                                   externalTaskID: ProviderTaskRecord.externalID(jobID: job.id, attempt: 1),
                                   kind: "text2video", callbackToken: UUID().uuidString + UUID().uuidString)
        #expect(try await store.acquireProviderSlot(r, cap: 1))
        let added = try await store.endProviderTask(jobID: job.id, attempt: 1, status: "failed", charge: 2.5, weight: 2)
        #expect(added?.units == 5 && added?.tenantID == "acme")
        let again = try await store.endProviderTask(jobID: job.id, attempt: 1, status: "failed", charge: 2.5, weight: 2)
        #expect(again == nil, "an attempt is charged once")
        let stored = try #require(try await store.job(id: job.id))
        #expect(stored.costUnits == 5 && stored.provider == "kling")
        #expect(try await store.scalar("SELECT (cost_units * 10)::int FROM provider_tasks") == 25)
    }
}
