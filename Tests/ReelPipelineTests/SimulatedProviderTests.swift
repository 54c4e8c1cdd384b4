import Testing
import ReelCore
@testable import ReelPipeline

@Suite struct SimulatedProviderTests {
    @Test func finishesAfterTheConfiguredPollsAndIsDeterministic() async throws {
        let p = SimulatedProvider(pollsToFinish: 3)
        let r = GenerationRequest(prompt: "x", config: JobConfig(), externalTaskID: "reel-j-1")
        let id = try await p.submit(r).taskID
        #expect(id == (try await p.submit(r).taskID))
        var states: [ProviderTask.State] = []
        var progress: [Int32?] = []
        for _ in 0..<3 {
            let s = try await p.query(taskID: id, kind: "")
            states.append(s.state)
            progress.append(s.progress)
        }
        #expect(states == [.processing, .processing, .succeeded])
        #expect(progress == [33, 66, 100])
        #expect(p.pollCount(id) == 0, "a finished task is forgotten")
    }

    @Test func failingModelFailsEveryPoll() async throws {
        let p = SimulatedProvider()
        let id = try await p.submit(GenerationRequest(prompt: "x", config: JobConfig(model: SimulatedProvider.failingModel),
                                                      externalTaskID: "reel-j-1")).taskID
        if case .failed = try await p.query(taskID: id, kind: "").state {} else { Issue.record("expected a failure") }
    }
}
