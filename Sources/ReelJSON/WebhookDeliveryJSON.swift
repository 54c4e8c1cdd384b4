import ReelCore

/// A job's completion-webhook deliveries (`GET /v1/jobs/{id}/webhooks`): `{"deliveries": […]}`.
/// Kept apart from the job's events, whose stream ends at the terminal event.
public struct WebhookDeliveriesJSON: Codable, Sendable, Equatable {
    public var deliveries: [WebhookDeliveryJSON]
    public init(_ d: [WebhookDelivery]) { deliveries = d.map(WebhookDeliveryJSON.init) }
}

public struct WebhookDeliveryJSON: Codable, Sendable, Equatable {
    /// The `Reel-Delivery-Id` header, the same on every attempt.
    public var id: String
    public var jobId: String
    public var url: String
    /// The status the job ended in (`JOB_STATUS_FINAL_READY`, …).
    public var jobStatus: String
    /// `PENDING`, `DELIVERED` or `FAILED` (given up).
    public var state: String
    public var attempts: Int32
    public var lastStatus: Int32
    public var lastError: String
    public var createdAtUnixMs: Int64
    public var lastAttemptAtUnixMs: Int64
    public var nextAttemptAtUnixMs: Int64
    public var finishedAtUnixMs: Int64

    public init(_ d: WebhookDelivery) {
        id = d.id; jobId = d.jobID; url = d.url; jobStatus = d.jobStatus.protoName; state = d.state.rawValue.uppercased()
        attempts = d.attempts; lastStatus = d.lastStatus; lastError = d.lastError; createdAtUnixMs = d.createdAtUnixMs
        lastAttemptAtUnixMs = d.lastAttemptAtUnixMs; nextAttemptAtUnixMs = d.nextAttemptAtUnixMs
        finishedAtUnixMs = d.finishedAtUnixMs
    }
}
