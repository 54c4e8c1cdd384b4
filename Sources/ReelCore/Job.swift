/// A job as the API shows it (DESIGN §2, seed 002 §3).
public struct Job: Sendable, Equatable {
    public var id: String
    public var userID: String
    public var sceneID: String
    public var type: JobType
    public var status: JobStatus
    public var stage: Stage
    public var progress: Int32
    public var message: String
    public var inputText: String
    public var bibleVersion: Int32
    public var config: JobConfig
    public var artifacts: Artifacts
    public var result: JobResult?
    public var error: JobError?
    public var retryCount: Int32
    public var maxRetries: Int32
    public var idempotencyKey: String
    public var tier: Tier
    public var deadLettered: Bool
    public var workerID: String
    public var createdAtUnixMs: Int64
    public var startedAtUnixMs: Int64
    public var completedAtUnixMs: Int64
    public var lastEventSeq: Int64
    /// Not started before this (0: as soon as a worker is free).
    public var runAtUnixMs: Int64 = 0
    /// 0: none.
    public var deadlineUnixMs: Int64 = 0
    /// POSTed the job's JSON once it ends ("" : none).
    public var webhookURL: String = ""
    /// Which provider ran (or runs) the job: `simulated`, `kling`, `runway`; "" before one did.
    public var provider: String = ""
    /// The provider's charge times its weight, summed over attempts (DESIGN §2 "Cost").
    public var costUnits: Double = 0
    /// When the job is expected to reach FINAL_READY; 0 when terminal (or not yet estimated).
    public var etaUnixMs: Int64 = 0
    /// The tenant that owns the job ("" when auth is off). Never sent on the wire.
    public var tenantID: String = ""
    /// Which claim of the job this is (bumped by every claim; not part of the API): the fencing
    /// number a worker's writes carry (`StateChange.requireFence`).
    public var fence: Int64 = 0

    public init(
        id: String = "", userID: String = "", sceneID: String = "", type: JobType = .unspecified,
        status: JobStatus = .queued, stage: Stage = .pending, progress: Int32 = 0, message: String = "",
        inputText: String = "", bibleVersion: Int32 = 0, config: JobConfig = JobConfig(),
        artifacts: Artifacts = Artifacts(), result: JobResult? = nil, error: JobError? = nil,
        retryCount: Int32 = 0, maxRetries: Int32 = 3, idempotencyKey: String = "", tier: Tier = .standard,
        deadLettered: Bool = false, workerID: String = "", createdAtUnixMs: Int64 = 0,
        startedAtUnixMs: Int64 = 0, completedAtUnixMs: Int64 = 0, lastEventSeq: Int64 = 0
    ) {
        self.id = id; self.userID = userID; self.sceneID = sceneID; self.type = type
        self.status = status; self.stage = stage; self.progress = progress; self.message = message
        self.inputText = inputText; self.bibleVersion = bibleVersion; self.config = config
        self.artifacts = artifacts; self.result = result; self.error = error
        self.retryCount = retryCount; self.maxRetries = maxRetries; self.idempotencyKey = idempotencyKey
        self.tier = tier; self.deadLettered = deadLettered; self.workerID = workerID
        self.createdAtUnixMs = createdAtUnixMs; self.startedAtUnixMs = startedAtUnixMs
        self.completedAtUnixMs = completedAtUnixMs; self.lastEventSeq = lastEventSeq
    }

    /// True when no further event will ever be written for this job (a watch stream ends here).
    public var isFinished: Bool { status.endsWatch(deadLettered: deadLettered) }
}

public struct JobConfig: Sendable, Equatable {
    public var targetDurationSeconds: Int32
    public var quality: Quality
    public var model: String
    public var styleOverrides: [String: String]

    public init(targetDurationSeconds: Int32 = 0, quality: Quality = .unspecified, model: String = "",
                styleOverrides: [String: String] = [:]) {
        self.targetDurationSeconds = targetDurationSeconds; self.quality = quality
        self.model = model; self.styleOverrides = styleOverrides
    }
}

public struct Artifacts: Sendable, Equatable {
    public var expandedScript = ""
    public var validationResult = ""
    public var previewVideoURL = ""
    public var finalVideoURL = ""
    public var thumbnailURL = ""
    public var hlsPlaylistURL = ""
    public var providerJobID = ""
    /// The provider's request id of the answer that created `providerJobID` (support tickets name it).
    public var providerRequestID = ""
    public init() {}
}

public struct JobResult: Sendable, Equatable {
    public var segmentID: String
    public var videoURL: String
    public var thumbnailURL: String
    public var durationSeconds: Double
    public var updatedBibleVersion: Int32

    public init(segmentID: String = "", videoURL: String = "", thumbnailURL: String = "",
                durationSeconds: Double = 0, updatedBibleVersion: Int32 = 0) {
        self.segmentID = segmentID; self.videoURL = videoURL; self.thumbnailURL = thumbnailURL
        self.durationSeconds = durationSeconds; self.updatedBibleVersion = updatedBibleVersion
    }
}

public struct JobError: Sendable, Equatable {
    public var code: String
    public var message: String
    public var details: String
    public var stage: Stage

    public init(code: String, message: String, details: String = "", stage: Stage = .unspecified) {
        self.code = code; self.message = message; self.details = details; self.stage = stage
    }
}

/// One entry of a job's append-only history; `seq` is 1, 2, 3 … per job.
public struct JobEvent: Sendable, Equatable {
    public var jobID: String
    public var seq: Int64
    public var status: JobStatus
    public var stage: Stage
    public var progress: Int32
    public var message: String
    public var atUnixMs: Int64
    public var deadLettered: Bool
    /// Set on the first event of a watch stream only.
    public var snapshot: Job?
    /// When the job is expected to reach FINAL_READY (never before `atUnixMs`; 0 when terminal).
    public var etaUnixMs: Int64 = 0
    /// The ETA is past the job's deadline.
    public var atRisk: Bool = false

    public init(jobID: String, seq: Int64, status: JobStatus, stage: Stage, progress: Int32,
                message: String, atUnixMs: Int64, deadLettered: Bool = false, snapshot: Job? = nil) {
        self.jobID = jobID; self.seq = seq; self.status = status; self.stage = stage
        self.progress = progress; self.message = message; self.atUnixMs = atUnixMs
        self.deadLettered = deadLettered; self.snapshot = snapshot
    }

    /// The event a watch stream opens with: the job's current state plus the whole job.
    public static func snapshot(of job: Job) -> JobEvent {
        JobEvent(jobID: job.id, seq: job.lastEventSeq, status: job.status, stage: job.stage,
                 progress: job.progress, message: job.message, atUnixMs: job.createdAtUnixMs,
                 deadLettered: job.deadLettered, snapshot: job).withETA(of: job)
    }

    /// This event with the job's ETA and its at-risk flag (ETA past the deadline).
    public func withETA(of job: Job) -> JobEvent {
        var e = self
        if endsWatch || job.isFinished || job.etaUnixMs == 0 {
            e.etaUnixMs = 0; e.atRisk = false
        } else {
            e.etaUnixMs = max(job.etaUnixMs, atUnixMs)
            e.atRisk = job.deadlineUnixMs > 0 && e.etaUnixMs > job.deadlineUnixMs
        }
        return e
    }

    public var endsWatch: Bool { status.endsWatch(deadLettered: deadLettered) }
}
