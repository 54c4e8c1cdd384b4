/// What the scheduler, pipeline and service need from durable storage.
/// ReelStore implements it on PostgreSQL; every method is durable when it returns.
public protocol JobStore: Sendable {
    /// Stores the job and its event seq 1, committed before returning, and answers both. A key
    /// the same user already used returns that first job and no event (nothing was created).
    func createJob(_ job: NewJob) async throws -> (job: Job, event: JobEvent?)
    /// `createJob` for many jobs in one statement and one commit, answered in input order. An
    /// item whose expected cost does not fit its tenant's budget fails alone (RESOURCE_EXHAUSTED);
    /// items are checked and reserved in order, in the same statement.
    func createJobs(_ jobs: [NewJob]) async throws -> [Result<(job: Job, event: JobEvent?), ReelError>]
    func job(id: String) async throws -> Job?
    /// `tenantID` nil: every tenant's jobs (an admin's view).
    func listJobs(_ filter: ListJobsInput, pageSize: Int32, tenantID: String?) async throws -> JobPage
    /// Stored events with `seq > afterSeq`, in order.
    func events(jobID: String, afterSeq: Int64) async throws -> [JobEvent]
    /// Applies `change` if the transition table allows it from the current status, writing
    /// the event in the same transaction. Throws `failedPrecondition` (invalid transition or
    /// lease lost) or `notFound`, and then changes nothing.
    func apply(_ change: StateChange, to jobID: String) async throws -> (job: Job, event: JobEvent)
    /// Applies `changes` to one job in order and in one commit, each as `apply` would: a change
    /// refused is answered with its error and changes nothing, the others still apply. Throws
    /// only when nothing was written.
    func apply(_ changes: [StateChange], to jobID: String) async throws -> [Result<(job: Job, event: JobEvent), any Error>]
    /// Claims up to `limit` ready jobs in priority order for `workerID` under a lease.
    /// `types`: only jobs of these types (nil: any).
    func claim(workerID: String, limit: Int, leaseMs: Int64, types: Set<JobType>?) async throws -> [(job: Job, event: JobEvent)]
    /// Delayed jobs whose run time has come become claimable (up to `limit` of them); answers
    /// how many did and in how many ms the next one is due (≤ 0: already; nil when none waits).
    func promoteDueJobs(limit: Int) async throws -> (promoted: Int, nextDueInMs: Int64?)
    /// Jobs `workerID` holds right now: running, under its unexpired lease.
    func heldJobIDs(workerID: String) async throws -> Set<String>
    /// A worker's heartbeat: leases are held per worker (a reeld's in-process workers, or one
    /// external worker), not per job. A live lease is extended (`lapsed` false). One that ran
    /// out (or never was) is taken afresh, after every job the worker still held went back to
    /// the queue with its attempt counted (`lapsed` true, and what was requeued): those runs
    /// must stop, and nothing they write counts any more.
    func workerHeartbeat(workerID: String, leaseMs: Int64) async throws -> (lapsed: Bool, requeued: [(job: Job, event: JobEvent)])
    /// Jobs whose worker's lease expired go back to the queue with the attempt counted.
    func requeueExpiredLeases() async throws -> [(job: Job, event: JobEvent)]
    /// Hands back jobs held by this worker (graceful shutdown), without counting an attempt.
    func releaseLeases(workerPrefix: String) async throws -> [(job: Job, event: JobEvent)]
    /// Writes the segment (once per job), bumps the scene's counters and bible version, and
    /// moves the job to `final_ready`, all in one transaction. Running it twice changes nothing.
    /// `fence`: only under that claim of the job (`Job.fence`; nil: any claim of the worker's).
    /// Finalizations that arrive together share one statement and one commit.
    func finalize(jobID: String, workerID: String, fence: Int64?, result: JobResult, durationSeconds: Double)
        async throws -> (job: Job, event: JobEvent)?
    /// Stores a new version of the scene's bible (creating the scene if needed). Scenes
    /// belong to a tenant: another tenant's scene of the same id is a different scene.
    func putSceneBible(tenantID: String, sceneID: String, bible: SceneBible) async throws -> Scene
    func scene(tenantID: String, id: String) async throws -> Scene?
    /// The bible as of `bibleVersion` and the scripts of the scene's `recent` latest segments.
    func sceneContext(tenantID: String, sceneID: String, bibleVersion: Int32, recent: Int) async throws -> SceneContext
    /// Where queued jobs stand, for ETAs (a default answers an empty queue).
    func queueSnapshot(limit: Int) async throws -> ETAEstimator.QueueSnapshot
}

extension JobStore {
    /// Where queued jobs stand, for ETAs (`ETAEstimator.QueueSnapshot`): the first `limit`
    /// runnable queued jobs in claim-key order and the queued and running counts. A store that
    /// can't tell answers an empty queue.
    public func queueSnapshot(limit: Int) async throws -> ETAEstimator.QueueSnapshot { ETAEstimator.QueueSnapshot() }

    public func listJobs(_ filter: ListJobsInput, pageSize: Int32) async throws -> JobPage {
        try await listJobs(filter, pageSize: pageSize, tenantID: nil)
    }

    /// The scene in the tenant-less namespace (auth off).
    public func putSceneBible(sceneID: String, bible: SceneBible) async throws -> Scene {
        try await putSceneBible(tenantID: "", sceneID: sceneID, bible: bible)
    }

    public func scene(id: String) async throws -> Scene? { try await scene(tenantID: "", id: id) }

    public func finalize(jobID: String, workerID: String, result: JobResult, durationSeconds: Double)
        async throws -> (job: Job, event: JobEvent)? {
        try await finalize(jobID: jobID, workerID: workerID, fence: nil, result: result, durationSeconds: durationSeconds)
    }

    /// A store whose claim needs no promotion: nothing waits.
    public func promoteDueJobs(limit: Int) async throws -> (promoted: Int, nextDueInMs: Int64?) { (0, nil) }

    public func claim(workerID: String, limit: Int, leaseMs: Int64) async throws -> [(job: Job, event: JobEvent)] {
        try await claim(workerID: workerID, limit: limit, leaseMs: leaseMs, types: nil)
    }
}

/// A running job's hold on a worker slot. A job waiting on an outside party (a provider
/// rendering its video) parks the slot so that other jobs can run meanwhile.
public protocol WorkerSlot: Sendable {
    func park() async
    func unpark() async
    /// The (parked) job waits in line for one of a provider account's scarce task slots. While
    /// a few jobs here do, claiming more that would only join them is pointless: the next job
    /// to claim is better chosen, in fair-share order, when a slot is nearer.
    func waitingForProviderSlot(_ waiting: Bool) async
}

extension WorkerSlot {
    public func waitingForProviderSlot(_ waiting: Bool) async {}
}
