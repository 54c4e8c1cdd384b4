import ReelCore

// Requests in protobuf's JSON mapping, read leniently where the mapping is lenient (snake_case
// or lowerCamelCase names, enums by proto name, short name or number, integers as numbers or
// numeric strings, null as absent) and strictly everywhere else (unknown fields, wrong types).
// Types are checked here; values by ReelCore's `Validate`. Errors are `ReelError`s naming the field.

/// `CreateJobRequest`.
public struct CreateJobRequestJSON: Decodable, Sendable {
    public var input: CreateJobInput

    public init(from decoder: any Decoder) throws {
        var f = try JSONFields(decoder, what: "request body")
        input = CreateJobInput(userID: try f.string("user_id", "userId") ?? "",
                               sceneID: try f.string("scene_id", "sceneId") ?? "",
                               type: try f.enumValue("type", "type", as: JobType.self) ?? .unspecified,
                               inputText: try f.string("input_text", "inputText") ?? "")
        input.idempotencyKey = try f.string("idempotency_key", "idempotencyKey") ?? ""
        input.tier = try f.enumValue("tier", "tier", as: Tier.self) ?? .unspecified
        input.maxRetries = try f.int32("max_retries", "maxRetries") ?? 0
        input.config = try f.message("config", "config", as: JobConfigRequestJSON.self)?.config ?? JobConfig()
        input.runAtUnixMs = try f.int64("run_at_unix_ms", "runAtUnixMs") ?? 0
        input.deadlineUnixMs = try f.int64("deadline_unix_ms", "deadlineUnixMs") ?? 0
        input.webhookURL = try f.string("webhook_url", "webhookUrl") ?? ""
        try f.rejectUnknown()
    }
}

/// `JobConfig` inside a `CreateJobRequest`.
struct JobConfigRequestJSON: Decodable {
    var config = JobConfig()

    init(from decoder: any Decoder) throws {
        var f = try JSONFields(decoder, what: "config", prefix: "config.")
        config.targetDurationSeconds = try f.int32("target_duration_seconds", "targetDurationSeconds") ?? 0
        config.quality = try f.enumValue("quality", "quality", as: Quality.self) ?? .unspecified
        config.model = try f.string("model", "model") ?? ""
        config.styleOverrides = try f.stringMap("style_overrides", "styleOverrides") ?? [:]
        try f.rejectUnknown()
    }
}

/// `CancelJobRequest`'s body: `{}` or `{"reason": "…"}` (the id rides in the path).
public struct CancelJobRequestJSON: Decodable, Sendable {
    public var reason: String

    public init(from decoder: any Decoder) throws {
        var f = try JSONFields(decoder, what: "request body")
        reason = try f.string("reason", "reason") ?? ""
        try f.rejectUnknown()
    }
}

/// `RetryJobRequest`'s body: nothing but the id, which rides in the path, so `{}`.
public struct RetryJobRequestJSON: Decodable, Sendable {
    public init(from decoder: any Decoder) throws {
        try JSONFields(decoder, what: "request body").rejectUnknown()
    }
}
