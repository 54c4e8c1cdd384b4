import Foundation

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
    /// 0: now.
    public var runAtUnixMs: Int64 = 0
    /// 0: none.
    public var deadlineUnixMs: Int64 = 0
    public var webhookURL: String = ""

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
    /// 0: now.
    public var runAtUnixMs: Int64 = 0
    /// 0: none.
    public var deadlineUnixMs: Int64 = 0
    public var webhookURL: String = ""
    /// The provider that is expected to run it and what that is expected to cost (DESIGN §2
    /// "Cost"), set by the service before the store reserves it against the tenant's budget.
    public var expectedCostUnits: Double = 0
    /// How long a run is expected to take (ms; the ETA estimator's figure, set by the service):
    /// a deadline's priority boost is computed from it (`PriorityScore.enqueuedAt`).
    public var expectedRunMs: Int64 = 0
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
    /// `run_at_unix_ms` at most this far ahead.
    public static let maxRunAheadMs: Int64 = 366 * 24 * 3_600_000
    public static let maxWebhookURLCharacters = 2048
    /// `deadline_unix_ms` at most this far ahead (a timestamp PostgreSQL can hold, and sense).
    public static let maxDeadlineAheadMs: Int64 = 10 * 366 * 24 * 3_600_000
}

extension CreateJobInput {
    /// `allowPrivateWebhooks`: `--webhook-allow-private` (a `webhook_url` at a loopback, private,
    /// link-local or unspecified IP literal, or `localhost`, is otherwise refused).
    public func validated(allowPrivateWebhooks: Bool = false) throws(ReelError) -> NewJob {
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
        let now = Int64((Date().timeIntervalSince1970 * 1000).rounded())
        if runAtUnixMs < 0 { throw .invalid("run_at_unix_ms", "must not be negative") }
        if runAtUnixMs > now + JobLimits.maxRunAheadMs {
            throw .invalid("run_at_unix_ms", "must be at most a year ahead")
        }
        if deadlineUnixMs < 0 { throw .invalid("deadline_unix_ms", "must not be negative") }
        if deadlineUnixMs > 0 && deadlineUnixMs <= now { throw .invalid("deadline_unix_ms", "is in the past") }
        if deadlineUnixMs > now + JobLimits.maxDeadlineAheadMs {
            throw .invalid("deadline_unix_ms", "must be at most 10 years ahead")
        }
        if deadlineUnixMs > 0 && runAtUnixMs > 0 && deadlineUnixMs <= runAtUnixMs {
            throw .invalid("deadline_unix_ms", "must be after run_at_unix_ms")
        }
        if !webhookURL.isEmpty { try Validate.webhookURL(webhookURL, allowPrivate: allowPrivateWebhooks) }
        var job = NewJob(
            userID: userID, sceneID: sceneID, type: type, inputText: inputText, config: config,
            idempotencyKey: idempotencyKey.isEmpty
                ? IdempotencyKey.derive(userID: userID, sceneID: sceneID, inputText: inputText) : idempotencyKey,
            tier: tier == .unspecified ? .standard : tier,
            maxRetries: maxRetries == 0 ? JobLimits.defaultMaxRetries : maxRetries)
        job.runAtUnixMs = runAtUnixMs
        job.deadlineUnixMs = deadlineUnixMs
        job.webhookURL = webhookURL
        return job
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

    /// A completion webhook's URL: http(s), a host, at most 2,048 characters; unless
    /// `allowPrivate`, not an IP literal or `localhost` that `WebhookAddress` calls private.
    public static func webhookURL(_ s: String, allowPrivate: Bool) throws(ReelError) {
        if s.unicodeScalars.count > JobLimits.maxWebhookURLCharacters {
            throw .invalid("webhook_url", "must be at most \(JobLimits.maxWebhookURLCharacters) characters")
        }
        guard let u = URLComponents(string: s), let scheme = u.scheme?.lowercased(), scheme == "http" || scheme == "https"
        else { throw .invalid("webhook_url", "must be an http or https URL") }
        guard let host = u.host, !host.isEmpty else { throw .invalid("webhook_url", "must name a host") }
        if u.user != nil || u.password != nil { throw .invalid("webhook_url", "must not carry credentials") }
        if !allowPrivate && WebhookAddress.isPrivateLiteral(host) {
            throw .invalid("webhook_url", "must not point at a loopback, private, link-local or unspecified address")
        }
    }

    public static func afterSeq(_ v: Int64) throws(ReelError) {
        if v < 0 { throw .invalid("after_seq", "must not be negative") }
    }

    public static func progress(_ p: Int32) throws(ReelError) {
        if p < 0 || p > 100 { throw .invalid("progress", "must be between 0 and 100") }
    }
}


/// Which webhook destinations are refused (DESIGN §8): loopback, link-local, private and
/// unspecified addresses, checked on the literal at create and on the address actually
/// connected to at delivery.
public enum WebhookAddress {
    /// `host` is `localhost` or an IP literal (IPv6 with or without brackets) in a refused range.
    public static func isPrivateLiteral(_ host: String) -> Bool {
        var h = host.lowercased()
        if h.hasSuffix(".") { h.removeLast() }
        if h == "localhost" || h.hasSuffix(".localhost") { return true }
        if h.hasPrefix("[") && h.hasSuffix("]") { h = String(h.dropFirst().dropLast()) }
        return isPrivateIP(h) ?? false
    }

    /// nil when `ip` is not an IPv4 or IPv6 literal.
    public static func isPrivateIP(_ ip: String) -> Bool? {
        if let v4 = ipv4(ip) { return isPrivateV4(v4) }
        guard let v6 = ipv6(ip) else { return nil }
        if v6.allSatisfy({ $0 == 0 }) { return true }                                  // ::
        if v6[0..<15].allSatisfy({ $0 == 0 }) && v6[15] == 1 { return true }          // ::1
        if v6[0..<10].allSatisfy({ $0 == 0 }) && v6[10] == 0xff && v6[11] == 0xff {  // ::ffff:a.b.c.d
            return isPrivateV4(Array(v6[12..<16]))
        }
        if v6[0] == 0xfe && (v6[1] & 0xc0) == 0x80 { return true }                    // fe80::/10
        if (v6[0] & 0xfe) == 0xfc { return true }                                     // fc00::/7
        return false
    }

    static func isPrivateV4(_ b: [UInt8]) -> Bool {
        switch (b[0], b[1]) {
        case (0, _), (10, _), (127, _), (169, 254), (192, 168): return true
        case (172, 16...31), (100, 64...127): return true
        default: return b == [255, 255, 255, 255]
        }
    }

    static func ipv4(_ s: String) -> [UInt8]? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy(\.isASCII), let v = UInt8(p) else { return nil }
            out.append(v)
        }
        return out
    }

    static func ipv6(_ s: String) -> [UInt8]? {
        guard s.contains(":") else { return nil }
        var addr = in6_addr()
        return s.withCString { inet_pton(AF_INET6, $0, &addr) } == 1
            ? withUnsafeBytes(of: addr) { Array($0) } : nil
    }
}
