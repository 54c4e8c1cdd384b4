import Foundation

/// Where a job's finished artifacts live and how the API names them (DESIGN §6): the local
/// directory (`LocalArtifactStore`) or an S3-compatible bucket (`S3ArtifactStore`), so that
/// several reeld instances serve the same media.
///
/// `PostProcessor` always works in a local directory; `publish` then makes the finished
/// files durable in the store. Files are paths relative to the job (`hls/index.m3u8`).
public protocol ArtifactStore: Sendable {
    /// The URL the API gives for `file` of `jobID`: never a bare path.
    func url(jobID: String, file: String) -> String
    /// Makes `files` (relative to `dir`, the job's local directory) durable in the store.
    /// Idempotent: publishing again replaces what is there with the same bytes.
    func publish(jobID: String, files: [String], from dir: String) async throws
    /// The stored bytes of `file`, or nil when there is no such artifact.
    func read(jobID: String, file: String) async throws -> [UInt8]?
    /// The job and file an API URL of this store names, or nil when it is not one of ours.
    func locate(_ url: String) -> (jobID: String, file: String)?
    /// Removes the job's artifacts except the files in `keeping` (retention); answers the
    /// files and bytes removed. Idempotent: nothing left to remove is not an error.
    func prune(jobID: String, keeping: Set<String>) async throws -> (files: Int, bytes: Int64)
}

extension ArtifactStore {
    /// A job id or artifact file name that can't escape its job's directory or key prefix.
    static func isSafe(jobID: String, file: String) -> Bool {
        guard !jobID.isEmpty, !jobID.hasPrefix("."), !jobID.contains("/") else { return false }
        let parts = file.split(separator: "/", omittingEmptySubsequences: false)
        return !parts.isEmpty && parts.allSatisfy { !$0.isEmpty && !$0.hasPrefix(".") }
            && !(jobID + file).contains("\0") && !(jobID + file).contains("\\")
    }

}

/// Strips trailing slashes; an empty base URL is none.
func normalizedBaseURL(_ base: String?) -> String? {
    var base = base.flatMap { $0.isEmpty ? nil : $0 }
    while base?.hasSuffix("/") == true { base!.removeLast() }
    return base
}
