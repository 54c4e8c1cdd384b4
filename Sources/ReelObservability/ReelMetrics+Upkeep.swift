import CoreMetrics

/// Completion webhooks and retention (issue #17, items 6 and 7).
extension ReelMetrics {
    /// `reel_webhook_deliveries_total{outcome}`: attempts by what came of them — `delivered`
    /// (a 2xx), `retry` (tried again later), `failed` (given up: a refused address, or 24 h).
    public static func webhookAttempt(outcome: String) {
        Counter(label: "reel_webhook_deliveries_total", dimensions: [("outcome", outcome)]).increment()
    }

    /// `reel_webhook_deliveries_pending`: deliveries not yet delivered or given up (every reeld on the database).
    public static func webhookPending(_ n: Int) {
        Gauge(label: "reel_webhook_deliveries_pending").record(n)
    }

    /// `reel_retention_pruned_rows_total{what}`: rows removed by retention (`events`, `jobs`, `webhook_deliveries`).
    public static func retentionPruned(what: String, rows: Int) {
        guard rows > 0 else { return }
        Counter(label: "reel_retention_pruned_rows_total", dimensions: [("what", what)]).increment(by: rows)
    }

    /// `reel_retention_pruned_bytes_total`: artifact bytes removed by retention.
    public static func retentionPrunedBytes(_ n: Int64) {
        guard n > 0 else { return }
        Counter(label: "reel_retention_pruned_bytes_total").increment(by: Int(n))
    }
}
