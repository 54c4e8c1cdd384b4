import Testing
import Foundation
import ReelCore
import ReelStore
import ReelTestSupport

/// The account's task slots (DESIGN §5): decided by the database, so the cap holds however
/// many reeld share it.
@Suite(.enabled(if: TestDatabase.baseURL != nil, "needs REEL_TEST_DATABASE_URL"), .serialized)
struct ProviderTaskStoreTests {
    func newJob(_ store: PostgresJobStore, _ n: Int) async throws -> Job {
        try await store.createJob(try CreateJobInput(userID: "u\(n)", sceneID: "s", type: .sceneCreation,
                                                     inputText: "job \(n)").validated()).job
    }

    func record(_ job: Job, attempt: Int32 = 1) -> ProviderTaskRecord {
        ProviderTaskRecord(provider: "kling", jobID: job.id, attempt: attempt,
                           externalTaskID: ProviderTaskRecord.externalID(jobID: job.id, attempt: attempt),
                           kind: "text2video", callbackToken: UUID().uuidString + UUID().uuidString)
    }

    @Test func concurrentAcquiresFromTwoStoresNeverPassTheCap() async throws {
        let (a, url) = try await TestDatabase.freshStoreAndURL()
        let b = try PostgresJobStore(url: url, poolSize: 4, logger: .init(label: "test"))
        var jobs: [Job] = []
        for n in 0..<20 { jobs.append(try await newJob(a, n)) }
        let granted = try await withThrowingTaskGroup(of: Bool.self) { group in
            for (i, job) in jobs.enumerated() {
                let store = i % 2 == 0 ? a : b
                let r = record(job)
                group.addTask { try await store.acquireProviderSlot(r, cap: 3) }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(granted == 3)
        #expect(try await a.liveProviderTasks(provider: "kling") == 3)
        #expect(try await a.liveProviderTasks(provider: "runway") == 0, "each provider counts its own")
        b.close()
    }

    @Test func aSlotIsHeldOnceAndFreedWhenTheTaskEndsOrTheSubmitIsThrottled() async throws {
        let store = try await TestDatabase.freshStore()
        let (j1, j2) = (try await newJob(store, 1), try await newJob(store, 2))
        let r1 = record(j1)
        #expect(try await store.acquireProviderSlot(r1, cap: 1))
        #expect(try await store.acquireProviderSlot(r1, cap: 1), "the attempt that holds the slot gets it again")
        #expect(try await !store.acquireProviderSlot(record(j2), cap: 1))
        try await store.releaseProviderSlot(jobID: j1.id, attempt: 1)
        #expect(try await store.acquireProviderSlot(record(j2), cap: 1))
        #expect(try await !store.acquireProviderSlot(r1, cap: 1), "re-taking a released slot counts against the cap")
        try await store.recordProviderTaskID(jobID: j2.id, attempt: 1, taskID: "900", kind: "text2video")
        let latest = try #require(try await store.latestProviderTask(jobID: j2.id))
        #expect(latest.taskID == "900" && latest.status == "submitted" && latest.live)
        #expect(try await store.providerTask(callbackToken: latest.callbackToken)?.jobID == j2.id)
        try await store.endProviderTask(jobID: j2.id, attempt: 1, status: "succeed")
        #expect(try await store.latestProviderTask(jobID: j2.id)?.live == false)
        #expect(try await store.acquireProviderSlot(r1, cap: 1))
    }

    @Test func aLoweredCapHoldsForItsTimeThenLifts() async throws {
        let store = try await TestDatabase.freshStore()
        let (j1, j2) = (try await newJob(store, 1), try await newJob(store, 2))
        #expect(try await store.acquireProviderSlot(record(j1), cap: 4))
        try await store.limitProviderCap(provider: "kling", cap: 1, holdMs: 300)
        #expect(try await !store.acquireProviderSlot(record(j2), cap: 4), "another client holds the rest")
        try await Task.sleep(for: .milliseconds(400))
        #expect(try await store.acquireProviderSlot(record(j2), cap: 4))
    }

    @Test func tasksNobodyFollowsAreTheCancelledJobsAndOlderAttempts() async throws {
        let store = try await TestDatabase.freshStore()
        let (j1, j2, j3) = (try await newJob(store, 1), try await newJob(store, 2), try await newJob(store, 3))
        for j in [j1, j2, j3] { #expect(try await store.acquireProviderSlot(record(j), cap: 10)) }
        #expect(try await store.acquireProviderSlot(record(j3, attempt: 2), cap: 10))
        _ = try await store.apply(StateChange(status: .cancelled, stage: nil, progress: nil, message: "cancelled"), to: j1.id)
        let unfollowed = try await store.unfollowedProviderTasks(provider: "kling", limit: 10)
        let keys = Set(unfollowed.map { "\($0.jobID)/\($0.attempt)" })
        #expect(keys == ["\(j1.id)/1", "\(j3.id)/1"])
    }
}
