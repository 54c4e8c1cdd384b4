/// Requests as the domain sees them, and their validation (DESIGN §2 "Rules").
public struct CreateJobInput: Sendable, Equatable {
    public var userID: String
    public var sceneID: String
    public var type: JobType
    public var inputText: String
    public var config: JobConfig
    public var idempotencyKey: String
    public var tier: Tier
    public var maxRetries: Int32

    public init(userID: String, sceneID: String, type: JobType, inputText: String, config: JobConfig = JobConfig(),
                idempotencyKey: String = "", tier: Tier = .unspecified, maxRetries: Int32 = 0) {
        self.userID = userID; self.sceneID = sceneID; self.type = type; self.inputText = inputText
        self.config = config; self.idempotencyKey = idempotencyKey; self.tier = tier; self.maxRetries = maxRetries
    }
}

/// A create request that passed validation, with defaults filled in and its key derived.
public struct NewJob: Sendable, Equatable {
    public let userID: String
    public let sceneID: String
    public let type: JobType
    public let inputText: String
    public let config: JobConfig
    public let idempotencyKey: String
    public let tier: Tier
    public let maxRetries: Int32
    /// Set by the service from the caller's key; idempotency keys are per tenant and user.
    public var tenantID: String = ""
}

public enum JobLimits {
    public static let maxInputCharacters = 10_000
    public static let maxIdentifierCharacters = 128
    public static let maxIdempotencyKeyCharacters = 256
    public static let maxRetries: Int32 = 20
    public static let defaultMaxRetries: Int32 = 3
    public static let defaultPageSize: Int32 = 50
    public static let maxPageSize: Int32 = 500
    public static let maxCreatesPerCall = 1000
}

extension CreateJobInput {
    public func validated() throws(ReelError) -> NewJob {
        try Validate.identifier(userID, field: "user_id")
        try Validate.identifier(sceneID, field: "scene_id")
        if inputText.isEmpty { throw .invalid("input_text", "must not be empty") }
        if inputText.unicodeScalars.count > JobLimits.maxInputCharacters {
            throw .invalid("input_text", "must be at most \(JobLimits.maxInputCharacters) characters")
        }
        if type == .unspecified { throw .invalid("type", "must be JOB_TYPE_SCENE_CREATION or JOB_TYPE_CONTINUATION") }
        if maxRetries < 0 || maxRetries > JobLimits.maxRetries {
            throw .invalid("max_retries", "must be between 0 and \(JobLimits.maxRetries)")
        }
        if idempotencyKey.unicodeScalars.count > JobLimits.maxIdempotencyKeyCharacters {
            throw .invalid("idempotency_key", "must be at most \(JobLimits.maxIdempotencyKeyCharacters) characters")
        }
        if config.targetDurationSeconds < 0 || config.targetDurationSeconds > 600 {
            throw .invalid("config.target_duration_seconds", "must be between 0 and 600")
        }
        if config.model.unicodeScalars.count > 128 { throw .invalid("config.model", "must be at most 128 characters") }
        if config.styleOverrides.count > 64 { throw .invalid("config.style_overrides", "at most 64 entries") }
        for (k, v) in config.styleOverrides where k.unicodeScalars.count > 128 || v.unicodeScalars.count > 1024 {
            throw .invalid("config.style_overrides", "keys are at most 128 and values 1024 characters")
        }
        return NewJob(
            userID: userID, sceneID: sceneID, type: type, inputText: inputText, config: config,
            idempotencyKey: idempotencyKey.isEmpty
                ? IdempotencyKey.derive(userID: userID, sceneID: sceneID, inputText: inputText) : idempotencyKey,
            tier: tier == .unspecified ? .standard : tier,
            maxRetries: maxRetries == 0 ? JobLimits.defaultMaxRetries : maxRetries)
    }
}

public enum IdempotencyKey {
    /// Seed 002: `idem_` + the first 32 hex digits of sha256("user_id:scene_id:input_text").
    public static func derive(userID: String, sceneID: String, inputText: String) -> String {
        "idem_" + Hashing.sha256Hex("\(userID):\(sceneID):\(inputText)").prefix(32)
    }
}

public struct ListJobsInput: Sendable, Equatable {
    public var userID: String
    public var sceneID: String
    public var status: JobStatus
    public var deadLetteredOnly: Bool
    public var pageSize: Int32
    public var pageToken: String

    public init(userID: String = "", sceneID: String = "", status: JobStatus = .unspecified,
                deadLetteredOnly: Bool = false, pageSize: Int32 = 0, pageToken: String = "") {
        self.userID = userID; self.sceneID = sceneID; self.status = status
        self.deadLetteredOnly = deadLetteredOnly; self.pageSize = pageSize; self.pageToken = pageToken
    }

    /// Checks the filter and returns the effective page size.
    public func validatedPageSize() throws(ReelError) -> Int32 {
        if !userID.isEmpty { try Validate.identifier(userID, field: "user_id") }
        if !sceneID.isEmpty { try Validate.identifier(sceneID, field: "scene_id") }
        if pageSize < 0 || pageSize > JobLimits.maxPageSize {
            throw .invalid("page_size", "must be between 0 and \(JobLimits.maxPageSize)")
        }
        return pageSize == 0 ? JobLimits.defaultPageSize : pageSize
    }
}

public struct JobPage: Sendable, Equatable {
    public var jobs: [Job]
    public var nextPageToken: String
    public init(jobs: [Job], nextPageToken: String) { self.jobs = jobs; self.nextPageToken = nextPageToken }
}

public enum Validate {
    /// `CreateJobs`: 1 to `JobLimits.maxCreatesPerCall` jobs.
    public static func batch(count: Int) throws(ReelError) {
        if count == 0 { throw .invalid("jobs", "must not be empty") }
        if count > JobLimits.maxCreatesPerCall {
            throw .invalid("jobs", "must be at most \(JobLimits.maxCreatesPerCall) per call, got \(count)")
        }
    }

    /// `user_id`/`scene_id`: 1–128 characters of `[A-Za-z0-9_.-]`.
    public static func identifier(_ s: String, field: String) throws(ReelError) {
        if s.isEmpty { throw .invalid(field, "must not be empty") }
        if s.unicodeScalars.count > JobLimits.maxIdentifierCharacters {
            throw .invalid(field, "must be at most \(JobLimits.maxIdentifierCharacters) characters")
        }
        for u in s.unicodeScalars {
            let ok = ("a"..."z").contains(u) || ("A"..."Z").contains(u) || ("0"..."9").contains(u)
                || u == "_" || u == "." || u == "-"
            if !ok { throw .invalid(field, "may contain only A-Z a-z 0-9 _ . -") }
        }
    }

    /// A job id: a canonical UUID (8-4-4-4-12 hex digits). Returns it lowercased.
    @discardableResult
    public static func jobID(_ s: String, field: String = "id") throws(ReelError) -> String {
        if s.isEmpty { throw .invalid(field, "must not be empty") }
        let u = Array(s.utf8)
        guard u.count == 36 else { throw .invalid(field, "must be a UUID") }
        for (i, c) in u.enumerated() {
            if i == 8 || i == 13 || i == 18 || i == 23 {
                if c != UInt8(ascii: "-") { throw .invalid(field, "must be a UUID") }
            } else if !((c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70)) {
                throw .invalid(field, "must be a UUID")
            }
        }
        return s.lowercased()
    }

    public static func afterSeq(_ v: Int64) throws(ReelError) {
        if v < 0 { throw .invalid("after_seq", "must not be negative") }
    }

    public static func progress(_ p: Int32) throws(ReelError) {
        if p < 0 || p > 100 { throw .invalid("progress", "must be between 0 and 100") }
    }
}
