import Foundation

/// Runway's JSON shapes (DESIGN §5, API version `2024-11-06`), as its published API documents
/// them: camelCase keys, as they are sent and received.
enum RunwayWire {
    /// The body of `POST /v1/image_to_video`.
    struct ImageToVideoBody: Encodable {
        var model: String
        /// An https URL, or a `data:image/png;base64,…` URI of at most 5 MB.
        var promptImage: String
        var promptText: String?
        var ratio: String
        var duration: Int
    }

    /// The body of `POST /v1/text_to_video`.
    struct TextToVideoBody: Encodable {
        var model: String
        var promptText: String
        var ratio: String
        var duration: Int
    }

    /// A create's answer: `{id}`.
    struct Created: Decodable { var id: String }

    /// `GET /v1/tasks/{id}`: `progress` only while RUNNING, `output` only on SUCCEEDED,
    /// `failure` and `failureCode` only on FAILED.
    struct Task: Decodable {
        var id: String
        var status: String
        var createdAt: String?
        var progress: Double?
        var output: [String]?
        var failure: String?
        var failureCode: String?
    }

    /// An error answer: `{"error": "…"}` (validation errors may add `issues`).
    struct ErrorBody: Decodable { var error: String? }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try JSONDecoder().decode(type, from: Data(bytes))
    }

    static func encode(_ value: some Encodable) throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return [UInt8](try e.encode(value))
    }

    /// `2024-06-27T19:49:32.334Z` (fractional seconds optional) in Unix milliseconds; 0 when unreadable.
    static func unixMs(_ iso: String?) -> Int64 {
        guard let iso, !iso.isEmpty else { return 0 }
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = f.date(from: iso) { return Int64(d.timeIntervalSince1970 * 1000) }
        f.formatOptions = [.withInternetDateTime]
        if let d = f.date(from: iso) { return Int64(d.timeIntervalSince1970 * 1000) }
        return 0
    }
}
