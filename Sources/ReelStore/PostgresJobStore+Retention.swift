import ReelCore

extension PostgresJobStore: RetentionStore {
    public func retentionBatch(olderThanDays days: Int, limit: Int) async throws -> RetentionBatch {
        try await pool.withConnection { c in
            let rows = try c.query(SQL.retentionBatch, [String(days), String(limit)]).rows
            let candidates = rows.map { r in
                RetentionCandidate(jobID: r[0] ?? "", eligible: r[2] == "true", deletable: r[3] == "t",
                                   keptURLs: [r[4], r[5]].compactMap { $0 }.filter { !$0.isEmpty })
            }
            return RetentionBatch(candidates: candidates, cursor: rows.last?[1])
        }
    }

    public func pruneEvents(jobIDs: [String], olderThanDays days: Int) async throws -> EventPrune {
        guard !jobIDs.isEmpty else { return EventPrune() }
        return try await pool.withConnection { c in
            try c.transaction {
                let locked = try c.query(SQL.lockPrunableJobs, [JobRow.textArray(jobIDs), String(days)]).rows.compactMap { $0[0] }
                guard !locked.isEmpty else { return EventPrune() }
                let ids = JobRow.textArray(locked)
                let events = Int(try c.query(SQL.pruneEvents, [ids]).first?[0] ?? "") ?? 0
                // Down always looks (it also closes gaps an earlier prune left); up and the
                // jobs' last_event_seq only when an event was deleted or moved.
                let moved = Int(try c.query(SQL.renumberEventsDown, [ids]).first?[0] ?? "") ?? 0
                guard events > 0 || moved > 0 else { return EventPrune(jobs: locked) }
                let changed = Int(try c.query(SQL.renumberEventsUp, [ids]).first?[0] ?? "") ?? 0
                return EventPrune(events: events, jobs: locked, renumbered: changed)
            }
        }
    }

    public func deleteJobs(_ jobIDs: [String]) async throws -> (jobs: Int, events: Int, deliveries: Int) {
        guard !jobIDs.isEmpty else { return (0, 0, 0) }
        return try await pool.withConnection { c in
            let r = try c.query(SQL.deleteRetainedJobs, [JobRow.textArray(jobIDs)]).first ?? []
            func n(_ i: Int) -> Int { i < r.count ? Int(r[i] ?? "") ?? 0 : 0 }
            return (n(0), n(1), n(2))
        }
    }

    public func pruneWebhookDeliveries(olderThanDays days: Int, limit: Int) async throws -> Int {
        try await pool.withConnection { c in
            Int(try c.query(SQL.pruneWebhookDeliveries, [String(days), String(limit)]).first?[0] ?? "") ?? 0
        }
    }

    public func saveRetentionCursor(_ cursor: String) async throws {
        let parts = cursor.split(separator: "|", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return }
        try await pool.withConnection { c in _ = try c.query(SQL.saveRetentionCursor, [parts[0], parts[1]]) }
    }
}
