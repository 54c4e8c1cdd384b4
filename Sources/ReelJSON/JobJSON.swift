import ReelCore

// The one JSON shape of DESIGN §2's messages, used by the HTTP API, Server-Sent Events, the
// WebSocket's `job` and `reelctl --json`: protobuf's JSON mapping of proto/reel/v1/jobs.proto.
// Property names are the JSON names (lowerCamelCase); enums are proto names (`JOB_STATUS_QUEUED`);
// every field is written, defaults too, except `result` and `error` when unset; int64 fields are
// JSON numbers (all fit a double exactly).

public struct JobJSON: Codable, Sendable, Equatable {
    public var id: String
    public var userId: String
    public var sceneId: String
    public var type: String
    public var status: String
    public var stage: String
    public var progress: Int32
    public var message: String
    public var inputText: String
    public var bibleVersion: Int32
    public var config: JobConfigJSON
    public var artifacts: ArtifactsJSON
    public var result: JobResultJSON?
    public var error: JobErrorJSON?
    public var retryCount: Int32
    public var maxRetries: Int32
    public var idempotencyKey: String
    public var tier: String
    public var deadLettered: Bool
    public var workerId: String
    public var createdAtUnixMs: Int64
    public var startedAtUnixMs: Int64
    public var completedAtUnixMs: Int64
    public var lastEventSeq: Int64
    public var runAtUnixMs: Int64
    public var deadlineUnixMs: Int64
    public var webhookUrl: String
    public var provider: String
    public var costUnits: Double
    public var etaUnixMs: Int64

    public init(_ job: Job) {
        id = job.id; userId = job.userID; sceneId = job.sceneID
        type = job.type.protoName; status = job.status.protoName; stage = job.stage.protoName
        progress = job.progress; message = job.message; inputText = job.inputText; bibleVersion = job.bibleVersion
        config = JobConfigJSON(job.config); artifacts = ArtifactsJSON(job.artifacts)
        result = job.result.map(JobResultJSON.init); error = job.error.map(JobErrorJSON.init)
        retryCount = job.retryCount; maxRetries = job.maxRetries; idempotencyKey = job.idempotencyKey
        tier = job.tier.protoName; deadLettered = job.deadLettered; workerId = job.workerID
        createdAtUnixMs = job.createdAtUnixMs; startedAtUnixMs = job.startedAtUnixMs
        completedAtUnixMs = job.completedAtUnixMs; lastEventSeq = job.lastEventSeq
        runAtUnixMs = job.runAtUnixMs; deadlineUnixMs = job.deadlineUnixMs; webhookUrl = job.webhookURL
        provider = job.provider; costUnits = job.costUnits; etaUnixMs = job.isFinished ? 0 : job.etaUnixMs
    }
}

public struct JobConfigJSON: Codable, Sendable, Equatable {
    public var targetDurationSeconds: Int32
    public var quality: String
    public var model: String
    public var styleOverrides: [String: String]

    public init(_ c: JobConfig) {
        targetDurationSeconds = c.targetDurationSeconds; quality = c.quality.protoName
        model = c.model; styleOverrides = c.styleOverrides
    }
}

public struct ArtifactsJSON: Codable, Sendable, Equatable {
    public var expandedScript: String
    public var validationResult: String
    public var previewVideoUrl: String
    public var finalVideoUrl: String
    public var thumbnailUrl: String
    public var hlsPlaylistUrl: String
    public var providerJobId: String
    public var providerRequestId: String

    public init(_ a: Artifacts) {
        expandedScript = a.expandedScript; validationResult = a.validationResult
        previewVideoUrl = a.previewVideoURL; finalVideoUrl = a.finalVideoURL; thumbnailUrl = a.thumbnailURL
        hlsPlaylistUrl = a.hlsPlaylistURL; providerJobId = a.providerJobID; providerRequestId = a.providerRequestID
    }
}

public struct JobResultJSON: Codable, Sendable, Equatable {
    public var segmentId: String
    public var videoUrl: String
    public var thumbnailUrl: String
    public var durationSeconds: Double
    public var updatedBibleVersion: Int32

    public init(_ r: JobResult) {
        segmentId = r.segmentID; videoUrl = r.videoURL; thumbnailUrl = r.thumbnailURL
        durationSeconds = r.durationSeconds; updatedBibleVersion = r.updatedBibleVersion
    }
}

public struct JobErrorJSON: Codable, Sendable, Equatable {
    public var code: String
    public var message: String
    public var details: String
    public var stage: String

    public init(_ e: JobError) {
        code = e.code; message = e.message; details = e.details; stage = e.stage.protoName
    }
}

/// A `JobEvent`; `snapshot` (the whole job) only on the event that carries it.
public struct JobEventJSON: Codable, Sendable, Equatable {
    public var jobId: String
    public var seq: Int64
    public var status: String
    public var stage: String
    public var progress: Int32
    public var message: String
    public var atUnixMs: Int64
    public var deadLettered: Bool
    public var snapshot: JobJSON?
    public var etaUnixMs: Int64
    public var atRisk: Bool

    public init(_ e: JobEvent) {
        jobId = e.jobID; seq = e.seq; status = e.status.protoName; stage = e.stage.protoName
        progress = e.progress; message = e.message; atUnixMs = e.atUnixMs; deadLettered = e.deadLettered
        snapshot = e.snapshot.map(JobJSON.init)
        etaUnixMs = e.etaUnixMs; atRisk = e.atRisk
    }
}

/// `ListJobsResponse`.
public struct JobPageJSON: Codable, Sendable, Equatable {
    public var jobs: [JobJSON]
    public var nextPageToken: String

    public init(_ page: JobPage) {
        jobs = page.jobs.map(JobJSON.init); nextPageToken = page.nextPageToken
    }
}

/// A job's stored history, `{"events": […]}`.
public struct JobHistoryJSON: Codable, Sendable, Equatable {
    public var events: [JobEventJSON]

    public init(_ events: [JobEvent]) { self.events = events.map(JobEventJSON.init) }
}

/// An error: `{"code": "NOT_FOUND", "message": "job … not found"}`, the gRPC code's name and message.
public struct ErrorBodyJSON: Codable, Sendable, Equatable {
    public var code: String
    public var message: String

    public init(code: String, message: String) { self.code = code; self.message = message }
}
