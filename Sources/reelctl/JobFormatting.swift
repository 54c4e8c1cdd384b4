import ArgumentParser
import Foundation
import ReelCore
import ReelJSON

/// How jobs, pages and events look on stdout: aligned `key: value` lines for people, and for
/// programs the HTTP API's JSON (ReelJSON: protobuf's JSON mapping, `JOB_STATUS_QUEUED`).
enum JobFormatting {
    // MARK: JSON

    static func json(_ job: Job) -> String { JSONCoding.encode(JobJSON(job)) }
    static func json(_ page: JobPage) -> String { JSONCoding.encode(JobPageJSON(page)) }
    /// One watch event; `snapshot` (the whole job) only on the event that carries it.
    static func json(_ event: JobEvent) -> String { JSONCoding.encode(JobEventJSON(event)) }
    /// A job as the HTTP API shows it, plus `webhookEvents` (its completion-webhook delivery
    /// events, as WatchJob sends them) when it has a webhook.
    static func json(_ job: Job, webhookEvents: [JobEvent]) -> String {
        let body = json(job)
        guard !job.webhookURL.isEmpty, body.hasSuffix("}") else { return body }
        let events = webhookEvents.map { json($0) }.joined(separator: ",")
        return String(body.dropLast()) + (body == "{}" ? "" : ",") + "\"webhookEvents\":[" + events + "]}"
    }

    /// A delivery of the job's completion webhook, told in the job's events (DESIGN §8).
    static func isWebhookEvent(_ e: JobEvent) -> Bool {
        e.message.hasPrefix("webhook delivered to ") || e.message.hasPrefix("webhook delivery to ")
    }

    // MARK: Text

    static func text(_ job: Job) -> String { aligned(rows(job)) }

    private static func rows(_ job: Job) -> [(String, String)] {
        var rows: [(String, String)] = [
            ("id", job.id),
            ("user", job.userID),
            ("scene", job.sceneID),
            ("type", job.type.name),
            ("tier", job.tier.name),
            ("status", job.status.name + (job.deadLettered ? " (dead-lettered)" : "")),
            ("stage", job.stage.name),
            ("progress", "\(job.progress)%"),
            ("message", job.message),
            ("retries", "\(job.retryCount) of \(job.maxRetries)"),
            ("text", oneLine(job.inputText, limit: 72)),
            ("idempotency key", job.idempotencyKey),
            ("created", time(job.createdAtUnixMs)),
        ]
        if job.runAtUnixMs > 0 { rows.append(("run at", time(job.runAtUnixMs))) }
        if job.etaUnixMs > 0 { rows.append(("eta", eta(job))) }
        if job.deadlineUnixMs > 0 { rows.append(("deadline", time(job.deadlineUnixMs))) }
        if job.startedAtUnixMs > 0 { rows.append(("started", time(job.startedAtUnixMs))) }
        if job.completedAtUnixMs > 0 { rows.append(("completed", time(job.completedAtUnixMs))) }
        if !job.workerID.isEmpty { rows.append(("worker", job.workerID)) }
        if job.config.targetDurationSeconds > 0 || job.config.quality != .unspecified || !job.config.model.isEmpty {
            var parts: [String] = []
            if job.config.targetDurationSeconds > 0 { parts.append("\(job.config.targetDurationSeconds)s") }
            if job.config.quality != .unspecified { parts.append(job.config.quality.name) }
            if !job.config.model.isEmpty { parts.append("model \(job.config.model)") }
            rows.append(("config", parts.joined(separator: ", ")))
        }
        if !job.provider.isEmpty { rows.append(("provider", job.provider)) }
        rows.append(("cost", "\(TenantBudget.units(job.costUnits)) units"))
        if !job.artifacts.providerJobID.isEmpty { rows.append(("provider task", job.artifacts.providerJobID)) }
        if !job.artifacts.providerRequestID.isEmpty { rows.append(("provider request", job.artifacts.providerRequestID)) }
        if let r = job.result {
            rows.append(("result url", r.videoURL))
            if !r.thumbnailURL.isEmpty { rows.append(("thumbnail", r.thumbnailURL)) }
            if r.durationSeconds > 0 { rows.append(("duration", "\(r.durationSeconds)s")) }
            if !r.segmentID.isEmpty { rows.append(("segment", r.segmentID)) }
        } else if !job.artifacts.finalVideoURL.isEmpty {
            rows.append(("result url", job.artifacts.finalVideoURL))
        }
        if !job.artifacts.previewVideoURL.isEmpty { rows.append(("preview url", job.artifacts.previewVideoURL)) }
        if let e = job.error {
            rows.append(("error", "\(e.code): \(e.message)" + (e.stage == .unspecified ? "" : " (at \(e.stage.name))")))
        }
        rows.append(("last event", "\(job.lastEventSeq)"))
        return rows
    }

    /// `text(job)`, then its webhook and each delivery event: `#seq time message`.
    static func text(_ job: Job, webhookEvents: [JobEvent]) -> String {
        var rows = rows(job)
        guard !job.webhookURL.isEmpty else { return aligned(rows) }
        rows.append(("webhook", job.webhookURL))
        if webhookEvents.isEmpty { rows.append(("delivery", job.isFinished ? "none yet" : "none (the job has not ended)")) }
        for e in webhookEvents { rows.append(("delivery", "#\(e.seq) \(time(e.atUnixMs)) \(e.message)")) }
        return aligned(rows)
    }

    static func text(_ page: JobPage) -> String {
        var lines = [row(["ID", "STATUS", "STAGE", "PROG", "TYPE", "USER", "SCENE", "PROVIDER", "COST", "CREATED", "RUN AT", "ETA"])]
        for j in page.jobs {
            lines.append(row([
                j.id, j.status.name + (j.deadLettered ? "*" : ""), j.stage.name, "\(j.progress)%",
                j.type.name, j.userID, j.sceneID, j.provider.isEmpty ? "-" : j.provider, TenantBudget.units(j.costUnits),
                time(j.createdAtUnixMs), time(j.runAtUnixMs), j.etaUnixMs > 0 ? eta(j) : "-",
            ]))
        }
        if page.jobs.isEmpty { lines.append("(no jobs)") }
        if page.jobs.contains(where: \.deadLettered) { lines.append("* dead-lettered") }
        if !page.nextPageToken.isEmpty { lines.append("next page: --page-token \(page.nextPageToken)") }
        return lines.joined(separator: "\n")
    }

    // MARK: Helpers

    private static let columnWidths = [36, 19, 22, 5, 15, 16, 16, 10, 8, 24, 24, 0]

    private static func row(_ cells: [String]) -> String {
        var out = ""
        for (i, cell) in cells.enumerated() {
            let width = columnWidths[i]
            out += cell
            if i < cells.count - 1 { out += String(repeating: " ", count: max(1, width - cell.count + 1)) }
        }
        return out
    }

    static func aligned(_ rows: [(String, String)]) -> String {
        let width = rows.map { $0.0.count }.max() ?? 0
        return rows.map { key, value in
            key + ":" + String(repeating: " ", count: width - key.count + 1) + value
        }.joined(separator: "\n")
    }

    /// The ETA as a time, "(at risk)" when it is past the job's deadline.
    static func eta(_ job: Job) -> String {
        time(job.etaUnixMs) + (job.deadlineUnixMs > 0 && job.etaUnixMs > job.deadlineUnixMs ? " (at risk)" : "")
    }

    static func time(_ unixMs: Int64) -> String {
        guard unixMs > 0 else { return "-" }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date(timeIntervalSince1970: Double(unixMs) / 1000))
    }

    /// A time given on the command line: ISO 8601 with a zone (fractional seconds allowed) or unix ms.
    static func parseTime(_ s: String, option: String) throws -> Int64 {
        if let ms = Int64(s), ms > 0 { return ms }
        let f = ISO8601DateFormatter()
        for options: ISO8601DateFormatter.Options in [[.withInternetDateTime, .withFractionalSeconds], [.withInternetDateTime]] {
            f.formatOptions = options
            if let d = f.date(from: s) { return Int64(d.timeIntervalSince1970 * 1000) }
        }
        throw ValidationError("\(option) takes an ISO 8601 time with a zone (2026-12-24T18:00:00Z) or unix ms, not \"\(s)\"")
    }

    /// A duration given on the command line: seconds, or a number with s, m, h or d; in ms.
    static func parseDuration(_ s: String, option: String) throws -> Int64 {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        var number = Substring(s), scale = 1.0
        if let last = s.last, let u = units[last] { number = s.dropLast(); scale = u }
        guard let v = Double(number), v >= 0, v.isFinite else {
            throw ValidationError("\(option) takes seconds or a duration such as 90s, 15m, 2h, 1d, not \"\(s)\"")
        }
        return Int64((v * scale * 1000).rounded())
    }

    /// Newlines flattened and long text cut with an ellipsis, for one-line displays.
    static func oneLine(_ s: String, limit: Int) -> String {
        let flat = s.split(whereSeparator: \.isNewline).joined(separator: " ")
        return flat.count <= limit ? flat : String(flat.prefix(limit - 1)) + "…"
    }
}
