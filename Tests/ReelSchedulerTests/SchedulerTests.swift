import Testing
import Foundation
import Logging
import Synchronization
import ReelCore
import ReelStore
import ReelScheduler
import ReelPipeline
import ReelTestSupport

let hasDB = TestDatabase.baseURL != nil

func job(_ user: String, _ text: String, type: JobType = .continuation, tier: Tier = .standard) throws -> NewJob {
    try CreateJobInput(userID: user, sceneID: "scene", type: type, inputText: text, tier: tier).validated()
}

@Suite struct JobEventHubTests {
    @Test func watcherThatGoesAwayIsRemoved() async throws {
        let hub = JobEventHub()
        let stream = hub.subscribe(jobID: "j")
        #expect(hub.watcherCount == 1)
        let consumer = Task { var n = 0; for await _ in stream { n += 1 }; return n }
        hub.publish(JobEvent(jobID: "j", seq: 2, status: .processing, stage: .scriptExpansion, progress: 0, message: "", atUnixMs: 0))
        hub.publish(JobEvent(jobID: "other", seq: 2, status: .processing, stage: .scriptExpansion, progress: 0, message: "", atUnixMs: 0))
        try await Task.sleep(for: .milliseconds(50))
        consumer.cancel()
        #expect(await consumer.value == 1, "only its own job's events")
        #expect(hub.watcherCount == 0)
    }

    @Test func everyWatcherGetsEveryEventInOrder() async {
        let hub = JobEventHub()
        let streams = (0..<50).map { _ in hub.subscribe(jobID: "j") }
        for seq in 1...20 {
            hub.publish(JobEvent(jobID: "j", seq: Int64(seq), status: .processing, stage: .upload, progress: 1, message: "", atUnixMs: 0))
        }
        for s in streams {
            var seqs: [Int64] = []
            for await e in s { seqs.append(e.seq); if seqs.count == 20 { break } }
            #expect(seqs == Array(1...20))
        }
    }
}

@Suite(.enabled(if: hasDB, "needs REEL_TEST_DATABASE_URL"), .serialized)
struct SchedulerTests {
    @Test func everyJobRunsExactlyOnceAcrossWorkers() async throws {
        let store = try await TestDatabase.freshStore()
        let runs = Mutex<[String: Int]>([:])
        let hub = JobEventHub()
        let scheduler = Scheduler(store: store, hub: hub,
                                  config: .init(workers: 4, workerID: "test-w", leaseMs: 10_000, pollInterval: .milliseconds(50)),
                                  logger: Logger(label: "test")) { job, _ in
            runs.withLock { $0[job.id, default: 0] += 1 }
            try? await Task.sleep(for: .milliseconds(5))
            _ = try? await store.apply(StateChange(status: .cancelled, stage: job.stage, progress: 0, message: "done"), to: job.id)
        }
        var ids: [String] = []
        for i in 0..<30 { ids.append(try await store.createJob(job("u\(i % 3)", "t\(i)")).job.id) }
        await scheduler.start()
        let deadline = ContinuousClock.now + .seconds(30)
        while runs.withLock({ $0.count }) < 30 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        await scheduler.shutdown()
        let counts = runs.withLock { $0 }
        #expect(Set(counts.keys) == Set(ids))
        #expect(counts.values.allSatisfy { $0 == 1 })
    }

    @Test func pipelineRunsAJobToFinalReadyWithEveryStageRecorded() async throws {
        let store = try await TestDatabase.freshStore()
        let hub = JobEventHub()
        let (created, _) = try await store.createJob(job("alice", "a lighthouse at dusk", type: .sceneCreation))
        let live = hub.subscribe(jobID: created.id)
        let pipeline = Pipeline(store: store, provider: SimulatedProvider(), config: .init(stageDelay: .zero),
                                workerID: "test-w", logger: Logger(label: "test"), publish: { hub.publish($0) })
        let scheduler = Scheduler(store: store, hub: hub, config: .init(workers: 2, workerID: "test-w"),
                                  logger: Logger(label: "test")) { job, slot in await pipeline.run(job, slot: slot) }
        await scheduler.start()
        var seen: [JobEvent] = []
        for await e in live {
            seen.append(e)
            if e.endsWatch { break }
        }
        await scheduler.shutdown()
        let final = try #require(try await store.job(id: created.id))
        #expect(final.status == .finalReady && final.stage == .completed && final.progress == 100)
        #expect(final.result?.segmentID.isEmpty == false && final.result?.videoURL.isEmpty == false)
        #expect(!final.artifacts.expandedScript.isEmpty && !final.artifacts.providerJobID.isEmpty)
        #expect(!final.artifacts.thumbnailURL.isEmpty && !final.artifacts.hlsPlaylistURL.isEmpty)
        let stored = try await store.events(jobID: created.id, afterSeq: 1)
        #expect(stored.map(\.seq) == Array(2...final.lastEventSeq))
        #expect(seen.map(\.seq) == stored.map(\.seq), "live events match the stored history")
        let progress = stored.map(\.progress)
        #expect(progress == progress.sorted(), "progress never goes back on a clean run")
        for milestone: Int32 in [25, 35, 85, 95, 100] { #expect(progress.contains(milestone), "\(milestone)%") }
        #expect(Set(stored.map(\.status)).isSuperset(of: [.processing, .scriptReady, .continuityChecked, .previewReady, .finalReady]))
        #expect(try await store.scalar("SELECT count(*) FROM segments WHERE job_id = '\(created.id)'") == 1)
    }

    @Test func cancelledRunningJobWritesNothingMore() async throws {
        let store = try await TestDatabase.freshStore()
        let hub = JobEventHub()
        let (created, _) = try await store.createJob(job("bob", "slow one"))
        let pipeline = Pipeline(store: store, provider: SimulatedProvider(), config: .init(stageDelay: .milliseconds(100)),
                                workerID: "test-w", logger: Logger(label: "test"), publish: { hub.publish($0) })
        let scheduler = Scheduler(store: store, hub: hub, config: .init(workers: 1, workerID: "test-w"),
                                  logger: Logger(label: "test")) { job, slot in await pipeline.run(job, slot: slot) }
        await scheduler.start()
        var j = try #require(try await store.job(id: created.id))
        let until = ContinuousClock.now + .seconds(10)
        while !j.status.isRunning && ContinuousClock.now < until {
            try await Task.sleep(for: .milliseconds(20))
            j = try #require(try await store.job(id: created.id))
        }
        let (cancelled, _) = try await store.apply(StateChange(status: .cancelled, stage: j.stage, progress: j.progress,
                                                              message: "cancelled"), to: created.id)
        try await Task.sleep(for: .milliseconds(600))
        await scheduler.shutdown()
        let after = try #require(try await store.job(id: created.id))
        #expect(after.status == .cancelled)
        #expect(after.lastEventSeq == cancelled.lastEventSeq, "no event after CANCELLED")
        #expect(try await store.scalar("SELECT count(*) FROM segments") == 0)
    }

    @Test func failingProviderRetriesThenDeadLetters() async throws {
        struct Broken: VideoProvider {
            let name = "broken"
            let isRemote = false
            func submit(_ request: GenerationRequest) async throws -> ProviderTask { ProviderTask(taskID: "b-1", state: .submitted) }
            func query(taskID: String, kind: String) async throws -> ProviderTask {
                ProviderTask(taskID: taskID, state: .failed("provider exploded"))
            }
        }
        let store = try await TestDatabase.freshStore()
        let hub = JobEventHub()
        let new = try CreateJobInput(userID: "carol", sceneID: "s", type: .continuation, inputText: "x", maxRetries: 2).validated()
        let (created, _) = try await store.createJob(new)
        let pipeline = Pipeline(store: store, provider: Broken(), config: .init(stageDelay: .zero, retry: RetryPolicy(baseMs: 10)),
                                workerID: "test-w", logger: Logger(label: "test"), publish: { hub.publish($0) })
        let scheduler = Scheduler(store: store, hub: hub,
                                  config: .init(workers: 1, workerID: "test-w", pollInterval: .milliseconds(20)),
                                  logger: Logger(label: "test")) { job, slot in await pipeline.run(job, slot: slot) }
        await scheduler.start()
        var j = try #require(try await store.job(id: created.id))
        let until = ContinuousClock.now + .seconds(20)
        while !j.deadLettered && ContinuousClock.now < until {
            try await Task.sleep(for: .milliseconds(50))
            j = try #require(try await store.job(id: created.id))
        }
        await scheduler.shutdown()
        #expect(j.status == .failed && j.deadLettered)
        #expect(j.retryCount == 2)
        #expect(j.error?.code == "PROVIDER_FAILED")
        let events = try await store.events(jobID: created.id, afterSeq: 0)
        #expect(events.filter { $0.status == .failed }.count == 3, "three attempts failed")
        #expect(events.last?.deadLettered == true)
        let listed = try await store.listJobs(ListJobsInput(deadLetteredOnly: true), pageSize: 10)
        #expect(listed.jobs.map(\.id) == [created.id])
    }
}

@Suite struct JobEventHubBoundsTests {
    @Test func watcherThatFallsBehindIsEndedNotBufferedWithoutBound() async {
        let hub = JobEventHub(bufferLimit: 4)
        let stream = hub.subscribe(jobID: "j")
        for seq in 1...10 {
            hub.publish(JobEvent(jobID: "j", seq: Int64(seq), status: .processing, stage: .upload, progress: 1, message: "", atUnixMs: 0))
        }
        var got: [Int64] = []
        for await e in stream { got.append(e.seq) }
        #expect(got == [1, 2, 3, 4], "the buffered events, then the end")
        #expect(hub.watcherCount == 0)
    }
}
