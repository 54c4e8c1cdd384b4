import Foundation

/// Kling's JSON shapes (DESIGN §5), as its published API documents them.
enum KlingWire {
    /// Every answer: `{code, message, request_id, data}`; `code` 0 is success.
    struct Envelope<T: Decodable>: Decodable {
        var code: Int
        var message: String?
        var requestId: String?
        var data: T?
    }

    /// The body of `POST /v1/videos/text2video` and `/image2video`.
    struct CreateBody: Encodable {
        var modelName: String
        var prompt: String?
        var negativePrompt: String?
        var duration: String
        var aspectRatio: String?
        var mode: String
        var image: String?
        var callbackUrl: String?
        var externalTaskId: String
    }

    /// A task, in query answers, create answers and callbacks (the callback's bare body).
    struct Task: Decodable {
        var taskId: String
        var taskStatus: String
        var taskStatusMsg: String?
        var taskInfo: TaskInfo?
        var taskResult: TaskResult?
        var createdAt: Int64?
        var updatedAt: Int64?
        var finalUnitDeduction: String?

        struct TaskInfo: Decodable { var externalTaskId: String? }
        struct TaskResult: Decodable { var videos: [Video]? }
        struct Video: Decodable {
            var id: String?
            var url: String
            var duration: String?
        }
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return try d.decode(type, from: Data(bytes))
    }

    static func encode(_ value: some Encodable) throws -> [UInt8] {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = .sortedKeys
        return [UInt8](try e.encode(value))
    }
}
