import ReelCore

extension PostgresJobStore: WebhookOutboxStore {
    public func claimWebhookDeliveries(limit: Int, leaseMs: Int64) async throws -> [WebhookAttempt] {
        try await pool.withConnection { c in
            try c.query(SQL.claimWebhookDeliveries, [String(limit), String(leaseMs)]).rows.map { r in
                var job = JobRow.decode(Array(r.dropFirst(7)))
                if job.id.isEmpty { job.id = r[6] ?? "" }
                return WebhookAttempt(deliveryID: r[0] ?? "", url: r[1] ?? "", attempt: Int32(r[2] ?? "") ?? 1,
                                      createdAtUnixMs: Int64(r[3] ?? "") ?? 0, job: job, body: r[4],
                                      tenantSecret: r[5].flatMap { $0.isEmpty ? nil : $0 })
            }
        }
    }

    public func finishWebhookDelivery(id: String, attempt: Int32, outcome: WebhookOutcome, body: String,
                                      eventMessage: String) async throws -> WebhookRecord? {
        let (state, status, error, afterMs): (String, Int32, String, Int64) = switch outcome {
        case .delivered(let s): ("delivered", s, "", 0)
        case .retry(let after, let s, let e): ("pending", s, e, after)
        case .failed(let s, let e): ("failed", s, e, 0)
        }
        return try await pool.withConnection { c in
            guard let row = try c.query(SQL.finishWebhookDelivery, [
                id, String(attempt), state, status == 0 ? nil : String(status), String(error.prefix(1000)), body,
                String(afterMs), String(eventMessage.prefix(2000)),
            ]).first else { return nil }
            // The outbox row's state, then the event (NULLs: the job is gone).
            return WebhookRecord(event: row[1] == nil ? nil : JobRow.decodeEvent(Array(row.dropFirst())))
        }
    }

    public func webhookDeliveries(jobID: String) async throws -> [WebhookDelivery] {
        try await pool.withConnection { c in
            try c.query(SQL.webhookDeliveriesOfJob, [jobID]).rows.map { r in
                func i64(_ i: Int) -> Int64 { Int64(r[i] ?? "") ?? 0 }
                return WebhookDelivery(
                    id: r[0] ?? "", jobID: r[1] ?? "", url: r[2] ?? "", jobStatus: JobStatus(name: r[3] ?? "") ?? .unspecified,
                    state: WebhookDelivery.State(rawValue: r[4] ?? "") ?? .pending, attempts: Int32(r[5] ?? "") ?? 0,
                    lastStatus: Int32(r[6] ?? "") ?? 0, lastError: r[7] ?? "", createdAtUnixMs: i64(8),
                    lastAttemptAtUnixMs: i64(9), nextAttemptAtUnixMs: i64(10), finishedAtUnixMs: i64(11))
            }
        }
    }

    public func pendingWebhookDeliveries() async throws -> Int {
        try await pool.withConnection { c in Int(try c.query(SQL.pendingWebhookDeliveries, []).first?[0] ?? "") ?? 0 }
    }

    /// Sets the tenant's completion-webhook signing secret if it has none; true when this call set it.
    public func makeWebhookSecret(tenantID: String, secret: String) async throws -> Bool {
        try await pool.withConnection { c in try c.query(SQL.makeWebhookSecret, [tenantID, secret]).first != nil }
    }
}
