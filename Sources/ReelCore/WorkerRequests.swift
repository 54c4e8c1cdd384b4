/// What external workers send (issue #9), as the domain sees it.
public struct WorkerHello: Sendable, Equatable {
    public var workerID: String
    public var jobTypes: Set<JobType>
    public var providers: [String]
    public var slots: Int32
    public init(workerID: String, jobTypes: Set<JobType>, providers: [String], slots: Int32) {
        self.workerID = workerID; self.jobTypes = jobTypes; self.providers = providers; self.slots = slots
    }

    public static let maxSlots: Int32 = 256

    public func validated() throws(ReelError) -> WorkerHello {
        try Validate.identifier(workerID, field: "worker_id")
        if slots < 1 || slots > Self.maxSlots { throw .invalid("slots", "must be between 1 and \(Self.maxSlots)") }
        if jobTypes.contains(.unspecified) { throw .invalid("job_types", "JOB_TYPE_UNSPECIFIED is not a job type") }
        return self
    }
}

public struct WorkerProgress: Sendable, Equatable {
    public var workerID: String
    public var jobID: String
    public var status: JobStatus
    public var stage: Stage
    public var progress: Int32
    public var message: String
    /// Only the non-empty fields are saved.
    public var artifacts: Artifacts?
    public init(workerID: String, jobID: String, status: JobStatus, stage: Stage, progress: Int32, message: String,
                artifacts: Artifacts?) {
        self.workerID = workerID; self.jobID = jobID; self.status = status; self.stage = stage
        self.progress = progress; self.message = message; self.artifacts = artifacts
    }
}

public struct WorkerCompletion: Sendable, Equatable {
    public var workerID: String
    public var jobID: String
    public var videoURL: String
    public var thumbnailURL: String
    public var durationSeconds: Double
    public init(workerID: String, jobID: String, videoURL: String, thumbnailURL: String, durationSeconds: Double) {
        self.workerID = workerID; self.jobID = jobID; self.videoURL = videoURL
        self.thumbnailURL = thumbnailURL; self.durationSeconds = durationSeconds
    }
}

public struct WorkerFailure: Sendable, Equatable {
    public var workerID: String
    public var jobID: String
    public var code: String
    public var message: String
    public var retryable: Bool
    public init(workerID: String, jobID: String, code: String, message: String, retryable: Bool) {
        self.workerID = workerID; self.jobID = jobID; self.code = code; self.message = message; self.retryable = retryable
    }
}

extension Artifacts {
    /// `self` with every non-empty field of `update` written over it.
    public func merging(_ update: Artifacts) -> Artifacts {
        var a = self
        func take(_ kp: WritableKeyPath<Artifacts, String>) { if !update[keyPath: kp].isEmpty { a[keyPath: kp] = update[keyPath: kp] } }
        take(\.expandedScript); take(\.validationResult); take(\.previewVideoURL); take(\.finalVideoURL)
        take(\.thumbnailURL); take(\.hlsPlaylistURL)
        // A new provider task brings its own request id: the old task's is not kept with it.
        if !update.providerJobID.isEmpty && update.providerJobID != a.providerJobID {
            a.providerJobID = update.providerJobID
            a.providerRequestID = update.providerRequestID
        }
        take(\.providerRequestID)
        return a
    }
}
