import Testing
import ReelCore
@testable import ReelPipeline

@Suite struct SimulatedProviderTests {
    @Test func finishesAfterTheConfiguredPollsAndIsDeterministic() async throws {
        let p = SimulatedProvider(pollsToFinish: 3)
        let id = try await p.submit(prompt: "x", config: JobConfig(), jobID: "j")
        #expect(id == (try await p.submit(prompt: "x", config: JobConfig(), jobID: "j")))
        var cur = id
        var states: [ProviderStatus.State] = []
        for _ in 0..<3 {
            let s = try await p.poll(providerJobID: cur)
            states.append(s.state)
            cur = SimulatedProvider.advance(cur)
        }
        #expect(states == [.running, .running, .succeeded])
    }

    @Test func failingModelFailsEveryPoll() async throws {
        let p = SimulatedProvider()
        let id = try await p.submit(prompt: "x", config: JobConfig(model: SimulatedProvider.failingModel), jobID: "j")
        if case .failed = try await p.poll(providerJobID: id).state {} else { Issue.record("expected a failure") }
    }
}
