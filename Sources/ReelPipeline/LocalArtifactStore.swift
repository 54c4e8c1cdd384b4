import Foundation

/// The artifacts are the post-processor's own directory: publishing is a no-op. URLs are
/// `file://…`, or under `--artifacts-base-url` when something serves the directory.
public struct LocalArtifactStore: ArtifactStore {
    public let directory: String
    public let publicBaseURL: String?

    public init(directory: String, publicBaseURL: String? = nil) {
        self.directory = URL(fileURLWithPath: directory).standardizedFileURL.path
        self.publicBaseURL = normalizedBaseURL(publicBaseURL)
    }

    public func url(jobID: String, file: String) -> String {
        if let publicBaseURL { return publicBaseURL + "/" + jobID + "/" + file }
        return URL(fileURLWithPath: directory + "/" + jobID + "/" + file).absoluteString
    }

    public func publish(jobID: String, files: [String], from dir: String) async throws {}

    public func read(jobID: String, file: String) async throws -> [UInt8]? {
        guard Self.isSafe(jobID: jobID, file: file) else { return nil }
        let path = directory + "/" + jobID + "/" + file
        return try await onOwnThread { FileManager.default.contents(atPath: path).map { Array($0) } }
    }

    public func locate(_ url: String) -> (jobID: String, file: String)? {
        guard let u = URL(string: url), u.isFileURL else { return nil }
        let root = URL(fileURLWithPath: directory).resolvingSymlinksInPath().path
        let path = u.standardizedFileURL.resolvingSymlinksInPath().path
        guard path.hasPrefix(root + "/") else { return nil }
        let rest = path.dropFirst(root.count + 1)
        guard let slash = rest.firstIndex(of: "/") else { return nil }
        let (job, file) = (String(rest[..<slash]), String(rest[rest.index(after: slash)...]))
        return Self.isSafe(jobID: job, file: file) ? (job, file) : nil
    }
}
