import Crypto
import Foundation
import Logging
import Synchronization
import Testing
import ReelCore
@testable import ReelPipeline

/// The strict fake of Kling's published API (`Tests/fake_kling/fake_kling.py`) as a child
/// process on a free loopback port; one per test, so tests can turn its knobs in parallel.
final class FakeKlingProcess: Sendable {
    static let accessKey = "test-access-key"
    static let secretKey = "test-secret-key"
    let url: String
    private let process: ChildProcess
    let client = CurlHTTPClient(threads: 1)

    private init(url: String, process: ChildProcess) { self.url = url; self.process = process }

    static func start() async throws -> FakeKlingProcess {
        let (url, child) = try await startFakeServer("fake_kling", name: "fake-kling",
                                                     arguments: ["--access-key", accessKey, "--secret-key", secretKey])
        return FakeKlingProcess(url: url, process: child)
    }

    /// SIGKILL, not waited for: waitUntilExit would spin on a cooperative thread.
    func stop() {
        process.kill()
        client.shutdown()
    }

    func provider(secret: String = FakeKlingProcess.secretKey) -> KlingProvider {
        KlingProvider(baseURL: url, accessKey: Self.accessKey, secretKey: secret, client: CurlHTTPClient(threads: 2),
                      logger: testLogger)
    }

    func control(_ knobs: [String: Any]) async throws {
        let body = try JSONSerialization.data(withJSONObject: knobs)
        let r = try await client.send(HTTPRequest(method: "POST", url: url + "/_control",
                                                  headers: ["Content-Type": "application/json"], body: [UInt8](body)))
        guard r.status == 200 else {
            throw FakeKlingFailed(message: "control \(knobs) → \(r.status) \(String(decoding: r.body, as: UTF8.self))")
        }
    }

    func stats() async throws -> [String: Any] {
        let r = try await client.send(HTTPRequest(url: url + "/_stats"))
        return try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any] ?? [:]
    }

    func tasks() async throws -> [[String: Any]] { try await stats()["tasks"] as? [[String: Any]] ?? [] }
}

struct FakeKlingFailed: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

let testLogger: Logger = {
    var l = Logger(label: "reel.test")
    l.logLevel = .warning
    return l
}()

/// Runs `body` and returns the `StageFailure` it throws (recording an issue if it doesn't).
func stageFailure(_ body: () async throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) async
    -> Pipeline.StageFailure?
{
    do {
        try await body()
        Issue.record("expected a StageFailure, got success", sourceLocation: sourceLocation)
    } catch let f as Pipeline.StageFailure {
        return f
    } catch {
        Issue.record("expected a StageFailure, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// Runs `body` and returns the `ProviderError` it throws (recording an issue if it doesn't).
func providerError(_ body: () async throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) async
    -> ProviderError?
{
    do {
        try await body()
        Issue.record("expected a ProviderError, got success", sourceLocation: sourceLocation)
    } catch let e as ProviderError {
        return e
    } catch {
        Issue.record("expected a ProviderError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// A loopback port nobody listens on: bound, then closed again.
func closedLoopbackPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
    }
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    return Int(UInt16(bigEndian: addr.sin_port))
}

func request(_ prompt: String = "a lighthouse in fog", config: JobConfig = JobConfig(), external: String = "reel-\(UUID().uuidString)-1",
             image: SourceImage? = nil) -> GenerationRequest {
    GenerationRequest(prompt: prompt, config: config, externalTaskID: external, image: image)
}

/// Polls the fake until the task ends (its lifecycle is time-based).
func finished(_ p: KlingProvider, _ t: ProviderTask) async throws -> ProviderTask {
    var t = t
    for _ in 0..<200 where !t.state.hasEnded {
        try await Task.sleep(for: .milliseconds(25))
        t = try await p.query(taskID: t.taskID, kind: t.kind)
    }
    return t
}

@Suite struct KlingJWTTests {
    func parts(_ token: String) throws -> (header: [String: Any], claims: [String: Any], signed: String, signature: Data) {
        let p = token.split(separator: ".").map(String.init)
        try #require(p.count == 3)
        func decode(_ s: String) throws -> Data {
            var b = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
            while b.count % 4 != 0 { b += "=" }
            return try #require(Data(base64Encoded: b))
        }
        let header = try JSONSerialization.jsonObject(with: try decode(p[0])) as? [String: Any] ?? [:]
        let claims = try JSONSerialization.jsonObject(with: try decode(p[1])) as? [String: Any] ?? [:]
        return (header, claims, p[0] + "." + p[1], try decode(p[2]))
    }

    @Test func tokenIsHS256WithIssuerExpiryAndNotBefore() throws {
        let jwt = KlingJWT(accessKey: "ak-1", secretKey: "sk-1", now: { 1_000_000 })
        let (header, claims, signed, signature) = try parts(jwt.token())
        #expect(header["alg"] as? String == "HS256" && header["typ"] as? String == "JWT")
        #expect(claims["iss"] as? String == "ak-1")
        #expect(claims["exp"] as? Int == 1_000_000 + 1800)
        #expect(claims["nbf"] as? Int == 1_000_000 - 5)
        let key = SymmetricKey(data: Data("sk-1".utf8))
        #expect(HMAC<Crypto.SHA256>.isValidAuthenticationCode(signature, authenticating: Data(signed.utf8), using: key))
        let wrong = SymmetricKey(data: Data("sk-2".utf8))
        #expect(!HMAC<Crypto.SHA256>.isValidAuthenticationCode(signature, authenticating: Data(signed.utf8), using: wrong))
    }

    @Test func tokenIsReusedUntilShortlyBeforeItExpiresAndRenewedOnDemand() throws {
        let clock = Mutex<Int64>(1_000_000)
        let jwt = KlingJWT(accessKey: "ak", secretKey: "sk", now: { clock.withLock { $0 } })
        let first = jwt.token()
        clock.withLock { $0 += 1000 }
        #expect(jwt.token() == first, "reused while far from expiry")
        clock.withLock { $0 += 600 }  // 200 s left: inside the renewal margin
        let second = jwt.token()
        #expect(second != first)
        #expect(try parts(second).claims["exp"] as? Int == 1_001_600 + 1800)
        jwt.invalidate()
        clock.withLock { $0 += 1 }
        #expect(jwt.token() != second)
    }
}

@Suite struct KlingProviderTests {
    @Test func requestBodyFollowsKlingsFieldRules() throws {
        let p = KlingProvider(baseURL: "http://127.0.0.1:1/", accessKey: "a", secretKey: "s", client: CurlHTTPClient(threads: 1),
                              logger: testLogger)
        var b = p.body(for: request(String(repeating: "x", count: 3000)))
        #expect(b.modelName == "kling-v2-5-turbo" && b.duration == "5" && b.mode == "std" && b.aspectRatio == "16:9")
        #expect(b.prompt?.count == 2500 && b.image == nil)
        b = p.body(for: request(config: JobConfig(targetDurationSeconds: 8, quality: .high, model: "kling-v2-1")))
        #expect(b.modelName == "kling-v2-1" && b.duration == "10" && b.mode == "pro")
        b = p.body(for: request(image: .base64("AAAA")))
        #expect(b.image == "AAAA" && b.aspectRatio == nil, "image2video: the output follows the image")
        #expect(p.kind(of: request(image: .url("https://x/y.png"))) == "image2video")
        #expect(p.kind(of: request()) == "text2video")
        let json = String(decoding: try KlingWire.encode(p.body(for: request(external: "reel-j-1"))), as: UTF8.self)
        #expect(json.contains("\"duration\":\"5\"") && json.contains("\"external_task_id\":\"reel-j-1\""))
        #expect(json.contains("\"model_name\":\"kling-v2-5-turbo\""))
    }

    /// DESIGN §5's table, one code at a time.
    @Test(arguments: [
        (1000, 401), (1001, 401), (1002, 401), (1003, 401), (1004, 401), (1100, 429), (1101, 429), (1102, 429), (1304, 429),
        (1103, 403), (1200, 400), (1201, 400), (1202, 404), (1203, 404), (1300, 400), (1301, 400), (1302, 429), (1303, 429),
        (5000, 500), (5001, 503), (5002, 504),
    ])
    func everyCodeIsClassified(code: Int, status: Int) {
        let e = KlingProvider.classify(code: code, message: "said", status: status, requestID: "r", what: "submit",
                                       isSubmit: true, model: "kling-v2-1", retryAfter: nil)
        let expected: ProviderError.Kind = switch code {
        case 1000...1004: .auth
        case 1100, 1101, 1102, 1304: .parked
        case 1103: .rejected(code: "PROVIDER_PERMISSION")
        case 1201: .externalIDTaken
        case 1200...1203: .rejected(code: "PROVIDER_BAD_REQUEST")
        case 1300, 1301: .rejected(code: "CONTENT_POLICY")
        case 1302: .rateLimited
        case 1303: .concurrency
        default: .unavailable
        }
        #expect(e.kind == expected)
        #expect(e.providerCode == code && e.requestID == "r")
        if code == 1103 { #expect(e.message.contains("kling-v2-1"), "names the model") }
        if code == 1301 { #expect(e.message == "said", "Kling's message kept") }
        // Outside a submit, 1201 is a plain bad request.
        let q = KlingProvider.classify(code: 1201, message: "", status: 400, requestID: "", what: "query", isSubmit: false,
                                       model: "", retryAfter: nil)
        #expect(q.kind == .rejected(code: "PROVIDER_BAD_REQUEST"))
    }

    @Test func submitQueryAndFindAgainstTheStrictFake() async throws {
        let fake = try await FakeKlingProcess.start()
        defer { fake.stop() }
        try await fake.control(["queued_ms": 20, "processing_ms": 50])
        let p = fake.provider()
        let ext = "reel-\(UUID().uuidString)-1"
        let t = try await p.submit(request(config: JobConfig(targetDurationSeconds: 10, quality: .high), external: ext))
        #expect(t.kind == "text2video" && !t.taskID.isEmpty && !t.requestID.isEmpty && t.externalTaskID == ext)
        let done = try await finished(p, t)
        #expect(done.state == .succeeded && done.videoURL.hasPrefix(fake.url) && done.costUnits == 7)
        let found = try #require(try await p.find(externalTaskID: ext, kind: "text2video"))
        #expect(found.taskID == t.taskID)
        #expect(try await p.find(externalTaskID: "reel-nobody-1", kind: "text2video") == nil)
        let task = try #require(try await fake.tasks().first)
        #expect(task["duration"] as? String == "10" && task["mode"] as? String == "pro")
        #expect(task["model_name"] as? String == "kling-v2-5-turbo" && task["model_name_sent"] as? Bool == true)
        let stats = try await fake.stats()
        #expect(stats["tokens_seen"] as? Int == 1, "one token reused for every call")
    }

    @Test func eachRefusalAtTheFakeComesBackClassified() async throws {
        let fake = try await FakeKlingProcess.start()
        defer { fake.stop() }
        let p = fake.provider()
        let cases: [(Int, ProviderError.Kind)] = [
            (1102, .parked), (1101, .parked), (1100, .parked), (1304, .parked), (1103, .rejected(code: "PROVIDER_PERMISSION")),
            (1200, .rejected(code: "PROVIDER_BAD_REQUEST")), (1302, .rateLimited), (1303, .concurrency),
            (5000, .unavailable), (5001, .unavailable), (5002, .unavailable),
        ]
        for (code, kind) in cases {
            try await fake.control(["error_next": [code]])
            let e = await providerError { _ = try await p.submit(request()) }
            #expect(e?.kind == kind, "code \(code)")
            #expect(e?.providerCode == code)
        }
        try await fake.control(["content_policy_marker": "FORBIDDEN_CONTENT"])
        let c = await providerError { _ = try await p.submit(request("a FORBIDDEN_CONTENT scene")) }
        #expect(c?.kind == .rejected(code: "CONTENT_POLICY") && c?.providerCode == 1301)
        #expect(try await fake.stats()["creates_ok"] as? Int == 0, "nothing was created")
    }

    @Test func wrongSecretRenewsTheTokenOnceThenIsAnAuthError() async throws {
        let fake = try await FakeKlingProcess.start()
        defer { fake.stop() }
        let e = await providerError { _ = try await fake.provider(secret: "not-the-secret").submit(request()) }
        #expect(e?.kind == .auth)
        let failures = try await fake.stats()["auth_failures"] as? [String: Int] ?? [:]
        #expect(failures.values.reduce(0, +) == 2, "the first refusal renews the token once: \(failures)")
    }

    @Test func aLostAnswerIsInDoubtAndTheTaskIsFoundByItsExternalID() async throws {
        let fake = try await FakeKlingProcess.start()
        defer { fake.stop() }
        try await fake.control(["drop_response_next": 1])
        let p = fake.provider()
        let ext = "reel-\(UUID().uuidString)-1"
        let e = await providerError { _ = try await p.submit(request(external: ext)) }
        #expect(e?.kind == .inDoubt)
        let found = try #require(try await p.find(externalTaskID: ext, kind: "text2video"))
        #expect(found.externalTaskID == ext)
        // Submitting again with the same external id is refused (1201), never a second task.
        let again = await providerError { _ = try await p.submit(request(external: ext)) }
        #expect(again?.kind == .externalIDTaken)
        #expect(try await fake.stats()["creates_ok"] as? Int == 1)
    }

    @Test func callbacksAreParsedBareOrInTheEnvelope() throws {
        let p = KlingProvider(baseURL: "http://127.0.0.1:1", accessKey: "a", secretKey: "s", client: CurlHTTPClient(threads: 1),
                              logger: testLogger)
        let bare = #"{"task_id":"77","task_status":"succeed","task_info":{"external_task_id":"reel-j-1"},"final_unit_deduction":"3.5","task_result":{"videos":[{"id":"v","url":"https://cdn/x.mp4","duration":"5.1"}]}}"#
        let t = try #require(p.parseCallback(Array(bare.utf8)))
        #expect(t.taskID == "77" && t.state == .succeeded && t.videoURL == "https://cdn/x.mp4" && t.durationSeconds == 5.1)
        #expect(t.externalTaskID == "reel-j-1" && t.costUnits == 3.5)
        let wrapped = #"{"code":0,"message":"SUCCEED","request_id":"rq","data":{"task_id":"78","task_status":"failed","task_status_msg":"boom"}}"#
        let w = try #require(p.parseCallback(Array(wrapped.utf8)))
        #expect(w.taskID == "78" && w.state == .failed("boom"))
        #expect(p.parseCallback(Array("<html>".utf8)) == nil)
        #expect(p.parseCallback(Array(#"{"task_id":"1","task_status":"exploded"}"#.utf8)) == nil)
    }

    @Test func progressFromElapsedTimeNeverPasses84() {
        #expect(StageTimes.progress(elapsed: .zero, expected: .seconds(90)) == 40)
        #expect(StageTimes.progress(elapsed: .seconds(45), expected: .seconds(90)) == 62)
        #expect(StageTimes.progress(elapsed: .seconds(900), expected: .seconds(90)) == 84)
        #expect(StageTimes.progress(elapsed: .seconds(1), expected: .zero) == 84)
        var last: Int32 = 0
        for s in stride(from: 0, through: 200, by: 3) {
            let p = StageTimes.progress(elapsed: .seconds(s), expected: .seconds(90))
            #expect(p >= last && p <= 84)
            last = p
        }
        let times = StageTimes()
        let c = JobConfig(targetDurationSeconds: 10, quality: .high)
        let p = KlingProvider(baseURL: "http://x", accessKey: "a", secretKey: "s", client: CurlHTTPClient(threads: 1), logger: testLogger)
        #expect(p.expectedGenerationTime(for: c) == .seconds(360), "pro at 10 s: 180 s doubled")
        #expect(p.expectedGenerationTime(for: JobConfig()) == .seconds(90))
        #expect(times.expected("kling", c, default: .seconds(360)) == .seconds(360))
        times.record("kling", c, took: .seconds(100))
        #expect(times.expected("kling", c, default: .seconds(360)) == .seconds(100))
        times.record("kling", c, took: .seconds(200))
        #expect(times.expected("kling", c, default: .seconds(360)) == .seconds(130), "a moving average")
    }

    @Test func callbacksReachOnlyTheRunFollowingThatAttempt() async {
        let hub = ProviderCallbacks()
        let record = ProviderTaskRecord(provider: "kling", jobID: "j1", attempt: 2, externalTaskID: "reel-j1-2", taskID: "55",
                                        kind: "text2video", callbackToken: ProviderCallbacks.newToken())
        #expect(record.callbackToken.count == 64)
        let task = ProviderTask(taskID: "55", externalTaskID: "reel-j1-2", state: .succeeded, videoURL: "u")
        #expect(hub.deliver(task, for: record) == .notFollowedHere)
        hub.follow(jobID: "j1", taskID: "55", externalTaskID: "reel-j1-2")
        if case .mismatch = hub.deliver(ProviderTask(taskID: "56", state: .succeeded), for: record) {} else {
            Issue.record("another task id must not be delivered")
        }
        if case .mismatch = hub.deliver(ProviderTask(taskID: "55", externalTaskID: "reel-j1-1", state: .succeeded), for: record) {} else {
            Issue.record("another attempt's external id must not be delivered")
        }
        #expect(await hub.next(jobID: "j1", timeout: .milliseconds(20)) == nil, "nothing delivered yet")
        #expect(hub.deliver(task, for: record) == .delivered)
        #expect(hub.deliver(task, for: record) == .delivered, "a duplicate is harmless")
        #expect(await hub.next(jobID: "j1", timeout: .seconds(1)) == task)
        hub.stopFollowing(jobID: "j1")
        #expect(hub.deliver(task, for: record) == .notFollowedHere)
    }
}
