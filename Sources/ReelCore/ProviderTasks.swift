/// One attempt of a job at a real video provider (DESIGN §5): the row that holds one of the
/// account's task slots while the task is live, and what Reel must remember to never pay twice
/// (the attempt's external id, the provider's task id once known, the callback token).
public struct ProviderTaskRecord: Sendable, Equatable {
    public var provider: String
    public var jobID: String
    /// 1, 2, 3 … per job: a new attempt is a new task (after the provider failed the last one).
    public var attempt: Int32
    /// `reel-<job id>-<attempt>`: unique per account, so a submit whose answer was lost is
    /// found again by it instead of submitted again.
    public var externalTaskID: String
    /// The provider's own id; empty until a submit's answer (or a lookup) gave it.
    public var taskID: String
    /// The provider endpoint family the task lives under (Kling: `text2video`, `image2video`).
    public var kind: String
    /// The secret part of the per-attempt callback URL (≥ 128 random bits, hex).
    public var callbackToken: String
    /// Holds an account slot (submitted, or in flight and not known to have ended).
    public var live: Bool
    /// `pending` (slot taken, submit not known to have created a task), `submitted`,
    /// `succeed`, `failed`, `rejected`, `gone`.
    public var status: String

    public init(provider: String, jobID: String, attempt: Int32, externalTaskID: String, taskID: String = "",
                kind: String, callbackToken: String, live: Bool = true, status: String = "pending") {
        self.provider = provider; self.jobID = jobID; self.attempt = attempt; self.externalTaskID = externalTaskID
        self.taskID = taskID; self.kind = kind; self.callbackToken = callbackToken; self.live = live; self.status = status
    }

    /// Reel's external id for a job's attempt.
    public static func externalID(jobID: String, attempt: Int32) -> String { "reel-\(jobID)-\(attempt)" }
}

/// Durable bookkeeping of provider tasks, shared by every reeld on one database: the account's
/// concurrency cap is decided here (one atomic step), never by a read-then-write in a process.
public protocol ProviderTaskStore: Sendable {
    /// The job's newest attempt, if it has one.
    func latestProviderTask(jobID: String) async throws -> ProviderTaskRecord?
    /// Takes a slot for `record` (inserted, or its row made live again) if fewer than the
    /// provider's effective cap of tasks are live and the job's turn among the jobs waiting for
    /// one has come (fair share by cost); false when not, and the job waits in that line.
    func acquireProviderSlot(_ record: ProviderTaskRecord, cap: Int) async throws -> Bool
    /// The job stops waiting for a slot at `provider` (cancelled, or gave up).
    func leaveProviderSlotQueue(provider: String, jobID: String) async throws
    /// Gives a slot back without a task having been made (a throttled or parked submit).
    func releaseProviderSlot(jobID: String, attempt: Int32) async throws
    /// The provider answered: its task id (and kind) for the attempt.
    func recordProviderTaskID(jobID: String, attempt: Int32, taskID: String, kind: String) async throws
    /// The task ended (or was refused): the slot is free; `status` says how.
    func endProviderTask(jobID: String, attempt: Int32, status: String) async throws
    /// `endProviderTask` with the provider's charge for the attempt (nil: it said none), recorded
    /// once per attempt and added, times `weight`, to the job's `cost_units`. Answers the job's
    /// tenant and user and the weighted units added, when they were.
    func endProviderTask(jobID: String, attempt: Int32, status: String, charge: Double?, weight: Double) async throws
        -> (tenantID: String, userID: String, units: Double)?
    /// The attempt a callback token belongs to.
    func providerTask(callbackToken: String) async throws -> ProviderTaskRecord?
    /// Live tasks of the provider (all instances).
    func liveProviderTasks(provider: String) async throws -> Int
    /// Lowers the provider's cap to `cap` for `holdMs` (another client of the account holds slots).
    func limitProviderCap(provider: String, cap: Int, holdMs: Int64) async throws
    /// Live tasks that no running job follows any more (its job ended, was cancelled, or moved
    /// on to another attempt): each must be watched until the provider ends it.
    func unfollowedProviderTasks(provider: String, limit: Int) async throws -> [ProviderTaskRecord]
}
