import Testing
import Foundation
import Logging
import Synchronization
import ReelCore
import ReelStore
import ReelScheduler
import ReelPipeline
import ReelTestSupport

/// A provider that records what it was asked and answers as told.
final class ScriptedProvider: VideoProvider {
    let name = "scripted"
    let isRemote = false
    /// Polls a generation answers `.processing` before it succeeds (Int.max: never).
    let pollsBeforeDone: Int
    private let state = Mutex<(submits: [String], polls: [String: Int], cancels: [String])>(([], [:], []))

    init(pollsBeforeDone: Int) { self.pollsBeforeDone = pollsBeforeDone }

    /// Records the job id (from the attempt's external id `reel-<job id>-<attempt>`).
    func submit(_ request: GenerationRequest) async throws -> ProviderTask {
        let jobID = String(request.externalTaskID.dropFirst("reel-".count).dropLast(2))
        state.withLock { $0.submits.append(jobID) }
        return ProviderTask(taskID: "task-\(jobID)", externalTaskID: request.externalTaskID, state: .submitted)
    }

    func query(taskID: String, kind: String) async throws -> ProviderTask {
        let n = state.withLock { s -> Int in s.polls[taskID, default: 0] += 1; return s.polls[taskID]! }
        if n > pollsBeforeDone {
            return ProviderTask(taskID: taskID, state: .succeeded, progress: 100, videoURL: "http://x/\(taskID).mp4", durationSeconds: 2)
        }
        return ProviderTask(taskID: taskID, state: .processing, progress: Int32(min(n * 10, 99)))
    }

    func cancel(taskID: String, kind: String) async { state.withLock { $0.cancels.append(taskID) } }

    var submits: [String] { state.withLock { $0.submits } }
    var cancels: [String] { state.withLock { $0.cancels } }
}

func waitUntil(_ seconds: Double = 15, _ check: () async throws -> Bool) async throws -> Bool {
    let until = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < until {
        if try await check() { return true }
        try await Task.sleep(for: .milliseconds(25))
    }
    return false
}

struct Harness {
    let store: PostgresJobStore
    let hub = JobEventHub()
    let scheduler: Scheduler

    init(store: PostgresJobStore, provider: any VideoProvider, workers: Int, config: Pipeline.Config) {
        self.store = store
        let hub = self.hub
        let pipeline = Pipeline(store: store, provider: provider, config: config, workerID: "test-w",
                                logger: Logger(label: "test"), publish: { hub.publish($0) })
        scheduler = Scheduler(store: store, hub: hub,
                              config: .init(workers: workers, workerID: "test-w", leaseMs: 10_000, pollInterval: .milliseconds(20)),
                              logger: Logger(label: "test")) { job, slot in await pipeline.run(job, slot: slot) }
    }
}

@Suite(.enabled(if: hasDB, "needs REEL_TEST_DATABASE_URL"), .serialized)
struct PipelineFaultTests {
    @Test func stuckProviderTimesOutAndIsRetriedThenDeadLettered() async throws {
        let store = try await TestDatabase.freshStore()
        let provider = ScriptedProvider(pollsBeforeDone: .max)
        let h = Harness(store: store, provider: provider, workers: 1,
                        config: .init(stageDelay: .zero, retry: RetryPolicy(baseMs: 10), videoTimeout: .milliseconds(300),
                                      pollInterval: .milliseconds(20)))
        let job = try await store.createJob(try CreateJobInput(userID: "u", sceneID: "s", type: .continuation,
                                                               inputText: "stuck", maxRetries: 1).validated()).job
        await h.scheduler.start()
        #expect(try await waitUntil { try await store.job(id: job.id)!.deadLettered })
        await h.scheduler.shutdown()
        let j = try #require(try await store.job(id: job.id))
        #expect(j.status == .failed && j.error?.code == "STAGE_TIMEOUT" && j.error?.stage == .videoGeneration)
        #expect(j.retryCount == 1, "timed out once, retried once")
        #expect(provider.submits == [job.id], "the retry polled the same provider job; never submitted twice")
    }

    @Test func waitingAtTheProviderFreesTheWorkerSlot() async throws {
        let store = try await TestDatabase.freshStore()
        let provider = ScriptedProvider(pollsBeforeDone: 15)
        let h = Harness(store: store, provider: provider, workers: 1,
                        config: .init(stageDelay: .zero, pollInterval: .milliseconds(40), parkWhileGenerating: true))
        let a = try await store.createJob(try CreateJobInput(userID: "u1", sceneID: "s", type: .continuation, inputText: "a").validated()).job
        let b = try await store.createJob(try CreateJobInput(userID: "u2", sceneID: "s", type: .continuation, inputText: "b").validated()).job
        await h.scheduler.start()
        // With one worker, both generations are at the provider at once: the first parked its slot.
        #expect(try await waitUntil(10) { provider.submits.count == 2 })
        #expect(try await store.job(id: a.id)!.status != .finalReady)
        #expect(try await waitUntil(20) {
            let (ja, jb) = (try await store.job(id: a.id)!, try await store.job(id: b.id)!)
            return ja.status == .finalReady && jb.status == .finalReady
        })
        await h.scheduler.shutdown()
    }

    @Test func cancellingARunningJobStopsItAndCancelsTheProviderJob() async throws {
        let store = try await TestDatabase.freshStore()
        let provider = ScriptedProvider(pollsBeforeDone: .max)
        let h = Harness(store: store, provider: provider, workers: 1,
                        config: .init(stageDelay: .zero, pollInterval: .milliseconds(30)))
        let job = try await store.createJob(try CreateJobInput(userID: "u", sceneID: "s", type: .continuation, inputText: "c").validated()).job
        await h.scheduler.start()
        #expect(try await waitUntil { try await store.job(id: job.id)!.stage == .videoGeneration })
        let cur = try #require(try await store.job(id: job.id))
        let (cancelled, _) = try await store.apply(StateChange(status: .cancelled, stage: cur.stage, progress: cur.progress,
                                                              message: "cancelled"), to: job.id)
        await h.scheduler.cancelLocal(jobID: job.id)
        #expect(try await waitUntil { provider.cancels == ["task-\(job.id)"] })
        try await Task.sleep(for: .milliseconds(200))
        #expect(try await store.job(id: job.id)!.lastEventSeq == cancelled.lastEventSeq, "nothing written after CANCELLED")
        #expect(await h.scheduler.runningCount == 0)
        await h.scheduler.shutdown()
    }

    @Test func continuityViolationFailsWithoutRetry() async throws {
        let store = try await TestDatabase.freshStore()
        _ = try await store.putSceneBible(sceneID: "keep", bible: SceneBible(
            characters: [.init(name: "Mara", aliases: ["the keeper"], description: "lighthouse keeper, 60s")],
            locations: [.init(name: "North Light", aliases: ["the lighthouse"])],
            style: ["palette": "cold blue"], forbidden: ["dragon"]))
        let provider = ScriptedProvider(pollsBeforeDone: 1)
        let h = Harness(store: store, provider: provider, workers: 2, config: .init(stageDelay: .zero, pollInterval: .milliseconds(5)))
        let bad = try await store.createJob(try CreateJobInput(userID: "u", sceneID: "keep", type: .continuation,
                                                               inputText: "A dragon lands on the lighthouse").validated()).job
        let good = try await store.createJob(try CreateJobInput(
            userID: "u", sceneID: "keep", type: .continuation, inputText: "the keeper climbs to the lighthouse lamp",
            config: JobConfig(styleOverrides: ["palette": "warm red"])).validated()).job
        await h.scheduler.start()
        #expect(try await waitUntil {
            let (b, g) = (try await store.job(id: bad.id)!, try await store.job(id: good.id)!)
            return b.deadLettered && g.status == .finalReady
        })
        await h.scheduler.shutdown()
        let b = try #require(try await store.job(id: bad.id))
        #expect(b.error?.code == "CONTINUITY_VIOLATION" && b.retryCount == 0 && b.error?.stage == .continuityValidation)
        #expect(!provider.submits.contains(bad.id), "a violating script is never paid for")
        let g = try #require(try await store.job(id: good.id))
        #expect(g.bibleVersion == 1)
        #expect(g.artifacts.expandedScript.contains("CHARACTER Mara: lighthouse keeper, 60s"))
        #expect(g.artifacts.expandedScript.contains("ACTION: Mara climbs to North Light lamp"), "aliases corrected")
        #expect(g.artifacts.expandedScript.contains("STYLE palette: cold blue"))
        #expect(g.artifacts.validationResult.contains("\"valid\":true"))
        #expect(g.artifacts.validationResult.contains("style palette kept as the bible's"))
        #expect(g.result?.updatedBibleVersion == 2)
        let scene = try #require(try await store.scene(id: "keep"))
        #expect(scene.segmentCount == 1 && scene.bibleVersion == 2)
        #expect(scene.bible.forbidden == ["dragon"])
    }
}
