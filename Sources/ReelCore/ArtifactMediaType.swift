/// The media types of the artifacts the post-processor makes, for the store that keeps them and
/// the route that serves them.
public enum ArtifactMediaType {
    private static let byExtension = [
        "mp4": "video/mp4", "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png",
        "m3u8": "application/vnd.apple.mpegurl", "ts": "video/mp2t", "webm": "video/webm",
    ]

    /// The media type of a file by its extension; `application/octet-stream` when unknown.
    public static func of(_ path: String) -> String {
        guard let dot = path.lastIndex(of: "."), !path[dot...].contains("/") else { return "application/octet-stream" }
        return byExtension[path[path.index(after: dot)...].lowercased()] ?? "application/octet-stream"
    }
}
