import ReelCore
import Logging
import Foundation

/// `JobStore` on PostgreSQL through libpq. Every method commits before it returns.
public final class PostgresJobStore: JobStore {
    public let pool: PGPool
    private let logger: Logger

    private let creates: GroupCommit<NewJob, (job: Job, event: JobEvent?)>
    typealias ChangeResult = Result<(job: Job, event: JobEvent), any Error>
    private let changes: GroupCommit<([StateChange], String), [ChangeResult]>

    public init(url: String, poolSize: Int, logger: Logger) throws {
        let pool = try PGPool(url: url, size: poolSize)
        self.pool = pool
        self.logger = logger
        // Creates share commits, and so do state changes; a quarter of the connections each is
        // plenty to keep fsyncs busy and leaves the rest to reads and claims.
        creates = GroupCommit(maxWriters: max(2, poolSize / 4)) { jobs in
            try await Self.createJobs(jobs, pool: pool).map { .success($0) }
        }
        changes = GroupCommit(maxWriters: max(2, poolSize / 4)) { batch in try await Self.apply(batch, pool: pool) }
    }

    /// Applies pending migrations in order; safe to run from several processes at once.
    public func migrate() async throws -> [Int] {
        try await pool.withConnection { c in
            try c.exec(SQL.migrationsTable)
            return try c.transaction {
                try c.exec(SQL.migrationLock)
                let applied = Set(try c.query(SQL.appliedVersions, []).rows.compactMap { $0[0].flatMap { Int($0) } })
                var done: [Int] = []
                for m in Migrations.all where !applied.contains(m.version) {
                    try c.exec(m.sql)
                    _ = try c.query(SQL.recordMigration, [String(m.version), m.name])
                    done.append(m.version)
                }
                return done
            }
        }
    }

    public func createJob(_ j: NewJob) async throws -> (job: Job, event: JobEvent?) {
        try await creates.submit(j)
    }

    public func createJobs(_ jobs: [NewJob]) async throws -> [(job: Job, event: JobEvent?)] {
        jobs.isEmpty ? [] : try await Self.createJobs(jobs, pool: pool)
    }

    /// One statement for a batch of creates (see `GroupCommit`), answers in input order. A key
    /// used twice, in storage or within the batch, answers with the first job and no event.
    static func createJobs(_ jobs: [NewJob], pool: PGPool) async throws -> [(job: Job, event: JobEvent?)] {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        func col(_ f: (NewJob) -> String) -> String? { JobRow.textArray(jobs.map(f)) }
        let params: [String?] = [
            col(\.userID), col(\.sceneID), col(\.type.name), col(\.inputText),
            col { String($0.config.targetDurationSeconds) }, col(\.config.quality.name), col(\.config.model),
            col { JobRow.encodeStringMap($0.config.styleOverrides) }, col(\.idempotencyKey), col(\.tier.name),
            col { String($0.maxRetries) },
            col { String(PriorityScore(tier: $0.tier, type: $0.type, firstJobToday: true).sortKey(enqueuedAtUnixMs: now)) },
            col { String(PriorityScore(tier: $0.tier, type: $0.type, firstJobToday: false).sortKey(enqueuedAtUnixMs: now)) },
            col(\.tenantID), JobRow.textArray(jobs.indices.map(String.init)),
            JobStatus.initial.status.name, JobStatus.initial.stage?.name, JobStatus.initial.progress.map { String($0) },
            JobStatus.initial.message,
        ]
        struct Key: Hashable { let tenant, user, key: String }
        return try await pool.withConnection { c in
            var inserted: [Key: (Job, JobEvent)] = [:]
            for row in try c.query(SQL.createJobs, params).rows {
                let job = JobRow.decode(row)
                inserted[Key(tenant: job.tenantID, user: job.userID, key: job.idempotencyKey)] =
                    (job, JobRow.decodeEvent(Array(row[JobRow.columnCount...])))
            }
            var answered = Set<Key>()
            return try jobs.map { j in
                let k = Key(tenant: j.tenantID, user: j.userID, key: j.idempotencyKey)
                if let (job, event) = inserted[k] { return (job, answered.insert(k).inserted ? event : nil) }
                // The key was taken (perhaps a moment ago by a concurrent call): return that job.
                guard let row = try c.query(SQL.jobByIdempotencyKey, [j.userID, j.idempotencyKey, j.tenantID]).first else {
                    throw ReelError(.unavailable, "idempotency key conflict; retry")
                }
                return (JobRow.decode(row), nil)
            }
        }
    }

    public func job(id: String) async throws -> Job? {
        try await pool.withConnection { c in try c.query(SQL.jobByID, [id]).first.map(JobRow.decode) }
    }

    public func listJobs(_ f: ListJobsInput, pageSize: Int32, tenantID: String?) async throws -> JobPage {
        var cursorID: String? = nil
        if !f.pageToken.isEmpty {
            guard let id = try? Validate.jobID(f.pageToken, field: "page_token") else {
                throw ReelError.invalid("page_token", "is not a token this server issued")
            }
            cursorID = id
        }
        let cursor = cursorID
        return try await pool.withConnection { c in
            var cursorMicros: String? = nil
            if let id = cursor {
                guard let row = try c.query(SQL.listCursor, [id]).first, let v = row[0] else {
                    throw ReelError.invalid("page_token", "is not a token this server issued")
                }
                cursorMicros = v
            }
            let rows = try c.query(SQL.listJobs, [
                f.userID, f.sceneID, f.status == .unspecified ? "" : f.status.name, f.deadLetteredOnly ? "true" : "false",
                cursorMicros, cursor, String(pageSize + 1), tenantID,
            ]).rows
            var jobs = rows.prefix(Int(pageSize)).map(JobRow.decode)
            let next = rows.count > Int(pageSize) ? (jobs.last?.id ?? "") : ""
            if jobs.count > Int(pageSize) { jobs.removeLast() }
            return JobPage(jobs: jobs, nextPageToken: next)
        }
    }

    public func events(jobID: String, afterSeq: Int64) async throws -> [JobEvent] {
        try await pool.withConnection { c in
            try c.query(SQL.eventsAfter, [jobID, String(afterSeq)]).rows.map(JobRow.decodeEvent)
        }
    }

    public func apply(_ change: StateChange, to jobID: String) async throws -> (job: Job, event: JobEvent) {
        try await changes.submit(([change], jobID))[0].get()
    }

    public func apply(_ list: [StateChange], to jobID: String) async throws -> [Result<(job: Job, event: JobEvent), any Error>] {
        list.isEmpty ? [] : try await changes.submit((list, jobID))
    }

    /// A batch of state changes in one transaction, rows locked in job-id order (so that two
    /// batches never deadlock; one job's changes keep their order); a change the table or the
    /// lease refuses fails alone. The batch goes out in libpq pipeline mode: one round trip and
    /// one commit for all of it. Each input is one job's list of changes, answered in order; a
    /// list that is a plain run of steps (`isChain`) is one statement: one row update with the
    /// last state and one event row per step.
    static func apply(_ batch: [([StateChange], String)], pool: PGPool) async throws -> [Result<[ChangeResult], any Error>] {
        try await pool.withConnection { c in
            if batch.count == 1 && batch[0].0.count == 1 {
                return [.success([Result { try Self.apply(batch[0].0[0], to: batch[0].1, on: c) }])]
            }
            var out: [[ChangeResult?]] = batch.map { [ChangeResult?](repeating: nil, count: $0.0.count) }
            // One statement per change, or per chain (index -1).
            var order: [(input: Int, index: Int)] = []
            for (i, (list, _)) in batch.enumerated() {
                if isChain(list) {
                    order.append((i, -1))
                    continue
                }
                for (k, ch) in list.enumerated() {
                    do {
                        if let p = ch.progress { try Validate.progress(p) }
                        order.append((i, k))
                    } catch { out[i][k] = .failure(error) }
                }
            }
            order.sort { (batch[$0.input].1, $0.input, $0.index) < (batch[$1.input].1, $1.input, $1.index) }
            let rows = try c.pipeline(order.map { o in
                let (list, jobID) = batch[o.input]
                return o.index < 0 ? (SQL.applyChain, chainParams(list, jobID: jobID))
                                   : (SQL.applyChange, changeParams(list[o.index], jobID: jobID))
            })
            for ((i, k), r) in zip(order, rows) {
                let (list, jobID) = batch[i]
                if k < 0 {
                    if r.rows.count == list.count {
                        let job = JobRow.decode(r.rows[0])
                        for (n, row) in r.rows.enumerated() {
                            out[i][n] = .success((job, JobRow.decodeEvent(Array(row[JobRow.columnCount...]))))
                        }
                    } else {
                        // The first step was refused (cancelled, lease lost): so is every step after it.
                        let why: any Error
                        do { why = try refusal(list[0], jobID: jobID, on: c) } catch { why = error }
                        for n in list.indices { out[i][n] = .failure(why) }
                    }
                } else if let row = r.first {
                    out[i][k] = .success(JobRow.decodeWithEvent(row))
                } else {
                    do { out[i][k] = .failure(try refusal(list[k], jobID: jobID, on: c)) } catch { out[i][k] = .failure(error) }
                }
            }
            return out.map { .success($0.map { $0! }) }
        }
    }

    /// A list of two or more plain steps of a running job by one worker: each with a stage and
    /// a valid progress, no error, result, retry or dead-letter, no terminal or queued status,
    /// and each step a transition the table allows from the one before. Applied as one
    /// statement, it changes exactly what the steps one by one would.
    static func isChain(_ list: [StateChange]) -> Bool {
        guard list.count >= 2, let worker = list[0].requireWorker else { return false }
        for (k, ch) in list.enumerated() {
            guard ch.requireWorker == worker, ch.stage != nil, let p = ch.progress, (try? Validate.progress(p)) != nil,
                  ch.error == nil, ch.result == nil, ch.deadLettered == nil, ch.retryCount == nil, ch.runAfterMs == nil,
                  ch.status.isRunning else { return false }
            if k > 0 && !list[k - 1].status.canTransition(to: ch.status) { return false }
        }
        return true
    }

    private static func chainParams(_ list: [StateChange], jobID: String) -> [String?] {
        let last = list[list.count - 1]
        // A step with artifacts writes all of them, so the last such step decides every column.
        let a = list.last(where: { $0.artifacts != nil })?.artifacts
        return [
            jobID, JobRow.textArray(JobStatus.sources(of: list[0].status).map(\.name)), last.requireWorker,
            last.status.name, last.stage?.name, last.progress.map { String($0) }, last.message,
        ] + JobRow.artifactParams(a) + [
            String(list.count), JobRow.textArray(list.map(\.status.name)), JobRow.textArray(list.map { $0.stage?.name ?? "" }),
            "{" + list.map { String($0.progress ?? 0) }.joined(separator: ",") + "}", JobRow.textArray(list.map(\.message)),
            a?.providerRequestID,
        ]
    }

    static func apply(_ ch: StateChange, to jobID: String, on c: PGConnectionHandle) throws -> (job: Job, event: JobEvent) {
        if let p = ch.progress { try Validate.progress(p) }
        if let row = try c.query(SQL.applyChange, changeParams(ch, jobID: jobID)).first { return JobRow.decodeWithEvent(row) }
        throw try refusal(ch, jobID: jobID, on: c)
    }

    private static func changeParams(_ ch: StateChange, jobID: String) -> [String?] {
        let sources = JobRow.textArray(JobStatus.sources(of: ch.status).map(\.name))
        let a = ch.artifacts
        let terminal = ch.status.isTerminal(deadLettered: ch.deadLettered ?? false)
        return [
            jobID, ch.status.name, ch.stage?.name, ch.progress.map { String($0) }, ch.message, sources, ch.requireWorker,
        ] + JobRow.artifactParams(a) + [
            ch.result?.segmentID, ch.result?.videoURL, ch.result?.thumbnailURL,
            ch.result.map { String($0.durationSeconds) }, ch.result.map { String($0.updatedBibleVersion) },
            ch.error?.code, ch.error?.message, ch.error?.details, ch.error.map { $0.stage.name },
            ch.deadLettered.map { $0 ? "true" : "false" }, ch.retryCount.map(String.init), ch.runAfterMs.map(String.init),
            ch.status.isRunning ? "true" : "false", terminal ? "true" : "false", a?.providerRequestID,
        ]
    }

    /// Why `ch` changed nothing, read from the job as it is now.
    private static func refusal(_ ch: StateChange, jobID: String, on c: PGConnectionHandle) throws -> ReelError {
        guard let cur = try c.query(SQL.statusByID, [jobID]).first else { return ReelError.notFound(jobID: jobID) }
        let status = JobStatus(name: cur[0] ?? "") ?? .unspecified
        if let w = ch.requireWorker, status.canTransition(to: ch.status) {
            if cur[1] != w { return ReelError(.failedPrecondition, "job \(jobID) is no longer held by \(w)", jobID: jobID) }
            if cur[2] != "true" { return ReelError(.failedPrecondition, "job \(jobID): the lease of \(w) has expired", jobID: jobID) }
        }
        return ReelError(.failedPrecondition, "job \(jobID) is \(status.name); it cannot become \(ch.status.name)", jobID: jobID)
    }

    public func claim(workerID: String, limit: Int, leaseMs: Int64, types: Set<JobType>?) async throws -> [(job: Job, event: JobEvent)] {
        let typeList = types.map { JobRow.textArray($0.map(\.name).sorted()) }
        return try await pool.withConnection { c in
            try c.query(SQL.claim, [workerID, String(limit), String(leaseMs), String(limit * 4 + 32), typeList])
                .rows.map(JobRow.decodeWithEvent)
        }
    }

    public func heldJobIDs(workerID: String) async throws -> Set<String> {
        try await pool.withConnection { c in Set(try c.query(SQL.heldBy, [workerID, JobRow.runningStatuses]).rows.compactMap { $0[0] }) }
    }

    public func renewLease(jobID: String, workerID: String, leaseMs: Int64) async throws -> Bool {
        try await pool.withConnection { c in
            try !c.query(SQL.renewLease, [jobID, workerID, String(leaseMs), JobRow.runningStatuses]).rows.isEmpty
        }
    }

    public func requeueExpiredLeases() async throws -> [(job: Job, event: JobEvent)] {
        try await requeue(prefix: nil, expired: true)
    }

    public func releaseLeases(workerPrefix: String) async throws -> [(job: Job, event: JobEvent)] {
        try await requeue(prefix: workerPrefix, expired: false)
    }

    private func requeue(prefix: String?, expired: Bool) async throws -> [(job: Job, event: JobEvent)] {
        // Lease loss is `running → queued` in the transition table.
        let sources = JobRow.textArray(JobStatus.allCases.filter { $0.isRunning && $0.canTransition(to: .queued) }.map(\.name))
        return try await pool.withConnection { c in
            try c.query(SQL.requeueLeases, [prefix, expired ? "true" : "false", expired ? "true" : "false", sources])
                .rows.map(JobRow.decodeWithEvent)
        }
    }

    public func finalize(jobID: String, workerID: String, result: JobResult, durationSeconds: Double)
        async throws -> (job: Job, event: JobEvent)? {
        try await pool.withConnection { c in
            try c.transaction { () throws -> (job: Job, event: JobEvent)? in
                guard let cur = try c.query(SQL.lockJob, [jobID]).first else { throw ReelError.notFound(jobID: jobID) }
                if cur[0] == JobStatus.finalReady.name { return nil }  // finalized already: nothing changes
                guard let seg = try c.query(SQL.insertSegment, [jobID, result.videoURL, result.thumbnailURL,
                                                                String(durationSeconds)]).first,
                      let segmentID = seg[0], let sceneID = seg[1], let tenantID = seg[2] else {
                    throw ReelError(.failedPrecondition, "job \(jobID) already has a segment", jobID: jobID)
                }
                let bible = try c.query(SQL.bumpScene, [sceneID, String(durationSeconds), tenantID]).first?[0].flatMap { Int32($0) } ?? 0
                var r = result
                r.segmentID = segmentID
                r.durationSeconds = durationSeconds
                r.updatedBibleVersion = bible
                let change = StateChange(status: .finalReady, stage: .completed, progress: 100, message: "final video ready",
                                         result: r, requireWorker: workerID)
                return try Self.apply(change, to: jobID, on: c)
            }
        }
    }

    public func close() { pool.close() }

    /// Queued jobs per tier: (tier, depth, seconds the oldest runnable one has waited).
    public func queueStats() async throws -> [(tier: Tier, depth: Int, oldestWaitSeconds: Double)] {
        try await pool.withConnection { c in
            try c.query(SQL.queueStats, []).rows.map { r in
                (Tier(name: r[0] ?? "") ?? .standard, Int(r[1] ?? "") ?? 0, max(Double(r[2] ?? "") ?? 0, 0))
            }
        }
    }

    /// Says this reeld is alive (at start, then every few seconds); answers how many are.
    /// While two or more are, job events are NOTIFYed for each other's watchers.
    @discardableResult
    public func touchInstance(id: String) async throws -> Int {
        try await pool.withConnection { c in
            _ = try c.query(SQL.touchInstance, [id])
            return Int(try c.query(SQL.liveInstances, []).first?[0] ?? "") ?? 0
        }
    }

    public func removeInstance(id: String) async {
        _ = try? await pool.withConnection { c in _ = try c.query(SQL.removeInstance, [id]) }
    }

    /// True when the database answers a trivial query.
    public func ping() async -> Bool {
        (try? await pool.withConnection { c in _ = try c.query(SQL.ping, []); return true }) ?? false
    }

    public func putSceneBible(tenantID: String, sceneID: String, bible: SceneBible) async throws -> Scene {
        let json = try JobRow.encodeBible(bible)
        return try await pool.withConnection { c in
            guard let row = try c.query(SQL.putSceneBible, [sceneID, json, tenantID]).first else {
                throw ReelError(.internal, "scene \(sceneID) was not stored")
            }
            return JobRow.decodeScene(row)
        }
    }

    public func scene(tenantID: String, id: String) async throws -> Scene? {
        try await pool.withConnection { c in try c.query(SQL.sceneByID, [id, tenantID]).first.map(JobRow.decodeScene) }
    }

    public func sceneContext(tenantID: String, sceneID: String, bibleVersion: Int32, recent: Int) async throws -> SceneContext {
        try await pool.withConnection { c in
            let bible = try c.query(SQL.bibleAtVersion, [sceneID, String(bibleVersion), tenantID]).first?[0]
                .flatMap { JobRow.decodeBible($0) } ?? .empty
            let recent = try c.query(SQL.recentScripts, [sceneID, String(recent), tenantID]).rows
            var context = SceneContext(bible: bible, recentScripts: recent.compactMap { $0[0] }.reversed())
            context.latestSegmentJobID = recent.first?[1]
            return context
        }
    }
}

extension PostgresJobStore {
    /// Creates database `name` on the server `adminURL` points at and returns its URL
    /// (used by tests and tools that want a database of their own).
    public static func createDatabase(adminURL: String, name: String) async throws -> String {
        guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }), !name.isEmpty else {
            throw ReelError.invalid("name", "database names here are [A-Za-z0-9_]+")
        }
        let admin = try PGPool(url: adminURL, size: 1)
        defer { admin.close() }
        try await admin.withConnection { c in _ = try c.exec("CREATE DATABASE \(name)") }
        guard let slash = adminURL.lastIndex(of: "/"), adminURL[..<slash].hasSuffix("/") == false else {
            throw ReelError.invalid("url", "expected postgresql://…/DBNAME")
        }
        let query = adminURL[slash...].firstIndex(of: "?").map { String(adminURL[$0...]) } ?? ""
        return String(adminURL[..<slash]) + "/" + name + query
    }

    /// One number from a scalar query: for tests and diagnostics.
    public func scalar(_ sql: String) async throws -> Int {
        try await pool.withConnection { c in Int(try c.exec(sql).first?[0] ?? "") ?? -1 }
    }
}

extension PostgresJobStore: APIKeyStore {
    public func createKey(tenantID: String, secret: String, admin: Bool, rateLimitPerSecond: Int32) async throws -> APIKey {
        try await pool.withConnection { c in
            guard let r = try c.query(SQL.createKey, [tenantID, APIKey.hash(secret: secret), APIKey.prefix(of: secret),
                                                      admin ? "true" : "false", String(rateLimitPerSecond)]).first else {
                throw ReelError(.internal, "key not stored")
            }
            return Self.decodeKey(r)
        }
    }

    public func key(secret: String) async throws -> APIKey? {
        try await pool.withConnection { c in try c.query(SQL.keyByHash, [APIKey.hash(secret: secret)]).first.map(Self.decodeKey) }
    }

    public func listKeys(tenantID: String?) async throws -> [APIKey] {
        try await pool.withConnection { c in try c.query(SQL.listKeys, [tenantID]).rows.map(Self.decodeKey) }
    }

    public func revokeKey(id: String) async throws -> APIKey? {
        try await pool.withConnection { c in try c.query(SQL.revokeKey, [id]).first.map(Self.decodeKey) }
    }

    static func decodeKey(_ r: [String?]) -> APIKey {
        APIKey(id: r[0] ?? "", tenantID: r[1] ?? "", prefix: r[2] ?? "", admin: r[3] == "t",
               rateLimitPerSecond: Int32(r[4] ?? "") ?? 0, createdAtUnixMs: Int64(r[5] ?? "") ?? 0, revoked: r[6] == "t")
    }
}
