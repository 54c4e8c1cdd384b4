import Foundation
import Testing
import ReelCore
@testable import ReelPipeline

/// The strict fake of Runway's task API (`Tests/fake_runway/fake_runway.py`) as a child process
/// on a free loopback port; one per test.
final class FakeRunwayProcess: Sendable {
    static let apiKey = "test-runway-key"
    let url: String
    private let process: ChildProcess
    let client = CurlHTTPClient(threads: 1)

    private init(url: String, process: ChildProcess) { self.url = url; self.process = process }

    static func start() async throws -> FakeRunwayProcess {
        let (url, child) = try await startFakeServer("fake_runway", name: "fake-runway", arguments: ["--api-key", apiKey])
        return FakeRunwayProcess(url: url, process: child)
    }

    func stop() {
        process.kill()
        client.shutdown()
    }

    func provider(key: String = FakeRunwayProcess.apiKey,
                  stillMaker: (@Sendable (String) async throws -> [UInt8])? = nil) -> RunwayProvider {
        RunwayProvider(baseURL: url, apiKey: key, client: CurlHTTPClient(threads: 2), logger: testLogger, stillMaker: stillMaker)
    }

    func control(_ knobs: [String: Any]) async throws {
        let body = try JSONSerialization.data(withJSONObject: knobs)
        let r = try await client.send(HTTPRequest(method: "POST", url: url + "/_control",
                                                  headers: ["Content-Type": "application/json"], body: [UInt8](body)))
        guard r.status == 200 else { throw FakeKlingFailed(message: "control \(knobs) → \(r.status)") }
    }

    func stats() async throws -> [String: Any] {
        let r = try await client.send(HTTPRequest(url: url + "/_stats"))
        return try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any] ?? [:]
    }
}

/// A tiny valid PNG (1×1) for image_to_video.
private let onePixelPNG = Data(base64Encoded:
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")!

@Suite("Runway adapter against the fake", .serialized)
struct RunwayProviderTests {
    func withFake(_ body: (FakeRunwayProcess) async throws -> Void) async throws {
        let fake = try await FakeRunwayProcess.start()
        defer { fake.stop() }
        try await fake.control(["pending_ms": 20, "running_ms": 200])
        try await body(fake)
    }

    func until(_ p: RunwayProvider, _ t: ProviderTask, _ done: (ProviderTask) -> Bool) async throws -> [ProviderTask] {
        var seen: [ProviderTask] = []
        for _ in 0..<300 {
            let q = try await p.query(taskID: t.taskID, kind: t.kind)
            seen.append(q)
            if done(q) { return seen }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("task \(t.taskID) did not end")
        return seen
    }

    @Test func aNewSceneRunsOnTextToVideoAndSucceedsWithProgressAndAnOutput() async throws {
        try await withFake { fake in
            let p = fake.provider()
            let req = GenerationRequest(prompt: "ACTION: a fox", config: JobConfig(targetDurationSeconds: 12), externalTaskID: "reel-x-1")
            #expect(p.kind(of: req) == "text_to_video")
            let t = try await p.submit(req)
            #expect(t.state == .submitted && !t.taskID.isEmpty)
            let seen = try await until(p, t) { $0.state.hasEnded }
            #expect(seen.last?.state == .succeeded)
            #expect(seen.last?.videoURL.hasPrefix(fake.url + "/outputs/") == true)
            #expect(seen.contains { $0.state == .processing && $0.progress != nil })
            #expect(seen.last?.createdAtUnixMs ?? 0 > 0)
            let tasks = try await fake.stats()["tasks"] as? [[String: Any]] ?? []
            #expect(tasks.first?["duration"] as? Int == 10 && tasks.first?["model"] as? String == "gen4.5")
            #expect(p.charge(for: req.config) == 120)
        }
    }

    @Test func aContinuationSendsThePNGAsADataURIAndImageOnlyModelsUseTheStill() async throws {
        try await withFake { fake in
            let p = fake.provider(stillMaker: { text in
                #expect(text == "a lighthouse")
                return [UInt8](onePixelPNG)
            })
            let cont = GenerationRequest(prompt: "x", config: JobConfig(), externalTaskID: "e",
                                         image: .base64(onePixelPNG.base64EncodedString()))
            _ = try await p.submit(cont)
            let turbo = GenerationRequest(prompt: "SCENE s\nACTION: a lighthouse", config: JobConfig(model: "gen4_turbo"),
                                          externalTaskID: "e2")
            #expect(p.kind(of: turbo) == "image_to_video")
            _ = try await p.submit(turbo)
            let tasks = try await fake.stats()["tasks"] as? [[String: Any]] ?? []
            #expect(tasks.count == 2)
            for t in tasks {
                #expect(t["endpoint"] as? String == "image_to_video")
                #expect((t["image"] as? [String: Any])?["type"] as? String == "png")
                #expect(t["ratio"] as? String == "960:960")  // 1×1 → the square ratio
            }
        }
    }

    @Test func answersAreClassifiedAsDesignSays() async throws {
        try await withFake { fake in
            let p = fake.provider()
            let req = GenerationRequest(prompt: "a fox", config: JobConfig(), externalTaskID: "e")
            try await fake.control(["no_credits": true])
            #expect(await providerError { _ = try await p.submit(req) }?.kind == .parked)
            try await fake.control(["no_credits": false, "rate_limit_next": 1, "error_next": [502]])
            #expect(await providerError { _ = try await p.submit(req) }?.kind == .unavailable)
            #expect(await providerError { _ = try await p.submit(req) }?.kind == .rateLimited)
            let bad = GenerationRequest(prompt: "a fox", config: JobConfig(model: "gen2"), externalTaskID: "e")
            #expect(await providerError { _ = try await p.submit(bad) }?.kind == .rejected(code: "PROVIDER_BAD_REQUEST"))
            #expect(await providerError { _ = try await fake.provider(key: "nope").submit(req) }?.kind == .auth)
            try await fake.control(["drop_response_next": 1])
            // On a provider whose earlier calls left a connection to reuse: libcurl must not
            // resend the submit on its own (that would be a second, paid task).
            #expect(await providerError { _ = try await p.submit(req) }?.kind == .inDoubt)
            let creates = try await fake.stats()["creates"] as? [[String: Any]] ?? []
            #expect(creates.last?["dropped"] as? Bool == true, "the dropped submit was sent again: \(creates.suffix(2))")
            let gone = try await p.query(taskID: "no-such-task", kind: "text_to_video")
            if case .failed = gone.state {} else { Issue.record("a task Runway lacks ends as failed: \(gone)") }
        }
    }

    @Test func safetyFailuresAreContentPolicyOthersAreFailedTasksAndCancelDeletes() async throws {
        try await withFake { fake in
            let p = fake.provider()
            let unsafe = try await p.submit(GenerationRequest(prompt: "FORBIDDEN_CONTENT", config: JobConfig(), externalTaskID: "e"))
            let a = try await until(p, unsafe) { $0.state.hasEnded }.last
            #expect(a?.rejectionCode == "CONTENT_POLICY")
            try await fake.control(["fail_next_tasks": 1])
            let broken = try await p.submit(GenerationRequest(prompt: "ok", config: JobConfig(), externalTaskID: "e"))
            let b = try await until(p, broken) { $0.state.hasEnded }.last
            #expect(b?.rejectionCode == nil)
            if case .failed(let why)? = b?.state { #expect(why.contains("INTERNAL.")) } else { Issue.record("not failed: \(String(describing: b))") }
            try await fake.control(["stuck": true])
            let long = try await p.submit(GenerationRequest(prompt: "ok", config: JobConfig(), externalTaskID: "e"))
            await p.cancel(taskID: long.taskID, kind: long.kind)
            #expect(try await fake.stats()["deletes"] as? [String] == [long.taskID])
            if case .failed = try await p.query(taskID: long.taskID, kind: long.kind).state {} else { Issue.record("not cancelled") }
        }
    }

    @Test func requestShapeRules() throws {
        #expect(RunwayProvider.duration(for: JobConfig(targetDurationSeconds: 0)) == 5)
        #expect(RunwayProvider.duration(for: JobConfig(targetDurationSeconds: 1)) == 2)
        #expect(RunwayProvider.duration(for: JobConfig(targetDurationSeconds: 30)) == 10)
        #expect(RunwayProvider.firstShot("SCENE s\nSTYLE a: b\nACTION: the text") == "the text")
        #expect(RunwayProvider.firstShot("SHOT 1: wide\nSHOT 2: close") == "SHOT 1: wide")
        #expect(RunwayProvider.ratio(ofPNGBase64: "not base64") == "1280:720")
        #expect(throws: ReelError.self) { try RunwayProvider.parseCredits("gen4.5=x") }
        #expect(try RunwayProvider.parseCredits("gen4.5=10")["gen4.5"] == 10)
        #expect(try RunwayProvider.parseCredits("")["gen4_turbo"] == 5)
    }
}
