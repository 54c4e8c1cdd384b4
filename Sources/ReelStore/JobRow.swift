import ReelCore
import Foundation

/// Decodes rows selected with `SQL.jobColumns` / `SQL.eventColumns`.
enum JobRow {
    static let columnCount = 48

    static func decode(_ r: [String?]) -> Job {
        precondition(r.count >= columnCount, "a job row has \(columnCount) columns (SQL.jobColumns), got \(r.count)")
        func s(_ i: Int) -> String { r[i] ?? "" }
        func i32(_ i: Int) -> Int32 { Int32(r[i] ?? "") ?? 0 }
        func i64(_ i: Int) -> Int64 { Int64(r[i] ?? "") ?? 0 }
        var config = JobConfig(targetDurationSeconds: i32(10), quality: Quality(name: s(11)) ?? .unspecified, model: s(12))
        config.styleOverrides = decodeStringMap(s(13))
        var a = Artifacts()
        a.expandedScript = s(14); a.validationResult = s(15); a.previewVideoURL = s(16); a.finalVideoURL = s(17)
        a.thumbnailURL = s(18); a.hlsPlaylistURL = s(19); a.providerJobID = s(20); a.providerRequestID = s(41)
        let result = r[21].map { seg in
            JobResult(segmentID: seg, videoURL: s(22), thumbnailURL: s(23), durationSeconds: Double(s(24)) ?? 0,
                      updatedBibleVersion: i32(25))
        }
        let error = r[26].map { code in
            JobError(code: code, message: s(27), details: s(28), stage: Stage(name: s(29)) ?? .unspecified)
        }
        var job = Job(
            id: s(0), userID: s(1), sceneID: s(2), type: JobType(name: s(3)) ?? .unspecified,
            status: JobStatus(name: s(4)) ?? .unspecified, stage: Stage(name: s(5)) ?? .unspecified,
            progress: i32(6), message: s(7), inputText: s(8), bibleVersion: i32(9), config: config,
            artifacts: a, result: result, error: error, retryCount: i32(30), maxRetries: i32(31),
            idempotencyKey: s(32), tier: Tier(name: s(33)) ?? .unspecified, deadLettered: r[34] == "t",
            workerID: s(35), createdAtUnixMs: i64(36), startedAtUnixMs: i64(37), completedAtUnixMs: i64(38),
            lastEventSeq: i64(39))
        job.tenantID = s(40)
        job.fence = i64(42)
        job.runAtUnixMs = i64(43)
        job.deadlineUnixMs = i64(44)
        job.webhookURL = s(45)
        job.provider = s(46)
        job.costUnits = Double(s(47)) ?? 0
        return job
    }

    /// A row of `jobColumns` followed by the change time: the job and the event just written.
    static func decodeWithEvent(_ r: [String?]) -> (job: Job, event: JobEvent) {
        let job = decode(r)
        let at = r.count > columnCount ? Int64(r[columnCount] ?? "") ?? 0 : 0
        return (job, JobEvent(jobID: job.id, seq: job.lastEventSeq, status: job.status, stage: job.stage,
                              progress: job.progress, message: job.message, atUnixMs: at, deadLettered: job.deadLettered))
    }

    static func decodeEvent(_ r: [String?]) -> JobEvent {
        JobEvent(jobID: r[0] ?? "", seq: Int64(r[1] ?? "") ?? 0, status: JobStatus(name: r[2] ?? "") ?? .unspecified,
                 stage: Stage(name: r[3] ?? "") ?? .unspecified, progress: Int32(r[4] ?? "") ?? 0,
                 message: r[5] ?? "", atUnixMs: Int64(r[6] ?? "") ?? 0, deadLettered: r[7] == "t")
    }

    /// A change's artifacts as the seven parameters `SQL.setArtifacts` reads (all nil: keep).
    static func artifactParams(_ a: Artifacts?) -> [String?] {
        // The request id is the last parameter of each statement (`SQL.setArtifacts`).
        [a?.expandedScript, a?.validationResult, a?.previewVideoURL, a?.finalVideoURL, a?.thumbnailURL,
         a?.hlsPlaylistURL, a?.providerJobID]
    }

    /// Strings as a PostgreSQL text[] literal: each element quoted, `\\` and `"` escaped.
    static func textArray(_ values: some Sequence<String>) -> String {
        var out: [UInt8] = [UInt8(ascii: "{")]
        var first = true
        for var v in values {
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            out.append(UInt8(ascii: "\""))
            v.withUTF8 { bytes in
                out.reserveCapacity(out.count + bytes.count + 2)
                for b in bytes {
                    if b == UInt8(ascii: "\\") || b == UInt8(ascii: "\"") { out.append(UInt8(ascii: "\\")) }
                    out.append(b)
                }
            }
            out.append(UInt8(ascii: "\""))
        }
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }

    /// Like `textArray`, with NULL for nil.
    static func nullableTextArray(_ values: [String?]) -> String {
        guard values.contains(where: { $0 == nil }) else { return textArray(values.map { $0! }) }
        let inner = values.map { v in v.map { textArray([$0]).dropFirst().dropLast() }.map(String.init) ?? "NULL" }
        return "{" + inner.joined(separator: ",") + "}"
    }

    /// What a change to `status` does to the job's `job_queue` row (`SQL.queueEffects`).
    static func queueAction(_ status: JobStatus) -> String {
        status == .queued ? "enqueue" : status.isQueuedOrRunning ? "" : "dequeue"
    }

    /// The statuses in which a worker holds a job, as a text[] literal.
    static let runningStatuses = textArray(JobStatus.allCases.filter(\.isRunning).map(\.name))

    /// A JSON object of strings, keys sorted.
    static func encodeStringMap(_ m: [String: String]) -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return (try? enc.encode(m)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    static func decodeStringMap(_ s: String) -> [String: String] {
        (try? JSONDecoder().decode([String: String].self, from: Data(s.utf8))) ?? [:]
    }

    static func encodeBible(_ b: SceneBible) throws -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return String(decoding: try enc.encode(b), as: UTF8.self)
    }

    static func decodeBible(_ s: String) -> SceneBible? {
        try? JSONDecoder().decode(SceneBible.self, from: Data(s.utf8))
    }

    /// Columns of `SQL.sceneByID`.
    static func decodeScene(_ r: [String?]) -> Scene {
        Scene(id: r[0] ?? "", bibleVersion: Int32(r[1] ?? "") ?? 0, bible: r[2].flatMap(decodeBible) ?? .empty,
              segmentCount: Int32(r[3] ?? "") ?? 0, totalDurationSeconds: Double(r[4] ?? "") ?? 0)
    }
}
