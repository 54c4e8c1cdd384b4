import ReelCore

extension PostgresJobStore: ProviderTaskStore {
    public func latestProviderTask(jobID: String) async throws -> ProviderTaskRecord? {
        try await pool.withConnection { c in try c.query(SQL.latestProviderTask, [jobID]).first.map(Self.decodeProviderTask) }
    }

    public func acquireProviderSlot(_ r: ProviderTaskRecord, cap: Int) async throws -> Bool {
        try await pool.withConnection { c in
            try c.pipeline([(SQL.lockProviderSlots, [r.provider]),
                            (SQL.acquireProviderSlot, [r.provider, r.jobID, String(r.attempt), r.externalTaskID, r.kind,
                                                       r.callbackToken, String(cap), String(self.fairShareHalfLifeSeconds)])])
                .last?.first?[0] == "t"
        }
    }

    public func leaveProviderSlotQueue(provider: String, jobID: String) async throws {
        try await pool.withConnection { c in _ = try c.query(SQL.leaveProviderSlotQueue, [provider, jobID]) }
    }

    public func releaseProviderSlot(jobID: String, attempt: Int32) async throws {
        try await pool.withConnection { c in _ = try c.query(SQL.releaseProviderSlot, [jobID, String(attempt)]) }
    }

    public func recordProviderTaskID(jobID: String, attempt: Int32, taskID: String, kind: String) async throws {
        try await pool.withConnection { c in _ = try c.query(SQL.recordProviderTaskID, [jobID, String(attempt), taskID, kind]) }
    }

    public func endProviderTask(jobID: String, attempt: Int32, status: String) async throws {
        _ = try await endProviderTask(jobID: jobID, attempt: attempt, status: status, charge: nil, weight: 1)
    }

    public func endProviderTask(jobID: String, attempt: Int32, status: String, charge: Double?, weight: Double) async throws
        -> (tenantID: String, userID: String, units: Double)? {
        try await pool.withConnection { c in
            try c.query(SQL.endProviderTask, [jobID, String(attempt), status, charge.map { String($0) }, String(weight)])
                .first.map { ($0[0] ?? "", $0[1] ?? "", Double($0[2] ?? "") ?? 0) }
        }
    }

    public func providerTask(callbackToken: String) async throws -> ProviderTaskRecord? {
        try await pool.withConnection { c in try c.query(SQL.providerTaskByToken, [callbackToken]).first.map(Self.decodeProviderTask) }
    }

    public func liveProviderTasks(provider: String) async throws -> Int {
        try await pool.withConnection { c in Int(try c.query(SQL.liveProviderTasks, [provider]).first?[0] ?? "") ?? 0 }
    }

    public func limitProviderCap(provider: String, cap: Int, holdMs: Int64) async throws {
        try await pool.withConnection { c in _ = try c.query(SQL.limitProviderCap, [provider, String(cap), String(holdMs)]) }
    }

    public func unfollowedProviderTasks(provider: String, limit: Int) async throws -> [ProviderTaskRecord] {
        try await pool.withConnection { c in
            try c.query(SQL.unfollowedProviderTasks, [provider, String(limit)]).rows.map(Self.decodeProviderTask)
        }
    }

    static func decodeProviderTask(_ r: [String?]) -> ProviderTaskRecord {
        ProviderTaskRecord(provider: r[0] ?? "", jobID: r[1] ?? "", attempt: Int32(r[2] ?? "") ?? 0,
                           externalTaskID: r[3] ?? "", taskID: r[4] ?? "", kind: r[5] ?? "", callbackToken: r[6] ?? "",
                           live: r[7] == "t", status: r[8] ?? "")
    }
}

extension PostgresJobStore {
    /// See `JobStore.queueSnapshot`.
    public func queueSnapshot(limit: Int) async throws -> ETAEstimator.QueueSnapshot {
        try await pool.withConnection { c in
            var order: [String: Int] = [:]
            for (i, row) in try c.query(SQL.queueOrder, [String(limit)]).rows.enumerated() {
                if let id = row[0] { order[id] = i }
            }
            let counts = try c.query(SQL.queueCounts, []).first
            let queued = counts?[0].flatMap { Int($0) } ?? order.count
            let running = counts?[1].flatMap { Int($0) } ?? 0
            let slots = counts?[2].flatMap { Int($0) } ?? 0
            return ETAEstimator.QueueSnapshot(order: order, queued: queued, running: running, slots: slots)
        }
    }
}
