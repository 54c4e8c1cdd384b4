/// One completion-webhook delivery of a job's end (DESIGN §8): made in the transaction of the
/// job's final transition, attempted until a 2xx, a refused address or 24 h. Its `id` is the
/// `Reel-Delivery-Id` header, the same on every attempt.
public struct WebhookDelivery: Sendable, Equatable {
    public enum State: String, Sendable {
        case pending, delivered, failed
    }

    public var id: String
    public var jobID: String
    public var url: String
    /// The status the job ended in (final_ready, failed, cancelled).
    public var jobStatus: JobStatus
    public var state: State
    public var attempts: Int32
    /// The HTTP status of the last attempt (0: none came back).
    public var lastStatus: Int32
    public var lastError: String
    public var createdAtUnixMs: Int64
    public var lastAttemptAtUnixMs: Int64
    /// When a pending delivery is tried next; 0 once it is delivered or has failed.
    public var nextAttemptAtUnixMs: Int64
    public var finishedAtUnixMs: Int64

    public init(id: String, jobID: String, url: String, jobStatus: JobStatus, state: State, attempts: Int32,
                lastStatus: Int32, lastError: String, createdAtUnixMs: Int64, lastAttemptAtUnixMs: Int64,
                nextAttemptAtUnixMs: Int64, finishedAtUnixMs: Int64) {
        self.id = id; self.jobID = jobID; self.url = url; self.jobStatus = jobStatus; self.state = state
        self.attempts = attempts; self.lastStatus = lastStatus; self.lastError = lastError
        self.createdAtUnixMs = createdAtUnixMs; self.lastAttemptAtUnixMs = lastAttemptAtUnixMs
        self.nextAttemptAtUnixMs = nextAttemptAtUnixMs; self.finishedAtUnixMs = finishedAtUnixMs
    }
}

/// A delivery claimed for one attempt: the job as it ended, the body of an earlier attempt
/// (nil on the first) and the tenant's own signing secret, if it has one.
public struct WebhookAttempt: Sendable {
    public var deliveryID: String
    public var url: String
    /// This attempt's number, from 1.
    public var attempt: Int32
    public var createdAtUnixMs: Int64
    public var job: Job
    public var body: String?
    public var tenantSecret: String?

    public init(deliveryID: String, url: String, attempt: Int32, createdAtUnixMs: Int64, job: Job, body: String?,
                tenantSecret: String?) {
        self.deliveryID = deliveryID; self.url = url; self.attempt = attempt; self.createdAtUnixMs = createdAtUnixMs
        self.job = job; self.body = body; self.tenantSecret = tenantSecret
    }
}

/// What an attempt came to.
public enum WebhookOutcome: Sendable, Equatable {
    case delivered(status: Int32)
    /// Tried again after `afterMs`; `status` 0 when no response came back.
    case retry(afterMs: Int64, status: Int32, error: String)
    /// Given up: a refused address, or 24 h of failures.
    case failed(status: Int32, error: String)
}

extension WebhookOutcome {
    /// The text of the job event that tells this outcome of attempt `attempt` of delivery
    /// `deliveryID` to `url` (shown without its query, fragment or credentials). For a retry,
    /// the store adds when the next attempt is.
    public func eventMessage(url: String, attempt: Int32, deliveryID: String) -> String {
        let to = Self.displayURL(url)
        let tail = "(attempt \(attempt), delivery \(deliveryID))"
        func why(_ status: Int32, _ error: String) -> String {
            let text = String(error.prefix(300))
            if status != 0 && !text.contains("HTTP") { return "HTTP \(status): \(text)" }
            return text.isEmpty ? (status != 0 ? "HTTP \(status)" : "no response") : text
        }
        switch self {
        case .delivered(let status): return "webhook delivered to \(to): HTTP \(status) \(tail)"
        case .retry(_, let status, let error): return "webhook delivery to \(to) failed: \(why(status, error)) \(tail)"
        case .failed(let status, let error): return "webhook delivery to \(to) failed for good: \(why(status, error)) \(tail)"
        }
    }

    /// `url` without query, fragment, user or password (a token there stays out of events).
    static func displayURL(_ url: String) -> String {
        var cut = url
        if let i = cut.firstIndex(where: { $0 == "?" || $0 == "#" }) { cut = String(cut[..<i]) }
        if let scheme = cut.range(of: "://") {
            let rest = cut[scheme.upperBound...]
            let hostEnd = rest.firstIndex(of: "/") ?? rest.endIndex
            if let at = rest[..<hostEnd].lastIndex(of: "@") {
                cut = String(cut[..<scheme.upperBound]) + String(rest[rest.index(after: at)...])
            }
        }
        return cut
    }
}

/// What recording an attempt's outcome came to: nothing for a stale attempt (its claim lapsed
/// and the delivery was claimed again), else the job event appended with it (nil: the job is gone).
public struct WebhookRecord: Sendable, Equatable {
    public var event: JobEvent?
    public init(event: JobEvent?) { self.event = event }
}

/// The completion-webhook outbox (`webhook_deliveries`); several reeld may share it.
public protocol WebhookOutboxStore: Sendable {
    /// Pending deliveries that are due, `limit` at most, each claimed for one attempt: no other
    /// claimer sees it again for `leaseMs` (an attempt cut short by a crash is tried again then).
    func claimWebhookDeliveries(limit: Int, leaseMs: Int64) async throws -> [WebhookAttempt]
    /// Records the outcome of `attempt`, and the body it sent, and appends the job's next event
    /// (`eventMessage`) in the same statement; a stale attempt changes nothing (nil).
    func finishWebhookDelivery(id: String, attempt: Int32, outcome: WebhookOutcome, body: String,
                               eventMessage: String) async throws -> WebhookRecord?
    /// A job's deliveries, oldest first.
    func webhookDeliveries(jobID: String) async throws -> [WebhookDelivery]
    /// Deliveries not yet delivered or given up, over every reeld on the database.
    func pendingWebhookDeliveries() async throws -> Int
}
