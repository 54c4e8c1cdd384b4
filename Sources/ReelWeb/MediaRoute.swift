import Foundation
import Hummingbird
import HummingbirdWebSocket
import ReelCore
import Synchronization

/// `GET /v1/media?url=<artifact url>`: lets the page show artifacts that a browser can't load
/// by their own URL. `file://` URLs inside `--artifacts-dir` are served to callers who may see
/// the job (the first path component is the job id); `sim://` URLs of the simulated provider
/// get one short test-pattern clip and thumbnail, rendered once with ffmpeg. `s3://` URLs of
/// the shared artifact store are read through it, under the same tenancy rule.
struct MediaRoute: Sendable {
    let api: JobAPI
    let artifactsDir: String?
    let artifactReader: JobAPI.ArtifactReader?
    let simulated = SimulatedMedia()

    func handle(_ req: Request, _ ctx: BasicWebSocketRequestContext) async throws -> Response {
        let caller = try await api.caller(req, allowQueryToken: true)
        guard let raw = req.uri.queryParameters["url"].map(String.init), !raw.isEmpty else {
            throw ReelError.invalid("url", "must be an artifact URL")
        }
        if raw.hasPrefix("sim://") {
            let ext = (raw as NSString).pathExtension.lowercased()
            guard ext == "mp4" || ext == "jpg" else { throw ReelError(.notFound, "no simulated media for \(raw.prefix(200))") }
            let bytes = try await simulated.file(ext)
            return Self.file(bytes, path: "x." + ext)
        }
        if raw.hasPrefix("s3://") {
            guard let found = artifactReader?(raw) else {
                throw ReelError(.notFound, "no media at \(raw.prefix(200)): not in this server's artifact store")
            }
            _ = try await api.operations.get(id: found.jobID, caller: caller)  // tenancy: NOT_FOUND for others
            guard let bytes = try await found.read() else { throw ReelError(.notFound, "no media at \(raw.prefix(200))") }
            return Self.file(bytes, path: raw)
        }
        guard raw.hasPrefix("file://"), let dir = artifactsDir, let url = URL(string: raw), url.isFileURL else {
            throw ReelError(.notFound, "no media at \(raw.prefix(200)): only file:// artifacts under --artifacts-dir are served")
        }
        let root = URL(fileURLWithPath: dir).standardizedFileURL.resolvingSymlinksInPath().path
        let path = url.standardizedFileURL.resolvingSymlinksInPath().path
        guard path.hasPrefix(root + "/") else { throw ReelError(.notFound, "no media at \(raw.prefix(200))") }
        let jobID = path.dropFirst(root.count + 1).split(separator: "/").first.map(String.init) ?? ""
        _ = try await api.operations.get(id: jobID, caller: caller)  // tenancy: NOT_FOUND for others
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ReelError(.notFound, "no media at \(raw.prefix(200))")
        }
        return Self.file(Array(data), path: path)
    }

    static func file(_ bytes: [UInt8], path: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = ArtifactMediaType.of(path)
        headers[.cacheControl] = "private, max-age=3600"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}

/// The simulated provider's "video": a 3 s test pattern and its first frame, made on first use.
final class SimulatedMedia: Sendable {
    private let cache = Mutex<[String: [UInt8]]>([:])

    func file(_ ext: String) async throws -> [UInt8] {
        if let hit = cache.withLock({ $0[ext] }) { return hit }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reel-sim-media-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("sim.\(ext)").path
        let source = ["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=24:duration=3"]
        let args = ext == "jpg"
            ? ["-hide_banner", "-loglevel", "error", "-y"] + source + ["-frames:v", "1", out]
            : ["-hide_banner", "-loglevel", "error", "-y"] + source + ["-pix_fmt", "yuv420p", "-movflags", "+faststart", out]
        let status = try await Self.run("ffmpeg", args)
        guard status == 0, let data = FileManager.default.contents(atPath: out) else {
            throw ReelError(.unavailable, "could not render simulated media (is ffmpeg installed?)")
        }
        let bytes = Array(data)
        cache.withLock { $0[ext] = bytes }
        return bytes
    }

    /// Runs a program found on PATH; its exit status, awaited without blocking a thread.
    static func run(_ program: String, _ args: [String]) async throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [program] + args
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        return try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Int32, any Error>) in
            p.terminationHandler = { cont.resume(returning: $0.terminationStatus) }
            do { try p.run() } catch { p.terminationHandler = nil; cont.resume(throwing: error) }
        }
    }
}
