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

    public func prune(jobID: String, keeping: Set<String>) async throws -> (files: Int, bytes: Int64) {
        guard Self.isSafe(jobID: jobID, file: "x") else { return (0, 0) }
        let root = directory + "/" + jobID
        return try await onOwnThread {
            let fm = FileManager.default
            guard let names = fm.enumerator(atPath: root)?.allObjects as? [String] else { return (0, 0) }
            var files = 0
            var bytes: Int64 = 0
            var dirs: [String] = []
            for name in names {
                let path = root + "/" + name
                var isDir: ObjCBool = false
                guard fm.fileExists(atPath: path, isDirectory: &isDir) else { continue }
                if isDir.boolValue { dirs.append(path); continue }
                if keeping.contains(name) { continue }
                let size = (try? fm.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value ?? 0
                if (try? fm.removeItem(atPath: path)) != nil { files += 1; bytes += size }
            }
            // Directories left empty, deepest first, then the job's own.
            for dir in dirs.sorted(by: { $0.count > $1.count }) + [root] {
                if (try? fm.contentsOfDirectory(atPath: dir))?.isEmpty == true { try? fm.removeItem(atPath: dir) }
            }
            return (files, bytes)
        }
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
