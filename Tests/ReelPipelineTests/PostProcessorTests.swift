import Foundation
import Testing
import ReelCore
@testable import ReelPipeline

/// A fresh artifacts directory, removed by `cleanup()`.
struct TempDir {
    let path = NSTemporaryDirectory() + "reel-artifacts-\(UUID().uuidString)"
    init() throws { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }
    func cleanup() { try? FileManager.default.removeItem(atPath: path) }
}

/// Runs a tool to completion without blocking a cooperative thread; returns status and stdout.
func runTool(_ args: [String]) async throws -> (status: Int32, stdout: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    p.standardInput = FileHandle.nullDevice
    let status: Int32 = try await withCheckedThrowingContinuation { cont in
        p.terminationHandler = { cont.resume(returning: $0.terminationStatus) }
        do { try p.run() } catch { p.terminationHandler = nil; cont.resume(throwing: error) }
    }
    let data = try out.fileHandleForReading.readToEnd() ?? Data()
    return (status, String(decoding: data, as: UTF8.self))
}

/// Width of the first video stream, read with ffprobe (a test-side check of ffmpeg's output).
func videoWidth(_ path: String) async throws -> Int? {
    let r = try await runTool(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width",
                               "-of", "default=noprint_wrappers=1:nokey=1", path])
    return Int(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
}

/// Makes a test-pattern MP4 with ffmpeg.
func makeTestVideo(_ path: String, size: String, seconds: Int) async throws {
    let r = try await runTool(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=\(size):rate=25",
                               "-t", "\(seconds)", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", path])
    try #require(r.status == 0)
}

@Suite struct PostProcessorTests {
    /// A finished generation at the fake: its video URL.
    func generatedVideo(_ fake: FakeKlingProcess) async throws -> String {
        try await fake.control(["queued_ms": 10, "processing_ms": 10])
        let p = fake.provider()
        let status = try await finished(p, try await p.submit(request()))
        try #require(status.state == .succeeded)
        return status.videoURL
    }

    func processor(_ dir: TempDir, base: String? = "https://cdn.example.com/reel/", ffmpeg: String = "ffmpeg",
                   toolTimeout: Duration = .seconds(120)) -> PostProcessor {
        PostProcessor(artifactsDir: dir.path, publicBaseURL: base, client: CurlHTTPClient(threads: 1),
                      ffmpegPath: ffmpeg, toolTimeout: toolTimeout, logger: testLogger)
    }

    @Test func makesFinalVideoThumbnailHLSAndPreviewFromTheProvidersMP4() async throws {
        let fake = try await FakeKlingProcess.start()
        defer { fake.stop() }
        let dir = try TempDir()
        defer { dir.cleanup() }
        let video = try await generatedVideo(fake)
        let job = UUID().uuidString
        let jobDir = dir.path + "/" + job
        // A crashed attempt's half-written download must not survive or be mistaken for the video.
        try FileManager.default.createDirectory(atPath: jobDir, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: jobDir + "/.tmp-crashed-final.mp4", contents: Data("half".utf8))

        let out = try await processor(dir).process(jobID: job, videoURL: video)

        let base = "https://cdn.example.com/reel/\(job)"
        #expect(out.finalVideoURL == base + "/final.mp4")
        #expect(out.thumbnailURL == base + "/thumb.jpg")
        #expect(out.hlsPlaylistURL == base + "/hls/index.m3u8")
        #expect(out.previewVideoURL == base + "/preview.mp4")
        #expect(abs(out.durationSeconds - 2.0) < 0.2)

        let final = try Data(contentsOf: URL(fileURLWithPath: jobDir + "/final.mp4"))
        #expect(final.count > 1000)
        #expect(final.dropFirst(4).prefix(4) == Data("ftyp".utf8))
        let thumb = try Data(contentsOf: URL(fileURLWithPath: jobDir + "/thumb.jpg"))
        #expect(Array(thumb.prefix(3)) == [0xFF, 0xD8, 0xFF])
        #expect(try await videoWidth(jobDir + "/thumb.jpg") == 320)

        let playlist = try String(contentsOfFile: jobDir + "/hls/index.m3u8", encoding: .utf8)
        #expect(playlist.hasPrefix("#EXTM3U"))
        #expect(playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD"))
        #expect(playlist.contains("#EXT-X-ENDLIST"))
        let segments = playlist.split(separator: "\n").filter { $0.hasSuffix(".ts") }
        #expect(!segments.isEmpty)
        for s in segments {
            #expect(PostProcessor.fileSize(jobDir + "/hls/" + s) > 0, "segment \(s) missing")
        }

        let preview = jobDir + "/preview.mp4"
        #expect(PostProcessor.fileSize(preview) > 0)
        #expect(try await videoWidth(preview) == 160)

        // The last frame, for a continuation to start from: a URL under the public base, or
        // plain base64 of a PNG of at least 300 px a side when there is none.
        #expect(PostProcessor.fileSize(jobDir + "/last_frame.png") > 0)
        #expect(await processor(dir).lastFrame(ofJob: job) == .url(base + "/last_frame.png"))
        guard case .base64(let b64)? = await processor(dir, base: nil).lastFrame(ofJob: job),
              let png = Data(base64Encoded: b64) else {
            Issue.record("no base64 last frame without a public base URL")
            return
        }
        #expect(Array(png.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        #expect(try await videoWidth(jobDir + "/last_frame.png") ?? 0 >= 300)
        #expect(await processor(dir).lastFrame(ofJob: "no-such-job") == nil)

        let leftovers = try FileManager.default.contentsOfDirectory(atPath: jobDir).filter { $0.hasPrefix(".") }
        #expect(leftovers.isEmpty)
        #expect(try await fake.stats()["result_downloads"] as? Int == 1)
    }

    @Test func aSecondRunReusesTheStoredVideo() async throws {
        let fake = try await FakeKlingProcess.start()
        defer { fake.stop() }
        let dir = try TempDir()
        defer { dir.cleanup() }
        let video = try await generatedVideo(fake)
        let job = UUID().uuidString
        let pp = processor(dir)
        let first = try await pp.process(jobID: job, videoURL: video)
        let final = dir.path + "/" + job + "/final.mp4"
        let inode = try FileManager.default.attributesOfItem(atPath: final)[.systemFileNumber] as? Int
        // Lose the preview (as a crash before its rename would), and point at a dead URL.
        try FileManager.default.removeItem(atPath: dir.path + "/" + job + "/preview.mp4")
        let second = try await pp.process(jobID: job, videoURL: "http://127.0.0.1:\(closedLoopbackPort())/gone.mp4",
                                          providerDurationSeconds: 9)
        #expect(second == first)
        #expect(try FileManager.default.attributesOfItem(atPath: final)[.systemFileNumber] as? Int == inode)
        #expect(PostProcessor.fileSize(dir.path + "/" + job + "/preview.mp4") > 0)
        #expect(try await fake.stats()["result_downloads"] as? Int == 1)
    }

    @Test func fileURLsWithoutAPublicBase() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let source = dir.path + "/source.mp4"
        try await makeTestVideo(source, size: "320x240", seconds: 3)

        let job = UUID().uuidString
        let out = try await processor(dir, base: nil).process(jobID: job, videoURL: URL(fileURLWithPath: source).absoluteString)
        let jobDir = dir.path + "/" + job
        #expect(out.finalVideoURL == URL(fileURLWithPath: jobDir + "/final.mp4").absoluteString)
        #expect(out.finalVideoURL.hasPrefix("file:///"))
        #expect(out.hlsPlaylistURL.hasSuffix("/\(job)/hls/index.m3u8"))
        #expect(abs(out.durationSeconds - 3.0) < 0.2)
        for url in [out.finalVideoURL, out.thumbnailURL, out.hlsPlaylistURL, out.previewVideoURL] {
            #expect(PostProcessor.fileSize(URL(string: url)!.path) > 0, "\(url)")
        }
    }

    @Test func aGarbageVideoFailsPostProcessingAndIsNotKept() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let source = dir.path + "/garbage.mp4"
        _ = FileManager.default.createFile(atPath: source, contents: Data("<html>oops</html>".utf8))
        let job = UUID().uuidString
        let f = await stageFailure {
            _ = try await processor(dir).process(jobID: job, videoURL: URL(fileURLWithPath: source).absoluteString)
        }
        #expect(f?.code == "POSTPROCESS_FAILED")
        #expect(f?.retryable == true)
        #expect(f?.message.contains("Invalid data") == true)
        // The next attempt downloads again instead of reusing the bad file.
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/" + job + "/final.mp4"))
    }

    @Test func missingFFmpegFailsPostProcessing() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let source = dir.path + "/garbage.mp4"
        _ = FileManager.default.createFile(atPath: source, contents: Data("whatever".utf8))
        let f = await stageFailure {
            _ = try await processor(dir, ffmpeg: "/nonexistent/ffmpeg")
                .process(jobID: "job-x", videoURL: URL(fileURLWithPath: source).absoluteString, providerDurationSeconds: 5)
        }
        #expect(f?.code == "POSTPROCESS_FAILED")
        #expect(f?.message.contains("not found") == true)
    }

    @Test func anFFmpegRunPastItsTimeoutIsKilled() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let source = dir.path + "/long.mp4"
        try await makeTestVideo(source, size: "640x480", seconds: 10)
        let clock = ContinuousClock()
        let start = clock.now
        let f = await stageFailure {
            _ = try await processor(dir, toolTimeout: .milliseconds(300))
                .process(jobID: "job-slow", videoURL: URL(fileURLWithPath: source).absoluteString)
        }
        #expect(clock.now - start < .seconds(10))
        #expect(f?.code == "POSTPROCESS_FAILED")
        #expect(f?.message.contains("timed out") == true)
    }

    @Test func aVideoURLThatFailsToDownloadLeavesNothingBehind() async throws {
        let fake = try await FakeKlingProcess.start()
        defer { fake.stop() }
        let dir = try TempDir()
        defer { dir.cleanup() }
        let f = await stageFailure {
            _ = try await processor(dir).process(jobID: "job-404", videoURL: fake.url + "/results/task-unknown.mp4")
        }
        // A result the provider no longer has (Kling deletes them after 30 days): a retry needs a new task.
        #expect(f?.code == "PROVIDER_RESULT_GONE")
        #expect(f?.retryable == true && f?.newTaskOnRetry == true)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/job-404").isEmpty)
        let s = await stageFailure { _ = try await processor(dir).process(jobID: "job-sim", videoURL: "sim://videos/x.mp4") }
        #expect(s?.code == "VIDEO_DOWNLOAD_FAILED")
        #expect(s?.retryable == false)
    }
}
