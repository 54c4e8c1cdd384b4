import Foundation
import Logging
import Synchronization
import Testing
import ReelCore
@testable import ReelPipeline

/// The fake provider (`Tests/fake_provider/fake_provider.py`) as a child process on a free
/// loopback port; one per test, so tests can turn its knobs in parallel.
final class FakeProviderProcess: Sendable {
    let url: String
    private let process: ChildProcess
    let client = CurlHTTPClient(threads: 1)

    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("fake_provider/fake_provider.py").path

    private init(url: String, process: ChildProcess) { self.url = url; self.process = process }

    static func start(apiKey: String? = nil) async throws -> FakeProviderProcess {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", script, "--port", "0"] + (apiKey.map { ["--api-key", $0] } ?? [])
        let out = Pipe()
        let errPath = NSTemporaryDirectory() + "fake-provider-\(UUID().uuidString).err"
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: errPath) }
        p.standardOutput = out
        p.standardError = FileHandle(forWritingAtPath: errPath)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let child = ChildProcess(p)
        child.startWatchdog(after: .seconds(30))
        let reader = out.fileHandleForReading
        // Blocking reads belong on a thread of their own; the reader then keeps draining stdout.
        let line: String = try await onOwnThread {
            var buffer = [UInt8]()
            while true {
                let chunk = reader.availableData
                if chunk.isEmpty { break }
                buffer += chunk
                if buffer.contains(UInt8(ascii: "\n")) { break }
            }
            Thread { while !reader.availableData.isEmpty {} }.start()
            return String(decoding: buffer, as: UTF8.self)
        }
        child.stopWatchdog()
        let prefix = "fake-provider listening on "
        guard let start = line.range(of: prefix) else {
            child.kill()
            let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
            throw FakeProviderFailed(message: "fake provider did not start: \(line) \(err)")
        }
        let url = line[start.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines)
        return FakeProviderProcess(url: url, process: child)
    }

    /// SIGKILL, not waited for: waitUntilExit would spin on a cooperative thread.
    func stop() {
        process.kill()
        client.shutdown()
    }

    func control(_ knobs: [String: Any]) async throws {
        let body = try JSONSerialization.data(withJSONObject: knobs)
        let r = try await client.send(HTTPRequest(method: "POST", url: url + "/_control",
                                                  headers: ["Content-Type": "application/json"], body: [UInt8](body)))
        guard r.status == 200 else {
            throw FakeProviderFailed(message: "control \(knobs) → \(r.status) \(String(decoding: r.body, as: UTF8.self))")
        }
    }

    func stats() async throws -> Stats {
        let r = try await client.send(HTTPRequest(url: url + "/_stats"))
        return Stats(json: try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any] ?? [:])
    }

    struct Stats {
        let json: [String: Any]
        var submissions: Int { json["submissions"] as? Int ?? -1 }
        var tasksCreated: Int { json["tasks_created"] as? Int ?? -1 }
        var requests: Int { json["requests"] as? Int ?? -1 }
        var rejected: Int { json["rejected"] as? Int ?? -1 }
        var downloads: Int { json["downloads"] as? Int ?? -1 }
        var cancels: [String] { json["cancels"] as? [String] ?? [] }
        var lastSubmit: [String: Any] { json["last_submit"] as? [String: Any] ?? [:] }
        func submissions(externalID: String) -> Int {
            (json["submissions_by_external_id"] as? [String: Int])?[externalID] ?? 0
        }
        func count(status: Int) -> Int { (json["status_counts"] as? [String: Int])?[String(status)] ?? 0 }
    }
}

struct FakeProviderFailed: Error, CustomStringConvertible {
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

let fastBackoff = HTTPProvider.Backoff(base: .milliseconds(10), cap: .milliseconds(50))

@Suite struct HTTPProviderTests {
    func provider(_ fake: FakeProviderProcess, key: String? = nil, client: CurlHTTPClient? = nil,
                  maxAttempts: Int = 4) -> HTTPProvider {
        HTTPProvider(baseURL: fake.url + "/", apiKey: key, client: client ?? CurlHTTPClient(threads: 2),
                     maxAttempts: maxAttempts, backoff: fastBackoff, logger: testLogger)
    }

    @Test func submitThenPollUntilSucceededWithVideoURL() async throws {
        let fake = try await FakeProviderProcess.start()
        defer { fake.stop() }
        let p = provider(fake)
        let id = try await p.submit(prompt: "a red fox at dawn", config: JobConfig(), jobID: "job-1")
        #expect(!id.isEmpty)
        let body = try await fake.stats().lastSubmit
        #expect(body["prompt"] as? String == "a red fox at dawn")
        #expect(body["duration"] as? Int == 5)
        #expect(body["quality"] as? String == "standard")
        #expect(body["external_task_id"] as? String == "job-1")

        var states: [ProviderStatus] = []
        for _ in 0..<3 { states.append(try await p.poll(providerJobID: id)) }
        #expect(states.map(\.state) == [.running, .running, .succeeded])
        #expect(states[0].progress == 33 && states[1].progress == 66 && states[2].progress == 100)
        #expect(states[2].videoURL == fake.url + "/files/\(id).mp4")
        #expect(abs(states[2].durationSeconds - 2.0) < 0.01)
    }

    @Test func submitSendsTheJobConfig() async throws {
        let fake = try await FakeProviderProcess.start()
        defer { fake.stop() }
        let config = JobConfig(targetDurationSeconds: 8, quality: .high, model: "kling-v2")
        _ = try await provider(fake).submit(prompt: "p", config: config, jobID: "job-cfg")
        let body = try await fake.stats().lastSubmit
        #expect(body["duration"] as? Int == 8)
        #expect(body["quality"] as? String == "high")
        #expect(body["model"] as? String == "kling-v2")
    }

    @Test func resubmittingTheSameJobGetsTheSameProviderTask() async throws {
        let fake = try await FakeProviderProcess.start()
        defer { fake.stop() }
        let p = provider(fake)
        let first = try await p.submit(prompt: "p", config: JobConfig(), jobID: "job-same")
        let again = try await p.submit(prompt: "p", config: JobConfig(), jobID: "job-same")
        let other = try await p.submit(prompt: "p", config: JobConfig(), jobID: "job-other")
        #expect(first == again)
        #expect(first != other)
        let stats = try await fake.stats()
        #expect(stats.submissions(externalID: "job-same") == 2)
        #expect(stats.tasksCreated == 2)
    }

    @Test func rateLimitIsWaitedOutForRetryAfterThenSucceeds() async throws {
        let fake = try await FakeProviderProcess.start()
        defer { fake.stop() }
        try await fake.control(["rate_limit_next": 2, "retry_after_s": 1])
        let clock = ContinuousClock()
        let start = clock.now
        let id = try await provider(fake, maxAttempts: 3).submit(prompt: "p", config: JobConfig(), jobID: "job-429")
        let elapsed = clock.now - start
        #expect(!id.isEmpty)
        // Two 1 s Retry-After waits, not the 10 ms backoff.
        #expect(elapsed >= .milliseconds(1900))
        #expect(elapsed < .seconds(10))
        let stats = try await fake.stats()
        #expect(stats.count(status: 429) == 2)
        #expect(stats.tasksCreated == 1)
    }

    @Test func rateLimitStormBeyondMaxAttemptsIsRetryableRateLimited() async throws {
        let fake = try await FakeProviderProcess.start()
        defer { fake.stop() }
        try await fake.control(["rate_limit_next": 100, "retry_after_s": 0])
        let f = await stageFailure { _ = try await provider(fake, maxAttempts: 3).submit(prompt: "p", config: JobConfig(), jobID: "j") }
        #expect(f?.code == "PROVIDER_RATE_LIMITED")
        #expect(f?.retryable == true)
        #expect(try await fake.stats().count(status: 429) == 3)
    }

    @Test func serverErrorsAreRetriedAndThenSucceed() async throws {
        let fake = try await FakeProviderProcess.start()
        defer { fake.stop() }
        // With seed 7 the fake's first two draws fall under 0.5: 500, 500, then 200.
        try await fake.control(["fail_rate": 0.5, "seed": 7])
        let id = try await provider(fake, maxAttempts: 4).submit(prompt: "p", config: JobConfig(), jobID: "j")
        #expect(!id.isEmpty)
        let stats = try await fake.stats()
        #expect(stats.count(status: 500) == 2)
        #expect(stats.count(status: 200) == 1)
    }

    @Test func persistentServerErrorsAreRetryableUnavailable() async throws {
        let fake = try await FakeProviderProcess.start()
        defer { fake.stop() }
        try await fake.control(["fail_rate": 1.0])
        let p = provider(fake, maxAttempts: 3)
        let f = await stageFailure { _ = try await p.poll(providerJobID: "task-x") }
        #expect(f?.code == "PROVIDER_UNAVAILABLE")
        #expect(f?.retryable == true)
        #expect(f?.message.contains("500") == true)
        #expect(try await fake.stats().count(status: 500) == 3)
    }

    @Test func garbageReplyIsBadResponse() async throws {
        let fake = try await FakeProviderProcess.start()
        defer { fake.stop() }
        let p = provider(fake)
        let id = try await p.submit(prompt: "p", config: JobConfig(), jobID: "j")
        try await fake.control(["garbage_rate": 1.0])
        let f = await stageFailure { _ = try await p.poll(providerJobID: id) }
        #expect(f?.code == "PROVIDER_BAD_RESPONSE")
        #expect(f?.retryable == true)
        let s = await stageFailure { _ = try await p.submit(prompt: "p", config: JobConfig(), jobID: "j2") }
        #expect(s?.code == "PROVIDER_BAD_RESPONSE")
        // Garbage is not retried inside the call: one request each.
        #expect(try await fake.stats().requests == 3)
    }

    @Test func contentPolicyRejectionIsFinalAndCarriesTheProvidersMessage() async throws {
        let fake = try await FakeProviderProcess.start()
        defer { fake.stop() }
        try await fake.control(["reject_next": 1])
        let f = await stageFailure { _ = try await provider(fake).submit(prompt: "p", config: JobConfig(), jobID: "j") }
        #expect(f?.code == "PROVIDER_REJECTED")
        #expect(f?.retryable == false)
        #expect(f?.message.contains("content policy violation") == true)
        let stats = try await fake.stats()
        #expect(stats.rejected == 1)
        #expect(stats.requests == 1)
    }

    @Test func unknownTaskIsRejected() async throws {
        let fake = try await FakeProviderProcess.start()
        defer { fake.stop() }
        let f = await stageFailure { _ = try await provider(fake).poll(providerJobID: "task-nope") }
        #expect(f?.code == "PROVIDER_REJECTED")
        #expect(f?.retryable == false)
        #expect(f?.message.contains("task not found") == true)
    }

    @Test func missingKeyIsUnauthorizedAndTheRightKeyWorks() async throws {
        let fake = try await FakeProviderProcess.start(apiKey: "sekrit")
        defer { fake.stop() }
        let f = await stageFailure { _ = try await provider(fake).submit(prompt: "p", config: JobConfig(), jobID: "j") }
        #expect(f?.code == "PROVIDER_UNAUTHORIZED")
        #expect(f?.retryable == false)
        let w = await stageFailure { _ = try await provider(fake, key: "wrong").submit(prompt: "p", config: JobConfig(), jobID: "j") }
        #expect(w?.code == "PROVIDER_UNAUTHORIZED")
        #expect(try await fake.stats().requests == 2)
        let id = try await provider(fake, key: "sekrit").submit(prompt: "p", config: JobConfig(), jobID: "j")
        #expect(!id.isEmpty)
    }

    @Test func failedTaskIsReportedAsFailed() async throws {
        let fake = try await FakeProviderProcess.start()
        defer { fake.stop() }
        try await fake.control(["fail_tasks": true, "processing_polls": 1])
        let p = provider(fake)
        let id = try await p.submit(prompt: "p", config: JobConfig(), jobID: "j")
        let s = try await p.poll(providerJobID: id)
        #expect(s.state == .failed("generation failed"))
    }

    @Test func connectionRefusedIsRetryableAndQuick() async throws {
        let port = closedLoopbackPort()
        let p = HTTPProvider(baseURL: "http://127.0.0.1:\(port)", apiKey: nil, client: CurlHTTPClient(threads: 1),
                             maxAttempts: 3, backoff: fastBackoff, logger: testLogger)
        let clock = ContinuousClock()
        let start = clock.now
        let f = await stageFailure { _ = try await p.submit(prompt: "p", config: JobConfig(), jobID: "j") }
        // Three refused attempts, not three connect timeouts (5 s each): a loose bound, as a
        // busy 2-core machine can be slow to start threads.
        #expect(clock.now - start < .seconds(8))
        #expect(f?.code == "PROVIDER_UNAVAILABLE")
        #expect(f?.retryable == true)
        #expect(f?.message.contains("connect") == true)
    }

    @Test func totalTimeoutCutsASlowProviderShort() async throws {
        let fake = try await FakeProviderProcess.start()
        defer { fake.stop() }
        try await fake.control(["latency_ms": 3000])
        let client = CurlHTTPClient(threads: 1, totalTimeout: .milliseconds(300))
        let clock = ContinuousClock()
        let start = clock.now
        let f = await stageFailure {
            _ = try await provider(fake, client: client, maxAttempts: 2).poll(providerJobID: "task-x")
        }
        // Two attempts at 3 s each would take 6 s: well under that means each was cut at 300 ms
        // (the margin is for a loaded 2-core machine; this is a correctness bound, not a speed target).
        #expect(clock.now - start < .milliseconds(5000))
        #expect(f?.code == "PROVIDER_UNAVAILABLE")
        #expect(f?.retryable == true)
        #expect(f?.message.lowercased().contains("timed out") == true || f?.message.lowercased().contains("timeout") == true)
    }

    @Test func cancelReachesTheProvider() async throws {
        let fake = try await FakeProviderProcess.start()
        defer { fake.stop() }
        let p = provider(fake)
        let id = try await p.submit(prompt: "p", config: JobConfig(), jobID: "j")
        #expect(try await p.poll(providerJobID: id).state == .running)
        await p.cancel(providerJobID: id)
        #expect(try await fake.stats().cancels == [id])
        if case .failed(let why) = try await p.poll(providerJobID: id).state {
            #expect(why.contains("cancelled"))
        } else {
            Issue.record("a cancelled task should poll as failed")
        }
        // A finished task (409) or an unknown one (404): logged, never thrown, nothing cancelled.
        let done = try await p.submit(prompt: "p", config: JobConfig(), jobID: "j-done")
        for _ in 0..<3 { _ = try await p.poll(providerJobID: done) }
        try #require(try await p.poll(providerJobID: done).state == .succeeded)
        await p.cancel(providerJobID: done)
        await p.cancel(providerJobID: "task-unknown")
        let stats = try await fake.stats()
        #expect(stats.cancels == [id])
        #expect(stats.count(status: 409) == 1)
        #expect(stats.count(status: 404) == 1)
    }
}

@Suite struct CurlHTTPClientTests {
    @Test func responseHeadersAreLowercasedAndBodiesRoundTrip() async throws {
        let fake = try await FakeProviderProcess.start()
        defer { fake.stop() }
        let client = CurlHTTPClient(threads: 1)
        let body = Array(#"{"latency_ms": 0, "processing_polls": 5}"#.utf8)
        let r = try await client.send(HTTPRequest(method: "POST", url: fake.url + "/_control",
                                                  headers: ["Content-Type": "application/json"], body: body))
        #expect(r.status == 200)
        #expect(r.headers["content-type"] == "application/json")
        #expect(r.header("Content-Length") == String(r.body.count))
        let knobs = try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any]
        #expect(knobs?["processing_polls"] as? Int == 5)
        let missing = try await client.send(HTTPRequest(url: fake.url + "/nowhere"))
        #expect(missing.status == 404)
    }

    @Test func downloadRefusesErrorStatusesAndOversizedBodies() async throws {
        let fake = try await FakeProviderProcess.start()
        defer { fake.stop() }
        let p = HTTPProvider(baseURL: fake.url, apiKey: nil, client: CurlHTTPClient(threads: 1), logger: testLogger)
        try await fake.control(["processing_polls": 1])
        let id = try await p.submit(prompt: "p", config: JobConfig(), jobID: "j")
        let video = try await p.poll(providerJobID: id).videoURL

        let client = CurlHTTPClient(threads: 1)
        let dir = NSTemporaryDirectory() + "reel-curl-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let n = try await client.download(url: video, to: dir + "/ok.mp4", maxBytes: 10 << 20)
        #expect(n > 1000)
        #expect(PostProcessor.fileSize(dir + "/ok.mp4") == Int64(n))

        await #expect { try await client.download(url: video, to: dir + "/small.mp4", maxBytes: 100) } throws: {
            ($0 as? HTTPClientError)?.code == .tooLarge
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/small.mp4"))

        await #expect { try await client.download(url: fake.url + "/files/nope.mp4", to: dir + "/404.mp4", maxBytes: 1 << 20) } throws: {
            ($0 as? HTTPClientError)?.code == .badStatus
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/404.mp4"))
    }

    @Test func cancellingTheTaskAbortsTheTransfer() async throws {
        let fake = try await FakeProviderProcess.start()
        defer { fake.stop() }
        try await fake.control(["latency_ms": 10_000])
        let client = CurlHTTPClient(threads: 1)
        let clock = ContinuousClock()
        let start = clock.now
        let task = Task { try await client.send(HTTPRequest(url: fake.url + "/v1/videos/x")) }
        try await Task.sleep(for: .milliseconds(300))
        task.cancel()
        let result = await task.result
        #expect(clock.now - start < .seconds(3))
        #expect(throws: CancellationError.self) { try result.get() }
    }

    @Test func unresolvableHostIsATransportError() async throws {
        let client = CurlHTTPClient(threads: 1, connectTimeout: .seconds(3))
        await #expect { try await client.send(HTTPRequest(url: "http://reel-no-such-host.invalid/")) } throws: {
            guard let e = $0 as? HTTPClientError else { return false }
            return e.code == .couldNotResolve && !e.message.isEmpty
        }
    }
}
