import Foundation
import Testing
import ReelCore
@testable import ReelPipeline

/// moto's S3 in server mode (`python3 -m moto.server`) as a child process on a loopback port;
/// one per test. With `INITIAL_NO_AUTH_ACTION_COUNT` moto checks every request after the first
/// few against its IAM: the access key must exist and the SigV4 signature must match its secret.
/// Those first few create an IAM user, its access key and an allow-all policy.
final class MotoServer: Sendable {
    let endpoint: String
    let accessKey: String
    let secretKey: String
    private let process: ChildProcess
    let client: CurlHTTPClient

    private init(endpoint: String, process: ChildProcess, client: CurlHTTPClient, accessKey: String, secretKey: String) {
        self.endpoint = endpoint; self.process = process; self.client = client
        self.accessKey = accessKey; self.secretKey = secretKey
    }

    static func start() async throws -> MotoServer {
        let probe = CurlHTTPClient(threads: 1)
        defer { probe.shutdown() }
        for _ in 0..<5 {
            let port = Int.random(in: 20_000..<60_000)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["env", "INITIAL_NO_AUTH_ACTION_COUNT=3", "python3", "-m", "moto.server", "-H", "127.0.0.1",
                           "-p", "\(port)"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            p.standardInput = FileHandle.nullDevice
            try p.run()
            let child = ChildProcess(p)
            let endpoint = "http://127.0.0.1:\(port)"
            for _ in 0..<150 {
                if !p.isRunning { break }
                if let r = try? await probe.send(HTTPRequest(url: endpoint + "/moto-api/", timeout: .seconds(2))), r.status < 500 {
                    let client = CurlHTTPClient(threads: 2)
                    do {
                        let (access, secret) = try await createUser(endpoint, client)
                        return MotoServer(endpoint: endpoint, process: child, client: client, accessKey: access,
                                          secretKey: secret)
                    } catch {
                        child.kill()
                        client.shutdown()
                        throw error
                    }
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            child.kill()
        }
        throw MotoFailed(message: "moto server did not start (is moto[server] installed?)")
    }

    /// The three unauthenticated IAM actions: a user, its access key and a policy allowing everything.
    private static func createUser(_ endpoint: String, _ client: CurlHTTPClient) async throws -> (String, String) {
        func iam(_ form: String) async throws -> String {
            var r = HTTPRequest(method: "POST", url: endpoint + "/",
                                headers: ["Content-Type": "application/x-www-form-urlencoded"],
                                body: Array((form + "&Version=2010-05-08").utf8))
            r.sigV4 = SigV4(region: "us-east-1", service: "iam", accessKey: "bootstrap", secretKey: "bootstrap")
            let response = try await client.send(r)
            let xml = String(decoding: response.body, as: UTF8.self)
            guard response.status == 200 else { throw MotoFailed(message: "IAM \(form) → \(response.status) \(xml)") }
            return xml
        }
        func element(_ name: String, _ xml: String) -> String? {
            xml.components(separatedBy: "<\(name)>").dropFirst().first?.components(separatedBy: "</\(name)>").first
        }
        _ = try await iam("Action=CreateUser&UserName=reel")
        let key = try await iam("Action=CreateAccessKey&UserName=reel")
        let policy = #"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#
        let encoded = policy.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        _ = try await iam("Action=PutUserPolicy&UserName=reel&PolicyName=all&PolicyDocument=" + encoded)
        guard let access = element("AccessKeyId", key), let secret = element("SecretAccessKey", key) else {
            throw MotoFailed(message: "no access key in \(key)")
        }
        return (access, secret)
    }

    func stop() {
        process.kill()
        client.shutdown()
    }

    func sigV4() -> SigV4 { SigV4(region: "us-east-1", service: "s3", accessKey: accessKey, secretKey: secretKey) }

    func store(_ url: String, secret: String? = nil, base: String? = nil) throws -> S3ArtifactStore {
        try S3ArtifactStore(artifactsURL: url, endpoint: endpoint + "/", region: "us-east-1", accessKey: accessKey,
                            secretKey: secret ?? secretKey, client: client, publicBaseURL: base)
    }

    /// A signed request to moto, by the same libcurl signing the store uses.
    func signed(_ method: String, _ path: String) async throws -> HTTPResponse {
        var r = HTTPRequest(method: method, url: endpoint + path)
        r.sigV4 = sigV4()
        r.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
        return try await client.send(r)
    }

    func createBucket(_ name: String) async throws {
        let r = try await signed("PUT", "/" + name)
        guard r.status == 200 else { throw MotoFailed(message: "create bucket \(name) → \(r.status) \(String(decoding: r.body, as: UTF8.self).replacingOccurrences(of: "\n", with: " "))") }
    }

    /// The keys in `bucket`, from ListObjectsV2.
    func keys(_ bucket: String) async throws -> [String] {
        let r = try await signed("GET", "/\(bucket)?list-type=2")
        let xml = String(decoding: r.body, as: UTF8.self)
        return xml.components(separatedBy: "<Key>").dropFirst().compactMap { $0.components(separatedBy: "</Key>").first }
            .sorted()
    }
}

struct MotoFailed: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

@Suite struct S3ArtifactStoreTests {
    @Test func publishedArtifactsReadBackWithTheirKeysAndContentTypes() async throws {
        let moto = try await MotoServer.start()
        defer { moto.stop() }
        try await moto.createBucket("reel-media")
        let store = try moto.store("s3://reel-media/prod/v1/")
        let dir = try TempDir()
        defer { dir.cleanup() }
        // A few MB, so the streamed upload crosses many read callbacks.
        let video = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        try FileManager.default.createDirectory(atPath: dir.path + "/hls", withIntermediateDirectories: true)
        try Data(video).write(to: URL(fileURLWithPath: dir.path + "/final.mp4"))
        try Data("#EXTM3U\nseg_000.ts\n".utf8).write(to: URL(fileURLWithPath: dir.path + "/hls/index.m3u8"))
        try Data([0x47, 1, 2, 3]).write(to: URL(fileURLWithPath: dir.path + "/hls/seg_000.ts"))
        try Data([0x89, 0x50, 0x4E, 0x47]).write(to: URL(fileURLWithPath: dir.path + "/last_frame.png"))

        let files = ["final.mp4", "last_frame.png", "hls/seg_000.ts", "hls/index.m3u8"]
        try await store.publish(jobID: "job-1", files: files, from: dir.path)
        // Publishing again (a re-run after a crash) replaces the objects with the same bytes.
        try await store.publish(jobID: "job-1", files: files, from: dir.path)

        #expect(try await moto.keys("reel-media") == files.map { "prod/v1/job-1/" + $0 }.sorted())
        #expect(try await store.read(jobID: "job-1", file: "final.mp4") == video)
        #expect(try await store.read(jobID: "job-1", file: "hls/seg_000.ts") == [0x47, 1, 2, 3])
        let types = ["final.mp4": "video/mp4", "last_frame.png": "image/png", "hls/seg_000.ts": "video/mp2t",
                     "hls/index.m3u8": "application/vnd.apple.mpegurl"]
        for (file, type) in types {
            let r = try await moto.signed("GET", "/reel-media/prod/v1/job-1/" + file)
            #expect(r.status == 200)
            #expect(r.header("content-type") == type, "content type of \(file)")
        }

        #expect(store.url(jobID: "job-1", file: "hls/index.m3u8") == "s3://reel-media/prod/v1/job-1/hls/index.m3u8")
        #expect(store.locate("s3://reel-media/prod/v1/job-1/hls/index.m3u8").map { "\($0.jobID)|\($0.file)" }
            == "job-1|hls/index.m3u8")
        #expect(store.locate("s3://reel-media/other/job-1/final.mp4") == nil)
        #expect(store.locate("s3://reel-media/prod/v1/job-1/../x/final.mp4") == nil)
        #expect(try moto.store("s3://reel-media/p", base: "https://cdn.example.com/m/").url(jobID: "j", file: "final.mp4")
            == "https://cdn.example.com/m/j/final.mp4")
    }

    @Test func aMissingObjectReadsAsNil() async throws {
        let moto = try await MotoServer.start()
        defer { moto.stop() }
        try await moto.createBucket("reel-media")
        #expect(try await moto.store("s3://reel-media").read(jobID: "nobody", file: "final.mp4") == nil)
    }

    @Test func aWrongSecretOrNoSignatureIsRefused() async throws {
        let moto = try await MotoServer.start()
        defer { moto.stop() }
        try await moto.createBucket("reel-media")
        let dir = try TempDir()
        defer { dir.cleanup() }
        try Data("x".utf8).write(to: URL(fileURLWithPath: dir.path + "/thumb.jpg"))
        try await moto.store("s3://reel-media").publish(jobID: "j", files: ["thumb.jpg"], from: dir.path)
        let unsigned = try await moto.client.send(HTTPRequest(url: moto.endpoint + "/reel-media/j/thumb.jpg"))
        #expect(unsigned.status == 403)
        let wrong = try moto.store("s3://reel-media", secret: "not-the-secret")
        do {
            try await wrong.publish(jobID: "j", files: ["thumb.jpg"], from: dir.path)
            Issue.record("publish with a wrong secret succeeded")
        } catch let e as Pipeline.StageFailure {
            #expect(e.message.contains("403"))
        }
        await #expect(throws: HTTPClientError.self) { try await wrong.read(jobID: "j", file: "thumb.jpg") }
        #expect(try await moto.store("s3://reel-media").read(jobID: "j", file: "thumb.jpg") == Array("x".utf8))
        // A bucket that isn't there fails the publish with the store's error, retryably.
        do {
            try await moto.store("s3://no-such-bucket").publish(jobID: "j", files: ["thumb.jpg"], from: dir.path)
            Issue.record("publish to a missing bucket succeeded")
        } catch let e as Pipeline.StageFailure {
            #expect(e.code == "ARTIFACT_STORE_FAILED")
            #expect(e.retryable)
        }
    }

    @Test func badArtifactURLsAreRefused() throws {
        let client = CurlHTTPClient(threads: 1)
        defer { client.shutdown() }
        for url in ["file:///tmp/x", "s3://", "s3://UPPER/x", "s3://ok-bucket/with space"] {
            #expect(throws: S3ArtifactStore.ConfigError.self) {
                try S3ArtifactStore(artifactsURL: url, endpoint: "http://127.0.0.1:1", region: "us-east-1",
                                    accessKey: "a", secretKey: "b", client: client)
            }
        }
        #expect(throws: S3ArtifactStore.ConfigError.self) {
            try S3ArtifactStore(artifactsURL: "s3://ok-bucket", endpoint: "127.0.0.1:9000", region: "us-east-1",
                                accessKey: "a", secretKey: "b", client: client)
        }
    }

    @Test func postProcessorPublishesToTheBucketAndAnotherInstanceFindsTheLastFrame() async throws {
        let moto = try await MotoServer.start()
        defer { moto.stop() }
        try await moto.createBucket("reel-media")
        let fake = try await FakeKlingProcess.start()
        defer { fake.stop() }
        try await fake.control(["queued_ms": 10, "processing_ms": 10])
        let p = fake.provider()
        let status = try await finished(p, try await p.submit(request()))
        try #require(status.state == .succeeded)
        let (one, two) = (try TempDir(), try TempDir())
        defer { one.cleanup(); two.cleanup() }
        let store = try moto.store("s3://reel-media/reel")
        func processor(_ dir: TempDir) -> PostProcessor {
            PostProcessor(artifactsDir: dir.path, publicBaseURL: nil, store: store, client: CurlHTTPClient(threads: 1),
                          logger: testLogger)
        }
        let job = UUID().uuidString

        let out = try await processor(one).process(jobID: job, videoURL: status.videoURL)

        let prefix = "s3://reel-media/reel/\(job)/"
        #expect(out.finalVideoURL == prefix + "final.mp4")
        #expect(out.thumbnailURL == prefix + "thumb.jpg")
        #expect(out.hlsPlaylistURL == prefix + "hls/index.m3u8")
        #expect(out.previewVideoURL == prefix + "preview.mp4")
        let keys = try await moto.keys("reel-media")
        for file in ["final.mp4", "thumb.jpg", "preview.mp4", "last_frame.png", "hls/index.m3u8"] {
            #expect(keys.contains("reel/\(job)/" + file), "\(file) not published")
        }
        #expect(keys.contains { $0.hasPrefix("reel/\(job)/hls/seg_") && $0.hasSuffix(".ts") })
        let local = try Data(contentsOf: URL(fileURLWithPath: one.path + "/\(job)/final.mp4"))
        #expect(try await store.read(jobID: job, file: "final.mp4") == Array(local))

        // Another instance (its own empty directory) gets the last frame from the bucket.
        let png = try Data(contentsOf: URL(fileURLWithPath: one.path + "/\(job)/last_frame.png"))
        #expect(await processor(two).lastFrame(ofJob: job) == .base64(png.base64EncodedString()))
        #expect(await processor(two).lastFrame(ofJob: "no-such-job") == nil)
    }
}
