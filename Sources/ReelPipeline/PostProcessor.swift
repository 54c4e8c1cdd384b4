import Foundation
import Logging
import Synchronization

/// What post-processing produced for one job (DESIGN §5, stage 4).
public struct PostProcessed: Sendable, Equatable {
    public var finalVideoURL: String
    public var thumbnailURL: String
    public var hlsPlaylistURL: String
    public var previewVideoURL: String
    public var durationSeconds: Double

    public init(finalVideoURL: String, thumbnailURL: String, hlsPlaylistURL: String, previewVideoURL: String,
                durationSeconds: Double) {
        self.finalVideoURL = finalVideoURL; self.thumbnailURL = thumbnailURL; self.hlsPlaylistURL = hlsPlaylistURL
        self.previewVideoURL = previewVideoURL; self.durationSeconds = durationSeconds
    }
}

/// Stores the provider's video under `<artifactsDir>/<jobID>/` and derives a thumbnail, an
/// HLS rendition and a low-res preview from it with ffmpeg.
///
/// Every file appears under its final name only when complete (written under a `.tmp-`
/// name, then renamed), so a retry after a crash reuses what is done and redoes the rest.
/// ffmpeg runs as a child process with a timeout; nothing here blocks the cooperative pool.
public struct PostProcessor: Sendable {
    public let artifactsDir: String
    public let publicBaseURL: String?
    /// Where finished artifacts are published and what names them in the API.
    public let store: any ArtifactStore
    let client: CurlHTTPClient
    let ffmpegPath: String
    let ffprobePath: String
    let toolTimeout: Duration
    let downloadTimeout: Duration
    let maxVideoBytes: Int
    let logger: Logger

    /// `artifactsDir` is the working directory; `store` defaults to that directory itself.
    public init(artifactsDir: String, publicBaseURL: String?, store: (any ArtifactStore)? = nil, client: CurlHTTPClient,
                ffmpegPath: String = "ffmpeg", ffprobePath: String? = nil, toolTimeout: Duration = .seconds(120),
                downloadTimeout: Duration = .seconds(300), maxVideoBytes: Int = 1 << 30, logger: Logger) {
        self.artifactsDir = URL(fileURLWithPath: artifactsDir).standardizedFileURL.path
        self.publicBaseURL = normalizedBaseURL(publicBaseURL)
        self.store = store ?? LocalArtifactStore(directory: artifactsDir, publicBaseURL: publicBaseURL)
        self.client = client
        self.ffmpegPath = ffmpegPath
        // ffprobe ships next to ffmpeg.
        if let ffprobePath {
            self.ffprobePath = ffprobePath
        } else if ffmpegPath.hasSuffix("ffmpeg") {
            self.ffprobePath = String(ffmpegPath.dropLast("ffmpeg".count)) + "ffprobe"
        } else {
            self.ffprobePath = "ffprobe"
        }
        self.toolTimeout = toolTimeout
        self.downloadTimeout = downloadTimeout
        self.maxVideoBytes = maxVideoBytes
        self.logger = logger
    }

    /// Idempotent: running it again for the same job reuses every finished file.
    /// `providerDurationSeconds` is used when ffprobe can't tell the duration.
    public func process(jobID: String, videoURL: String, providerDurationSeconds: Double = 0) async throws
        -> PostProcessed
    {
        guard !jobID.isEmpty, !jobID.contains("/"), !jobID.contains("\0"), jobID != ".", jobID != "..",
              !jobID.hasPrefix(".") else {
            throw Pipeline.StageFailure(code: "POSTPROCESS_FAILED", message: "unusable job id for a directory name: \(jobID)",
                                        retryable: false)
        }
        var log = logger
        log[metadataKey: "reel.job_id"] = "\(jobID)"
        let dir = artifactsDir + "/" + jobID
        let final = dir + "/final.mp4"
        try await onOwnThread { try Self.prepare(dir) }

        if Self.fileSize(final) > 0 {
            log.info("reusing stored video", metadata: ["reel.path": "\(final)"])
        } else {
            try await fetch(videoURL, to: final, dir: dir, log: log)
        }

        var duration = providerDurationSeconds
        switch try await probeDuration(final, dir: dir, log: log) {
        case .some(let d) where d > 0: duration = d
        default: break
        }

        let thumb = dir + "/thumb.jpg"
        if Self.fileSize(thumb) <= 0 {
            let at = duration >= 1 || duration == 0 ? 0.5 : duration / 2
            try await produce(thumb, dir: dir, step: "thumbnail", log: log) { tmp in
                ["-ss", String(format: "%.3f", at), "-i", final, "-frames:v", "1", "-vf", "scale=320:-2", "-q:v", "4", tmp]
            }
        }
        let hls = dir + "/hls"
        if Self.fileSize(hls + "/index.m3u8") <= 0 {
            try await produceDirectory(hls, dir: dir, step: "HLS", log: log) { tmp in
                ["-i", final, "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
                 "-g", "48", "-sc_threshold", "0", "-c:a", "aac", "-b:a", "128k",
                 "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod",
                 "-hls_segment_filename", tmp + "/seg_%03d.ts", tmp + "/index.m3u8"]
            }
        }
        // The last frame: a continuation of this segment starts from it (image-to-video).
        let lastFrame = dir + "/" + Self.lastFrameFile
        if Self.fileSize(lastFrame) <= 0 {
            try await produce(lastFrame, dir: dir, step: "last frame", log: log) { tmp in
                ["-sseof", "-1", "-i", final, "-update", "1", "-vf", "scale='max(300,iw)':-2", tmp]
            }
        }
        let preview = dir + "/preview.mp4"
        if Self.fileSize(preview) <= 0 {
            try await produce(preview, dir: dir, step: "preview", log: log) { tmp in
                ["-i", final, "-vf", "scale=160:-2", "-c:v", "libx264", "-preset", "veryfast", "-crf", "30",
                 "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "48k", "-movflags", "+faststart", tmp]
            }
        }

        // Every run republishes: a crash halfway through publishing leaves nothing missing.
        let segments = ((try? FileManager.default.contentsOfDirectory(atPath: hls)) ?? [])
            .filter { $0.hasSuffix(".ts") }.sorted().map { "hls/" + $0 }
        let files = ["final.mp4", "thumb.jpg", "preview.mp4", Self.lastFrameFile] + segments + ["hls/index.m3u8"]
        do {
            try await store.publish(jobID: jobID, files: files, from: dir)
        } catch let e as Pipeline.StageFailure {
            throw e
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw Pipeline.StageFailure(code: "ARTIFACT_STORE_FAILED", message: "publishing the artifacts failed: \(error)",
                                        retryable: true)
        }

        log.info("post-processing done", metadata: ["reel.duration_s": "\(duration)"])
        return PostProcessed(finalVideoURL: url(jobID, "final.mp4"), thumbnailURL: url(jobID, "thumb.jpg"),
                             hlsPlaylistURL: url(jobID, "hls/index.m3u8"), previewVideoURL: url(jobID, "preview.mp4"),
                             durationSeconds: duration)
    }

    static let lastFrameFile = "last_frame.png"
    /// Kling's limit for an image sent as base64 (DESIGN §5).
    static let maxImageBytes = 10 << 20

    /// The last frame of `jobID`'s segment, as a provider should be given it: a URL when the
    /// artifacts are served at a public base URL, else the PNG as plain base64 (no `data:`
    /// prefix). Nil when there is none (made before last frames were kept, or removed).
    public func lastFrame(ofJob jobID: String) async -> SourceImage? {
        guard !jobID.isEmpty, !jobID.contains("/"), !jobID.hasPrefix(".") else { return nil }
        let path = artifactsDir + "/" + jobID + "/" + Self.lastFrameFile
        let size = Self.fileSize(path)
        let servedOverHTTP = publicBaseURL?.hasPrefix("http") == true
        if size > 0 {
            guard size <= Self.maxImageBytes else { return nil }
            if servedOverHTTP { return .url(url(jobID, Self.lastFrameFile)) }
            guard let data = try? await onOwnThread({ try Data(contentsOf: URL(fileURLWithPath: path)) }) else { return nil }
            return .base64(data.base64EncodedString())
        }
        // Made on another instance: the store has it.
        guard let bytes = try? await store.read(jobID: jobID, file: Self.lastFrameFile), !bytes.isEmpty,
              bytes.count <= Self.maxImageBytes else { return nil }
        if servedOverHTTP { return .url(url(jobID, Self.lastFrameFile)) }
        return .base64(Data(bytes).base64EncodedString())
    }

    func url(_ jobID: String, _ file: String) -> String { store.url(jobID: jobID, file: file) }

    // MARK: - Steps

    private func fetch(_ videoURL: String, to final: String, dir: String, log: Logger) async throws {
        let tmp = dir + "/.tmp-\(UUID().uuidString)-final.mp4"
        let lower = videoURL.lowercased()
        do {
            if lower.hasPrefix("http://") || lower.hasPrefix("https://") {
                let bytes = try await client.download(url: videoURL, to: tmp, maxBytes: maxVideoBytes,
                                                      timeout: downloadTimeout)
                log.info("downloaded provider video", metadata: ["reel.bytes": "\(bytes)"])
            } else if lower.hasPrefix("file://"), let source = URL(string: videoURL), source.isFileURL {
                try await onOwnThread { try FileManager.default.copyItem(atPath: source.path, toPath: tmp) }
            } else {
                throw Pipeline.StageFailure(code: "VIDEO_DOWNLOAD_FAILED",
                                            message: "unsupported video URL scheme: \(videoURL.prefix(200))",
                                            retryable: false)
            }
            guard Self.fileSize(tmp) > 0 else {
                throw Pipeline.StageFailure(code: "VIDEO_DOWNLOAD_FAILED", message: "the provider's video is empty",
                                            retryable: true)
            }
            try Self.rename(tmp, to: final)
        } catch let e as HTTPClientError where e.code == .badStatus && (e.message.hasSuffix(" 404") || e.message.hasSuffix(" 410")) {
            // The provider deleted the result (Kling: after 30 days): a retry needs a new task.
            try? FileManager.default.removeItem(atPath: tmp)
            throw Pipeline.StageFailure(code: "PROVIDER_RESULT_GONE", message: "the provider's video is gone: \(e)",
                                        retryable: true, newTaskOnRetry: true)
        } catch let e as HTTPClientError {
            try? FileManager.default.removeItem(atPath: tmp)
            throw Pipeline.StageFailure(code: "VIDEO_DOWNLOAD_FAILED", message: "download of the provider's video failed: \(e)",
                                        retryable: e.code != .tooLarge)
        } catch let e as Pipeline.StageFailure {
            try? FileManager.default.removeItem(atPath: tmp)
            throw e
        } catch is CancellationError {
            try? FileManager.default.removeItem(atPath: tmp)
            throw CancellationError()
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw Pipeline.StageFailure(code: "VIDEO_DOWNLOAD_FAILED", message: "storing the provider's video failed: \(error)",
                                        retryable: true)
        }
    }

    /// The duration in seconds; nil when ffprobe is not installed. A file ffprobe can't read
    /// is removed (so a retry downloads it again) and fails the stage.
    private func probeDuration(_ file: String, dir: String, log: Logger) async throws -> Double? {
        guard let ffprobe = Self.resolve(ffprobePath) else {
            log.warning("ffprobe not found; using the provider's duration", metadata: ["reel.tool": "\(ffprobePath)"])
            return nil
        }
        let run = try await runTool(ffprobe, ["-v", "error", "-show_entries", "format=duration",
                                              "-of", "default=noprint_wrappers=1:nokey=1", file], dir: dir)
        guard run.status == 0 else {
            if !run.timedOut { try? FileManager.default.removeItem(atPath: file) }
            throw Pipeline.StageFailure(code: "POSTPROCESS_FAILED",
                                        message: "the provider's video is not readable (ffprobe \(run.how)): \(run.stderrTail)",
                                        retryable: true)
        }
        return Double(run.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Runs ffmpeg with `args(tmpPath)` and renames the result to `target` once complete.
    private func produce(_ target: String, dir: String, step: String, log: Logger,
                         args: (String) -> [String]) async throws {
        let ext = (target as NSString).pathExtension
        let tmp = dir + "/.tmp-\(UUID().uuidString)." + ext
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        try await ffmpeg(args(tmp), step: step, dir: dir)
        guard Self.fileSize(tmp) > 0 else {
            throw Pipeline.StageFailure(code: "POSTPROCESS_FAILED", message: "ffmpeg made an empty \(step)", retryable: true)
        }
        try Self.rename(tmp, to: target)
        log.debug("made \(step)", metadata: ["reel.path": "\(target)"])
    }

    private func produceDirectory(_ target: String, dir: String, step: String, log: Logger,
                                  args: (String) -> [String]) async throws {
        let tmp = dir + "/.tmp-\(UUID().uuidString)-" + (target as NSString).lastPathComponent
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        try await ffmpeg(args(tmp), step: step, dir: dir)
        // A leftover incomplete directory (no playlist) makes way for the finished one.
        try? FileManager.default.removeItem(atPath: target)
        try Self.rename(tmp, to: target)
        log.debug("made \(step)", metadata: ["reel.path": "\(target)"])
    }

    private func ffmpeg(_ args: [String], step: String, dir: String) async throws {
        guard let exe = Self.resolve(ffmpegPath) else {
            throw Pipeline.StageFailure(code: "POSTPROCESS_FAILED", message: "ffmpeg not found (\(ffmpegPath))",
                                        retryable: true)
        }
        let run = try await runTool(exe, ["-nostdin", "-hide_banner", "-loglevel", "error", "-y"] + args, dir: dir)
        guard run.status == 0 else {
            throw Pipeline.StageFailure(code: "POSTPROCESS_FAILED",
                                        message: "ffmpeg \(step) failed (\(run.how)): \(run.stderrTail)", retryable: true)
        }
    }

    // MARK: - Child processes

    struct ToolRun: Sendable {
        var status: Int32
        var timedOut: Bool
        var stdout: String
        var stderrTail: String
        var how: String { timedOut ? "timed out" : "exit status \(status)" }
    }

    /// Runs `exe` with output captured in files (no pipe to drain, so no deadlock), killing it
    /// if it outlives `toolTimeout` or the task is cancelled.
    func runTool(_ exe: String, _ args: [String], dir: String) async throws -> ToolRun {
        let tag = dir + "/.tmp-\(UUID().uuidString)"
        let outPath = tag + ".out", errPath = tag + ".err"
        defer {
            try? FileManager.default.removeItem(atPath: outPath)
            try? FileManager.default.removeItem(atPath: errPath)
        }
        guard FileManager.default.createFile(atPath: outPath, contents: nil),
              FileManager.default.createFile(atPath: errPath, contents: nil),
              let out = FileHandle(forWritingAtPath: outPath), let err = FileHandle(forWritingAtPath: errPath) else {
            throw Pipeline.StageFailure(code: "POSTPROCESS_FAILED", message: "cannot create files in \(dir)", retryable: true)
        }
        defer { try? out.close(); try? err.close() }

        let child = ChildProcess(Process())
        let p = child.process
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = out
        p.standardError = err

        let timeout = toolTimeout
        try Task.checkCancellation()
        let status: Int32 = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Int32, any Error>) in
                p.terminationHandler = { proc in cont.resume(returning: proc.terminationStatus) }
                do {
                    try p.run()
                } catch {
                    p.terminationHandler = nil
                    cont.resume(throwing: Pipeline.StageFailure(
                        code: "POSTPROCESS_FAILED", message: "cannot start \(exe): \(error)", retryable: true))
                    return
                }
                child.startWatchdog(after: timeout)
            }
        } onCancel: {
            child.kill()
        }
        child.stopWatchdog()
        try Task.checkCancellation()

        let stdout = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        let tail = String(stderr.trimmingCharacters(in: .whitespacesAndNewlines).suffix(800))
        return ToolRun(status: status, timedOut: child.timedOut, stdout: stdout, stderrTail: tail.isEmpty ? "(no output)" : tail)
    }

    // MARK: - Files

    /// Creates the job's directory and clears temp files a crashed attempt left behind.
    /// (One worker holds a job's lease at a time, so no one else is writing them.)
    private static func prepare(_ dir: String) throws {
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw Pipeline.StageFailure(code: "POSTPROCESS_FAILED", message: "cannot create \(dir): \(error)",
                                        retryable: true)
        }
        for name in (try? fm.contentsOfDirectory(atPath: dir)) ?? [] where name.hasPrefix(".tmp-") {
            try? fm.removeItem(atPath: dir + "/" + name)
        }
    }

    static func fileSize(_ path: String) -> Int64 {
        var st = stat()
        return stat(path, &st) == 0 ? Int64(st.st_size) : -1
    }

    private static func rename(_ from: String, to: String) throws {
        // rename(2) is atomic and replaces `to`: readers see the old file or the whole new one.
        guard Foundation.rename(from, to) == 0 else {
            throw Pipeline.StageFailure(code: "POSTPROCESS_FAILED",
                                        message: "rename \(from) → \(to): \(String(cString: strerror(errno)))",
                                        retryable: true)
        }
    }

    /// An executable path: as given when it has a slash, else looked up on PATH.
    static func resolve(_ tool: String) -> String? {
        let fm = FileManager.default
        if tool.contains("/") { return fm.isExecutableFile(atPath: tool) ? tool : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") where !dir.isEmpty {
            let candidate = dir + "/" + tool
            if fm.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}

/// A child process and its timeout watchdog, shared between the awaiting task, the
/// cancellation handler and the watchdog.
final class ChildProcess: @unchecked Sendable {
    // Safety: `process` is configured before `run()` and afterwards only asked `isRunning`,
    // `processIdentifier` and `terminate()`, which Foundation makes thread-safe; the other
    // state is behind `state`'s lock.
    let process: Process
    private struct State {
        var watchdog: Task<Void, Never>?
        var timedOut = false
    }
    private let state = Mutex(State())

    init(_ process: Process) { self.process = process }

    var timedOut: Bool { state.withLock { $0.timedOut } }

    func startWatchdog(after timeout: Duration) {
        let task = Task { [self] in
            do { try await Task.sleep(for: timeout) } catch { return }
            state.withLock { $0.timedOut = true }
            kill()
        }
        state.withLock { $0.watchdog = task }
    }

    func stopWatchdog() { state.withLock { $0.watchdog?.cancel() } }

    /// SIGKILL: the tools write only temp files, so nothing is lost, and a child spawned from
    /// a cooperative-pool thread inherits that thread's blocked signals, SIGTERM included.
    func kill() {
        guard process.isRunning else { return }
        _ = Foundation.kill(process.processIdentifier, SIGKILL)
    }
}

/// Runs blocking file work on a thread of its own, off the cooperative pool.
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { cont in
        Thread { cont.resume(with: Result(catching: body)) }.start()
    }
}
