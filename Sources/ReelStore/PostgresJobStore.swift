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
    private let finals: GroupCommit<Finalization, (job: Job, event: JobEvent)?>

    /// Fair share by cost (`SQL.claim`): how fast a tenant's or user's claimed cost is forgotten.
    public let fairShareHalfLifeSeconds: Double

    public init(url: String, poolSize: Int, logger: Logger, fairShareHalfLifeSeconds: Double = 600) throws {
        let pool = try PGPool(url: url, size: poolSize)
        self.pool = pool
        self.logger = logger
        self.fairShareHalfLifeSeconds = fairShareHalfLifeSeconds
        // Creates share commits, and so do state changes and finalizations. Few writers per kind:
        // what arrives while they write waits and goes in their next batch, so commits are fewer
        // and bigger (the e2e profile waited on WALWrite, one flush behind another: two writers
        // per kind ran ~25 % more no-op jobs/s than four).
        creates = GroupCommit(maxWriters: 2) { jobs in
            try await Self.createJobs(jobs, pool: pool).map { $0.mapError { $0 as any Error } }
        }
        changes = GroupCommit(maxWriters: 2) { batch in try await Self.apply(batch, pool: pool) }
        finals = GroupCommit(maxWriters: 1) { batch in try await Self.finalize(batch, pool: pool) }
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

    public func createJobs(_ jobs: [NewJob]) async throws -> [Result<(job: Job, event: JobEvent?), ReelError>] {
        jobs.isEmpty ? [] : try await Self.createJobs(jobs, pool: pool)
    }

    /// One statement for a batch of creates (see `GroupCommit`), answers in input order. A key
    /// used twice, in storage or within the batch, answers with the first job and no event. An
    /// item its tenant's budget has no room for fails alone (`SQL.createJobs` checks and reserves).
    static func createJobs(_ jobs: [NewJob], pool: PGPool) async throws -> [Result<(job: Job, event: JobEvent?), ReelError>] {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        func col(_ f: (NewJob) -> String) -> String? { JobRow.textArray(jobs.map(f)) }
        // A deadline moves the job's enqueue time earlier as its deadline nears (the boost).
        func enqueuedAt(_ j: NewJob) -> Int64 {
            PriorityScore.enqueuedAt(nowUnixMs: now, runAtUnixMs: j.runAtUnixMs, deadlineUnixMs: j.deadlineUnixMs,
                                     expectedRunMs: j.expectedRunMs)
        }
        let params: [String?] = [
            col(\.userID), col(\.sceneID), col(\.type.name), col(\.inputText),
            col { String($0.config.targetDurationSeconds) }, col(\.config.quality.name), col(\.config.model),
            col { JobRow.encodeStringMap($0.config.styleOverrides) }, col(\.idempotencyKey), col(\.tier.name),
            col { String($0.maxRetries) },
            col { String(PriorityScore(tier: $0.tier, type: $0.type, firstJobToday: true).sortKey(enqueuedAtUnixMs: enqueuedAt($0))) },
            col { String(PriorityScore(tier: $0.tier, type: $0.type, firstJobToday: false).sortKey(enqueuedAtUnixMs: enqueuedAt($0))) },
            col(\.tenantID), JobRow.textArray(jobs.indices.map(String.init)),
            JobStatus.initial.status.name, JobStatus.initial.stage?.name, JobStatus.initial.progress.map { String($0) },
            JobStatus.initial.message,
            col { String($0.runAtUnixMs) }, col { String($0.deadlineUnixMs) }, col(\.webhookURL),
            col { String($0.expectedCostUnits) },
        ]
        struct Key: Hashable { let tenant, user, key: String }
        return try await pool.withConnection { c in
            var inserted: [Key: (Job, JobEvent)] = [:]
            var refused: [Int: ReelError] = [:]
            for row in try c.query(SQL.createJobs, params).rows {
                if row[0] == nil {
                    // The last five columns: ord, tenant, limit, the room the item had, its cost.
                    let r = row.suffix(5).map { $0 ?? "" }
                    if let ord = Int(r[0]) {
                        refused[ord] = TenantBudget.exhausted(tenantID: r[1], limitUnits: Double(r[2]) ?? 0,
                                                              leftUnits: Double(r[3]) ?? 0, expectedUnits: Double(r[4]) ?? 0)
                    }
                    continue
                }
                let job = JobRow.decode(row)
                inserted[Key(tenant: job.tenantID, user: job.userID, key: job.idempotencyKey)] =
                    (job, JobRow.decodeEvent(Array(row[JobRow.columnCount...])))
            }
            var answered = Set<Key>()
            return try jobs.enumerated().map { (i, j) -> Result<(job: Job, event: JobEvent?), ReelError> in
                if let why = refused[i] { return .failure(why) }
                let k = Key(tenant: j.tenantID, user: j.userID, key: j.idempotencyKey)
                if let (job, event) = inserted[k] { return .success((job, answered.insert(k).inserted ? event : nil)) }
                // The key was taken (perhaps a moment ago by a concurrent call): return that job.
                guard let row = try c.query(SQL.jobByIdempotencyKey, [j.userID, j.idempotencyKey, j.tenantID]).first else {
                    throw ReelError(.unavailable, "idempotency key conflict; retry")
                }
                return .success((JobRow.decode(row), nil))
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

    /// A batch of state changes in one transaction, in libpq pipeline mode: one round trip
    /// and one commit for all of it. Each input is one job's list of changes, answered in
    /// order. Every list that is a plain run of steps (`isChain`) — what running jobs write —
    /// goes into ONE statement for the whole batch (`SQL.applyChains`: one row update per job,
    /// one event insert for all their steps); other changes (failures, cancels, retries) are a
    /// statement each, in job-id order. A change the table or the lease refuses fails alone.
    static func apply(_ batch: [([StateChange], String)], pool: PGPool) async throws -> [Result<[ChangeResult], any Error>] {
        try await pool.withConnection { c in
            if batch.count == 1 && batch[0].0.count == 1 && !isChain(batch[0].0) {
                return [.success([Result { try Self.apply(batch[0].0[0], to: batch[0].1, on: c) }])]
            }
            var out: [[ChangeResult?]] = batch.map { [ChangeResult?](repeating: nil, count: $0.0.count) }
            var chains: [Int] = []
            var chained = Set<String>()
            var singles: [(input: Int, index: Int)] = []
            for (i, (list, jobID)) in batch.enumerated() {
                // One chain per job per statement: a second list for the same job goes after it.
                if isChain(list) && chained.insert(jobID).inserted {
                    chains.append(i)
                    continue
                }
                for (k, ch) in list.enumerated() {
                    do {
                        if let p = ch.progress { try Validate.progress(p) }
                        singles.append((i, k))
                    } catch { out[i][k] = .failure(error) }
                }
            }
            singles.sort { (batch[$0.input].1, $0.input, $0.index) < (batch[$1.input].1, $1.input, $1.index) }
            var statements: [(sql: String, params: [String?])] = []
            if !chains.isEmpty { statements.append((SQL.applyChains, chainsParams(chains.map { batch[$0] }))) }
            statements += singles.map { o in (SQL.applyChange, changeParams(batch[o.input].0[o.index], jobID: batch[o.input].1)) }
            let rows = try c.pipeline(statements)
            var results = rows[...]
            if !chains.isEmpty {
                var written = Set<Int>()
                for row in results.removeFirst().rows {
                    guard let ord = row[0].flatMap({ Int($0) }) else { continue }
                    let i = chains[ord]
                    let list = batch[i].0
                    let job = JobRow.decode(Array(row.dropFirst()))
                    let at = Int64(row[JobRow.columnCount + 1] ?? "") ?? 0
                    let first = job.lastEventSeq - Int64(list.count)
                    for (n, ch) in list.enumerated() {
                        let event = JobEvent(jobID: job.id, seq: first + Int64(n) + 1, status: ch.status, stage: ch.stage ?? job.stage,
                                             progress: ch.progress ?? job.progress, message: ch.message, atUnixMs: at,
                                             deadLettered: job.deadLettered)
                        out[i][n] = .success((job, event))
                    }
                    written.insert(i)
                }
                for i in chains where !written.contains(i) {
                    // The first step was refused (cancelled, lease lost): so is every step after it.
                    let (list, jobID) = batch[i]
                    let why: any Error
                    do { why = try refusal(list[0], jobID: jobID, on: c) } catch { why = error }
                    for n in list.indices { out[i][n] = .failure(why) }
                }
            }
            for ((i, k), r) in zip(singles, results) {
                let (list, jobID) = batch[i]
                if let row = r.first {
                    out[i][k] = .success(JobRow.decodeWithEvent(row))
                } else {
                    do { out[i][k] = .failure(try refusal(list[k], jobID: jobID, on: c)) } catch { out[i][k] = .failure(error) }
                }
            }
            return out.map { .success($0.map { $0! }) }
        }
    }

    /// A list of one or more plain steps of a running job by one worker: each with a stage and
    /// a valid progress, no error, result, retry or dead-letter, no terminal or queued status,
    /// and each step a transition the table allows from the one before. Applied as one
    /// statement, it changes exactly what the steps one by one would.
    static func isChain(_ list: [StateChange]) -> Bool {
        guard !list.isEmpty, let worker = list[0].requireWorker else { return false }
        let fence = list[0].requireFence
        for (k, ch) in list.enumerated() {
            guard ch.requireWorker == worker, ch.requireFence == fence, ch.stage != nil, let p = ch.progress, (try? Validate.progress(p)) != nil,
                  ch.error == nil, ch.result == nil, ch.deadLettered == nil, ch.retryCount == nil, ch.runAfterMs == nil,
                  ch.status.isRunning else { return false }
            if k > 0 && !list[k - 1].status.canTransition(to: ch.status) { return false }
        }
        return true
    }

    /// `SQL.applyChains`' parameters for runs of steps of several jobs (`ord` = the position here).
    private static func chainsParams(_ inputs: [([StateChange], String)]) -> [String?] {
        func col(_ f: (([StateChange], String)) -> String?) -> String { JobRow.nullableTextArray(inputs.map(f)) }
        func int(_ v: some Sequence<Int64>) -> String { "{" + v.map(String.init).joined(separator: ",") + "}" }
        // A step with artifacts writes all of them, so the last such step decides every column.
        func art(_ f: @escaping (Artifacts) -> String) -> String {
            col { list, _ in list.last(where: { $0.artifacts != nil })?.artifacts.map(f) }
        }
        let last = { (l: ([StateChange], String)) in l.0[l.0.count - 1] }
        var evOrd: [Int64] = [], evK: [Int64] = [], evProgress: [Int64] = []
        var evStatus: [String] = [], evStage: [String] = [], evMessage: [String] = []
        for (o, (list, _)) in inputs.enumerated() {
            for (k, ch) in list.enumerated() {
                evOrd.append(Int64(o)); evK.append(Int64(k + 1)); evProgress.append(Int64(ch.progress ?? 0))
                evStatus.append(ch.status.name); evStage.append(ch.stage?.name ?? ""); evMessage.append(ch.message)
            }
        }
        return [
            col { $0.1 }, col { l in JobStatus.sources(of: l.0[0].status).map(\.name).joined(separator: ",") },
            col { $0.0[0].requireWorker }, col { $0.0[0].requireFence.map(String.init) },
            col { last($0).status.name }, col { last($0).stage?.name }, col { last($0).progress.map { String($0) } },
            col { last($0).message },
            art(\.expandedScript), art(\.validationResult), art(\.previewVideoURL), art(\.finalVideoURL),
            art(\.thumbnailURL), art(\.hlsPlaylistURL), art(\.providerJobID), art(\.providerRequestID),
            int(inputs.map { Int64($0.0.count) }), int(inputs.indices.map { Int64($0) }),
            int(evOrd), int(evK), JobRow.textArray(evStatus), JobRow.textArray(evStage), int(evProgress),
            JobRow.textArray(evMessage),
            col { l in l.0.last(where: { $0.provider != nil })?.provider },
            col { l in l.0.contains(where: { $0.chargeUnits != nil }) ? String(l.0.reduce(0) { $0 + ($1.chargeUnits ?? 0) }) : nil },
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
            JobRow.queueAction(ch.status), terminal ? "true" : "false", a?.providerRequestID,
            ch.requireFence.map(String.init), ch.provider, ch.chargeUnits.map { String($0) },
        ]
    }

    /// Why `ch` changed nothing, read from the job as it is now.
    private static func refusal(_ ch: StateChange, jobID: String, on c: PGConnectionHandle) throws -> ReelError {
        guard let cur = try c.query(SQL.statusByID, [jobID]).first else { return ReelError.notFound(jobID: jobID) }
        let status = JobStatus(name: cur[0] ?? "") ?? .unspecified
        if let w = ch.requireWorker, status.canTransition(to: ch.status) {
            if cur[1] != w { return ReelError(.failedPrecondition, "job \(jobID) is no longer held by \(w)", jobID: jobID) }
            if let f = ch.requireFence, cur[3] != String(f) {
                return ReelError(.failedPrecondition, "job \(jobID) was claimed again since \(w)'s claim \(f)", jobID: jobID)
            }
            if cur[2] != "true" { return ReelError(.failedPrecondition, "job \(jobID): the lease of \(w) has expired", jobID: jobID) }
        }
        return ReelError(.failedPrecondition, "job \(jobID) is \(status.name); it cannot become \(ch.status.name)", jobID: jobID)
    }

    public func claim(workerID: String, limit: Int, leaseMs: Int64, types: Set<JobType>?) async throws -> [(job: Job, event: JobEvent)] {
        let typeList = types.map { JobRow.textArray($0.map(\.name).sorted()) }
        return try await pool.withConnection { c in
            try c.query(SQL.claim, [workerID, String(limit), String(leaseMs), String(limit * 4 + 32), typeList,
                                    String(self.fairShareHalfLifeSeconds)])
                .rows.map(JobRow.decodeWithEvent)
        }
    }

    public func promoteDueJobs(limit: Int) async throws -> (promoted: Int, nextDueInMs: Int64?) {
        try await pool.withConnection { c in
            let r = try c.query(SQL.promoteDueJobs, [String(limit)]).first
            return (Int(r?[0] ?? "") ?? 0, (r?[1]).flatMap { Int64($0) })
        }
    }

    public func heldJobIDs(workerID: String) async throws -> Set<String> {
        try await pool.withConnection { c in Set(try c.query(SQL.heldByWorker, [workerID]).rows.compactMap { $0[0] }) }
    }

    public func workerHeartbeat(workerID: String, leaseMs: Int64) async throws -> (lapsed: Bool, requeued: [(job: Job, event: JobEvent)]) {
        let sources = Self.requeueSources
        return try await pool.withConnection { c in
            try c.transaction { () throws -> (lapsed: Bool, requeued: [(job: Job, event: JobEvent)]) in
                // The worker's lease row, locked: a claim for this worker (which renews it) waits
                // until this decision is committed, so nothing it claims can be taken for a lapse.
                _ = try c.query(SQL.ensureWorkerLease, [workerID])
                let live = try c.query(SQL.lockWorkerLease, [workerID]).first?[0] == "t"
                var requeued: [(job: Job, event: JobEvent)] = []
                if !live {
                    // Lapsed (or new): whatever the worker still held goes back to the queue before
                    // the fresh lease, which can't bring a run that was given up back to life.
                    while true {
                        let batch = try c.query(SQL.requeueLeases, [nil, "false", "true", sources, workerID]).rows
                            .map(JobRow.decodeWithEvent)
                        requeued += batch
                        if batch.isEmpty { break }
                    }
                }
                _ = try c.query(SQL.takeWorkerLease, [workerID, String(leaseMs)])
                return (!live, requeued)
            }
        }
    }

    public func requeueExpiredLeases() async throws -> [(job: Job, event: JobEvent)] {
        let requeued = try await requeue(prefix: nil, expired: true, counted: true, worker: nil)
        if requeued.isEmpty {
            try await pool.withConnection { c in
                _ = try c.query(SQL.pruneWorkerLeases, [])
                _ = try c.query(SQL.pruneFairUsage, [String(self.fairShareHalfLifeSeconds)])
            }
        }
        return requeued
    }

    public func releaseLeases(workerPrefix: String) async throws -> [(job: Job, event: JobEvent)] {
        var all: [(job: Job, event: JobEvent)] = []
        while true {
            let batch = try await requeue(prefix: workerPrefix, expired: false, counted: false, worker: nil)
            all += batch
            if batch.isEmpty { return all }
        }
    }

    /// Lease loss is `running → queued` in the transition table.
    static let requeueSources = JobRow.textArray(JobStatus.allCases.filter { $0.isRunning && $0.canTransition(to: .queued) }.map(\.name))

    private func requeue(prefix: String?, expired: Bool, counted: Bool, worker: String?) async throws -> [(job: Job, event: JobEvent)] {
        let sources = Self.requeueSources
        return try await pool.withConnection { c in
            try c.query(SQL.requeueLeases, [prefix, expired ? "true" : "false", counted ? "true" : "false", sources, worker])
                .rows.map(JobRow.decodeWithEvent)
        }
    }

    public func finalize(jobID: String, workerID: String, fence: Int64?, result: JobResult, durationSeconds: Double)
        async throws -> (job: Job, event: JobEvent)? {
        try await finals.submit(Finalization(jobID: jobID, workerID: workerID, fence: fence, result: result,
                                             durationSeconds: durationSeconds))
    }

    struct Finalization: Sendable {
        let jobID: String
        let workerID: String
        let fence: Int64?
        let result: JobResult
        let durationSeconds: Double
    }

    /// Finalizations that arrive together share one statement (`SQL.finalizeJobs`) and one
    /// commit. A job the statement did not finalize is looked at on its own: finalized already
    /// (nil: nothing changes), or why its worker may not.
    static func finalize(_ batch: [Finalization], pool: PGPool) async throws -> [Result<(job: Job, event: JobEvent)?, any Error>] {
        func col(_ f: (Finalization) -> String?) -> String { JobRow.nullableTextArray(batch.map(f)) }
        let final = StateChange(status: .finalReady, stage: .completed, progress: 100, message: "final video ready")
        let params: [String?] = [
            col(\.jobID), col(\.workerID), col { $0.fence.map(String.init) }, col(\.result.videoURL),
            col(\.result.thumbnailURL), "{" + batch.map { String($0.durationSeconds) }.joined(separator: ",") + "}",
            JobRow.textArray(JobStatus.sources(of: .finalReady).map(\.name)),
            final.status.name, final.stage?.name, final.progress.map { String($0) }, final.message,
        ]
        return try await pool.withConnection { c in
            var done: [String: (job: Job, event: JobEvent)] = [:]
            for row in try c.query(SQL.finalizeJobs, params).rows {
                let (job, event) = JobRow.decodeWithEvent(row)
                done[job.id] = (job, event)
            }
            return batch.map { f in
                if let d = done.removeValue(forKey: f.jobID) { return .success(d) }
                return Result {
                    guard let cur = try c.query(SQL.statusByID, [f.jobID]).first else { throw ReelError.notFound(jobID: f.jobID) }
                    if cur[0] == JobStatus.finalReady.name { return nil }  // finalized already: nothing changes
                    if let n = try c.query(SQL.segmentCount, [f.jobID]).first?[0], n != "0" {
                        throw ReelError(.failedPrecondition, "job \(f.jobID) already has a segment", jobID: f.jobID)
                    }
                    var ch = final
                    ch.requireWorker = f.workerID
                    ch.requireFence = f.fence
                    throw try refusal(ch, jobID: f.jobID, on: c)
                }
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

    /// Says this reeld is alive (at start, then every few seconds) with the worker `slots` it
    /// serves the queue with (the ETA counts every instance's); answers how many are alive.
    /// While two or more are, job events are NOTIFYed for each other's watchers.
    @discardableResult
    public func touchInstance(id: String, slots: Int = 0) async throws -> Int {
        try await pool.withConnection { c in
            _ = try c.query(SQL.touchInstance, [id, String(slots)])
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
