import ReelCore

/// The JSON form of DESIGN §2's messages, as protobuf's JSON mapping writes them: field names
/// in lowerCamelCase, enums by their proto names (`JOB_STATUS_QUEUED`). Every field is written
/// (defaults too); `result` and `error` only when set; int64 fields as JSON numbers (all fit a
/// double exactly). Input accepts lowerCamelCase or the proto's snake_case names, enums by proto
/// name, short name (`scene_creation`) or number, and integers as numbers or numeric strings.
enum JobJSON {
    // MARK: enums

    static func protoName(_ v: JobType) -> String { "JOB_TYPE_" + v.name.uppercased() }
    static func protoName(_ v: Tier) -> String { "TIER_" + v.name.uppercased() }
    static func protoName(_ v: Quality) -> String { "QUALITY_" + v.name.uppercased() }
    static func protoName(_ v: JobStatus) -> String { "JOB_STATUS_" + v.name.uppercased() }
    static func protoName(_ v: Stage) -> String { "STAGE_" + v.name.uppercased() }

    static func parseEnum<E: NamedEnum>(_ raw: String, prefix: String, field: String, as: E.Type) throws(ReelError) -> E
    where E.RawValue == Int32 {
        var s = raw
        if s.hasPrefix(prefix) { s.removeFirst(prefix.count) }
        if let e = E(name: s.lowercased()) { return e }
        if let n = Int32(s), let e = E(rawValue: n) { return e }
        throw .invalid(field, "unknown value '\(raw.prefix(64))'")
    }

    static func enumValue<E: NamedEnum>(_ v: JSONValue, prefix: String, field: String, as t: E.Type) throws(ReelError) -> E
    where E.RawValue == Int32 {
        switch v {
        case .string(let s): return try parseEnum(s, prefix: prefix, field: field, as: t)
        case .number(let n):
            guard let i = Int32(n), let e = E(rawValue: i) else { throw .invalid(field, "unknown value \(n.prefix(32))") }
            return e
        case .null: return E(rawValue: 0)!
        default: throw .invalid(field, "must be an enum name or number, not \(v.typeName)")
        }
    }

    // MARK: writing

    static func write(_ job: Job, into w: inout JSONWriter) {
        w.beginObject()
        w.field("id", job.id)
        w.field("userId", job.userID)
        w.field("sceneId", job.sceneID)
        w.field("type", protoName(job.type))
        w.field("status", protoName(job.status))
        w.field("stage", protoName(job.stage))
        w.field("progress", job.progress)
        w.field("message", job.message)
        w.field("inputText", job.inputText)
        w.field("bibleVersion", job.bibleVersion)
        w.key("config")
        w.beginObject()
        w.field("targetDurationSeconds", job.config.targetDurationSeconds)
        w.field("quality", protoName(job.config.quality))
        w.field("model", job.config.model)
        w.key("styleOverrides")
        w.beginObject()
        for (k, v) in job.config.styleOverrides.sorted(by: { $0.key < $1.key }) { w.field(k, v) }
        w.endObject()
        w.endObject()
        let a = job.artifacts
        w.key("artifacts")
        w.beginObject()
        w.field("expandedScript", a.expandedScript)
        w.field("validationResult", a.validationResult)
        w.field("previewVideoUrl", a.previewVideoURL)
        w.field("finalVideoUrl", a.finalVideoURL)
        w.field("thumbnailUrl", a.thumbnailURL)
        w.field("hlsPlaylistUrl", a.hlsPlaylistURL)
        w.field("providerJobId", a.providerJobID)
        w.field("providerRequestId", a.providerRequestID)
        w.endObject()
        if let r = job.result {
            w.key("result")
            w.beginObject()
            w.field("segmentId", r.segmentID)
            w.field("videoUrl", r.videoURL)
            w.field("thumbnailUrl", r.thumbnailURL)
            w.field("durationSeconds", r.durationSeconds)
            w.field("updatedBibleVersion", r.updatedBibleVersion)
            w.endObject()
        }
        if let e = job.error {
            w.key("error")
            w.beginObject()
            w.field("code", e.code)
            w.field("message", e.message)
            w.field("details", e.details)
            w.field("stage", protoName(e.stage))
            w.endObject()
        }
        w.field("retryCount", job.retryCount)
        w.field("maxRetries", job.maxRetries)
        w.field("idempotencyKey", job.idempotencyKey)
        w.field("tier", protoName(job.tier))
        w.field("deadLettered", job.deadLettered)
        w.field("workerId", job.workerID)
        w.field("createdAtUnixMs", job.createdAtUnixMs)
        w.field("startedAtUnixMs", job.startedAtUnixMs)
        w.field("completedAtUnixMs", job.completedAtUnixMs)
        w.field("lastEventSeq", job.lastEventSeq)
        w.endObject()
    }

    static func encode(_ job: Job) -> String {
        var w = JSONWriter()
        write(job, into: &w)
        return w.text
    }

    static func write(_ e: JobEvent, into w: inout JSONWriter) {
        w.beginObject()
        w.field("jobId", e.jobID)
        w.field("seq", e.seq)
        w.field("status", protoName(e.status))
        w.field("stage", protoName(e.stage))
        w.field("progress", e.progress)
        w.field("message", e.message)
        w.field("atUnixMs", e.atUnixMs)
        w.field("deadLettered", e.deadLettered)
        if let s = e.snapshot {
            w.key("snapshot")
            write(s, into: &w)
        }
        w.endObject()
    }

    static func encode(_ e: JobEvent) -> String {
        var w = JSONWriter()
        write(e, into: &w)
        return w.text
    }

    static func encode(_ page: JobPage) -> String {
        var w = JSONWriter()
        w.beginObject()
        w.key("jobs")
        w.beginArray()
        for j in page.jobs { write(j, into: &w) }
        w.endArray()
        w.field("nextPageToken", page.nextPageToken)
        w.endObject()
        return w.text
    }

    // MARK: reading

    /// `CreateJobRequest` from a JSON object. Types are checked here; values by ReelCore.
    static func createJobInput(_ v: JSONValue) throws(ReelError) -> CreateJobInput {
        var fields = try Fields(v, what: "request body")
        var input = CreateJobInput(userID: "", sceneID: "", type: .unspecified, inputText: "")
        input.userID = try fields.string("user_id", "userId") ?? ""
        input.sceneID = try fields.string("scene_id", "sceneId") ?? ""
        if let t = fields.take("type", "type") { input.type = try enumValue(t, prefix: "JOB_TYPE_", field: "type", as: JobType.self) }
        input.inputText = try fields.string("input_text", "inputText") ?? ""
        input.idempotencyKey = try fields.string("idempotency_key", "idempotencyKey") ?? ""
        if let t = fields.take("tier", "tier") { input.tier = try enumValue(t, prefix: "TIER_", field: "tier", as: Tier.self) }
        input.maxRetries = try fields.int32("max_retries", "maxRetries") ?? 0
        if let c = fields.take("config", "config"), c != .null {
            var cf = try Fields(c, what: "config")
            input.config.targetDurationSeconds = try cf.int32("target_duration_seconds", "targetDurationSeconds", prefix: "config.") ?? 0
            if let q = cf.take("quality", "quality") {
                input.config.quality = try enumValue(q, prefix: "QUALITY_", field: "config.quality", as: Quality.self)
            }
            input.config.model = try cf.string("model", "model", prefix: "config.") ?? ""
            if let so = cf.take("style_overrides", "styleOverrides"), so != .null {
                guard case .object(let m) = so else { throw .invalid("config.style_overrides", "must be an object of strings") }
                for (k, val) in m {
                    guard case .string(let s) = val else { throw .invalid("config.style_overrides", "values must be strings") }
                    input.config.styleOverrides[k] = s
                }
            }
            try cf.rejectUnknown(prefix: "config.")
        }
        try fields.rejectUnknown(prefix: "")
        return input
    }

    /// `CancelJobRequest.reason` from an optional body (`{}` or `{"reason": "…"}`).
    static func cancelReason(_ v: JSONValue?) throws(ReelError) -> String {
        guard let v else { return "" }
        var fields = try Fields(v, what: "request body")
        let reason = try fields.string("reason", "reason") ?? ""
        try fields.rejectUnknown(prefix: "")
        return reason
    }

    /// A JSON object's members, taken one by one so that leftovers can be reported as unknown.
    struct Fields {
        var members: [String: JSONValue]

        init(_ v: JSONValue, what: String) throws(ReelError) {
            guard case .object(let m) = v else { throw ReelError(.invalidArgument, "\(what) must be a JSON object, not \(v.typeName)") }
            members = m
        }

        mutating func take(_ snake: String, _ camel: String) -> JSONValue? {
            if let v = members.removeValue(forKey: camel) { return v }
            return members.removeValue(forKey: snake)
        }

        mutating func string(_ snake: String, _ camel: String, prefix: String = "") throws(ReelError) -> String? {
            guard let v = take(snake, camel) else { return nil }
            switch v {
            case .string(let s): return s
            case .null: return nil
            default: throw .invalid(prefix + snake, "must be a string, not \(v.typeName)")
            }
        }

        mutating func int32(_ snake: String, _ camel: String, prefix: String = "") throws(ReelError) -> Int32? {
            guard let v = take(snake, camel) else { return nil }
            switch v {
            case .number(let n), .string(let n):
                guard let i = Int32(n) else { throw .invalid(prefix + snake, "must be a 32-bit integer") }
                return i
            case .null: return nil
            default: throw .invalid(prefix + snake, "must be an integer, not \(v.typeName)")
            }
        }

        func rejectUnknown(prefix: String) throws(ReelError) {
            if let k = members.keys.sorted().first {
                throw ReelError(.invalidArgument, "unknown field '\(prefix)\(k.prefix(64))'", field: prefix + k)
            }
        }
    }
}
