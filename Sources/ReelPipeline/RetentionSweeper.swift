import Logging
import ReelCore
import ReelObservability

/// One pass of retention (`--retention-days`, issue #17 item 7) over the jobs that ended before
/// the cutoff, in the order they ended, from where the last pass stopped, in small batches:
/// every statement touches at most `batch` jobs' rows and is its own short transaction (the
/// prune of a few jobs' events and their renumbering is one), so no pass holds a long lock.
public struct RetentionSweeper: Sendable {
    public struct Report: Sendable, Equatable {
        public var jobsSeen = 0
        public var eventsPruned = 0
        public var jobsDeleted = 0
        public var deliveriesPruned = 0
        /// Jobs whose remaining events were renumbered 1…k after a prune.
        public var jobsRenumbered = 0
        public var artifactFiles = 0
        public var artifactBytes: Int64 = 0
        public init() {}
    }

    let store: any RetentionStore
    /// Where artifacts are published (the local directory, or the bucket).
    let artifacts: (any ArtifactStore)?
    /// The post-processor's local working copies, when `artifacts` is a bucket.
    let workingCopies: (any ArtifactStore)?
    public let days: Int
    public var batch = 500
    /// Jobs per statement that deletes whole jobs (each brings its events along), and per
    /// transaction that prunes and renumbers events.
    public var jobsPerDelete = 50
    /// Told the jobs whose events were pruned and renumbered (their `last_event_seq` changed):
    /// reeld drops them from its in-memory job cache.
    public var onPruned: (@Sendable ([String]) -> Void)? = nil
    let logger: Logger

    public init(store: any RetentionStore, artifacts: (any ArtifactStore)?, workingCopies: (any ArtifactStore)? = nil,
                days: Int, logger: Logger) {
        self.store = store; self.artifacts = artifacts; self.workingCopies = workingCopies; self.days = days
        self.logger = logger
    }

    /// Runs until no job that ended before the cutoff is left after the cursor.
    @discardableResult
    public func sweep() async -> Report {
        var report = Report()
        guard days > 0 else { return report }
        do {
            while !Task.isCancelled {
                let b = try await store.retentionBatch(olderThanDays: days, limit: batch)
                guard let cursor = b.cursor else { break }
                report.jobsSeen += b.candidates.count
                try await prune(b.candidates, &report)
                try await store.saveRetentionCursor(cursor)
                if b.candidates.count < batch { break }
            }
            while !Task.isCancelled {
                let n = try await store.pruneWebhookDeliveries(olderThanDays: days, limit: batch)
                report.deliveriesPruned += n
                ReelMetrics.retentionPruned(what: "webhook_deliveries", rows: n)
                if n < batch { break }
            }
        } catch {
            logger.warning("retention pass stopped; the next one goes on from where it got", metadata: ["error": "\(error)"])
        }
        if report.eventsPruned + report.jobsDeleted + report.artifactFiles + report.deliveriesPruned > 0 {
            logger.info("retention: pruned \(report.eventsPruned) events, \(report.jobsDeleted) jobs, \(report.artifactFiles) artifact files (\(report.artifactBytes) bytes), \(report.deliveriesPruned) webhook deliveries")
        }
        return report
    }

    func prune(_ candidates: [RetentionCandidate], _ report: inout Report) async throws {
        let eligible = candidates.filter(\.eligible)
        // One row per job and segment: a job's kept files are those of all its rows.
        var kept: [String: Set<String>] = [:]
        var deletable: [String: Bool] = [:]
        for c in eligible {
            kept[c.jobID, default: []].formUnion(c.keptURLs.compactMap { Self.file(of: $0, jobID: c.jobID) })
            deletable[c.jobID] = (deletable[c.jobID] ?? true) && c.deletable
        }
        let ids = Array(Set(eligible.map(\.jobID))).sorted()
        // Artifacts first: should a pass stop halfway, the rows are still there for the next.
        for id in ids {
            // A segment's own files stay, and the last frame a continuation of its scene starts from.
            let keep = kept[id, default: []].isEmpty ? [] : kept[id, default: []].union([PostProcessor.lastFrameFile])
            for store in [artifacts, workingCopies].compactMap({ $0 }) {
                let (files, bytes) = try await store.prune(jobID: id, keeping: keep)
                report.artifactFiles += files
                report.artifactBytes += bytes
                ReelMetrics.retentionPruned(what: "artifacts", rows: files)
                ReelMetrics.retentionPrunedBytes(bytes)
            }
        }
        let going = ids.filter { deletable[$0] == true }
        var start = 0
        while start < going.count {
            let chunk = Array(going[start..<min(start + jobsPerDelete, going.count)])
            let (jobs, events, deliveries) = try await store.deleteJobs(chunk)
            report.jobsDeleted += jobs
            report.eventsPruned += events
            report.deliveriesPruned += deliveries
            ReelMetrics.retentionPruned(what: "jobs", rows: jobs)
            ReelMetrics.retentionPruned(what: "events", rows: events)
            ReelMetrics.retentionPruned(what: "webhook_deliveries", rows: deliveries)
            start += jobsPerDelete
        }
        // Every eligible job left (a job that could not go yet keeps only its transitions too),
        // a few jobs per transaction, their events renumbered densely in it.
        // (Those just deleted are no longer found.)
        start = 0
        while start < ids.count {
            let chunk = Array(ids[start..<min(start + jobsPerDelete, ids.count)])
            let p = try await store.pruneEvents(jobIDs: chunk, olderThanDays: days)
            report.eventsPruned += p.events
            report.jobsRenumbered += p.renumbered
            ReelMetrics.retentionPruned(what: "events", rows: p.events)
            if p.renumbered > 0 { onPruned?(p.jobs) }
            start += jobsPerDelete
        }
    }

    /// The artifact file a URL of `jobID` names (`…/<job>/<file>`), whatever the store.
    static func file(of url: String, jobID: String) -> String? {
        guard let r = url.range(of: "/" + jobID + "/") else { return nil }
        let file = String(url[r.upperBound...])
        return file.isEmpty ? nil : file
    }
}
