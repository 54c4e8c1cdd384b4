import ReelCore
import Logging

/// Runs one claimed job through its stages (DESIGN §5), writing every step through the
/// store and publishing each committed event. Each stage's artifact is saved with the step
/// that finishes it, so a retried job resumes after its last finished stage.
public struct Pipeline: Sendable {
    public struct Config: Sendable {
        public var stageDelay: Duration
        public var retry: RetryPolicy
        public init(stageDelay: Duration = .milliseconds(500), retry: RetryPolicy = RetryPolicy()) {
            self.stageDelay = stageDelay; self.retry = retry
        }
    }

    let store: any JobStore
    let provider: any VideoProvider
    let config: Config
    let workerID: String
    let logger: Logger
    let publish: @Sendable (JobEvent) -> Void

    public init(store: any JobStore, provider: any VideoProvider, config: Config, workerID: String, logger: Logger,
                publish: @escaping @Sendable (JobEvent) -> Void) {
        self.store = store; self.provider = provider; self.config = config; self.workerID = workerID
        self.logger = logger; self.publish = publish
    }

    /// A stage failure: `retryable` ones go back to the queue while attempts remain.
    public struct StageFailure: Error, Sendable {
        public var code: String
        public var message: String
        public var retryable: Bool
        public init(code: String, message: String, retryable: Bool) {
            self.code = code; self.message = message; self.retryable = retryable
        }
    }

    public func run(_ claimed: Job) async {
        var log = logger
        log[metadataKey: "reel.job_id"] = "\(claimed.id)"
        var job = claimed
        do {
            try await stages(&job)
        } catch let e as ReelError where e.code == .failedPrecondition || e.code == .notFound {
            // Cancelled, or the lease moved on: this worker writes nothing more.
            log.info("job stopped at checkpoint", metadata: ["reason": "\(e.message)"])
        } catch is CancellationError {
            log.info("job interrupted; lease will be handed back or expire")
        } catch let f as StageFailure {
            await fail(job, f, log)
        } catch {
            log.warning("job step failed", metadata: ["error": "\(error)"])
            await fail(job, StageFailure(code: "INTERNAL", message: "\(error)", retryable: true), log)
        }
    }

    private func step(_ job: inout Job, _ status: JobStatus, _ stage: Stage, _ progress: Int32, _ message: String,
                      artifacts: Artifacts? = nil) async throws {
        try Task.checkCancellation()
        let change = StateChange(status: status, stage: stage, progress: progress, message: message,
                                 artifacts: artifacts, requireWorker: workerID)
        let (updated, event) = try await store.apply(change, to: job.id)
        job = updated
        publish(event)
    }

    private func pause() async throws {
        if config.stageDelay > .zero { try await Task.sleep(for: config.stageDelay) }
    }

    private func stages(_ job: inout Job) async throws {
        var a = job.artifacts

        // 1. Script expansion (→ 25 %).
        if a.expandedScript.isEmpty {
            try await step(&job, .processing, .scriptExpansion, max(job.progress, 5), "expanding script")
            try await pause()
            a.expandedScript = ScriptWriter.expand(job)
            try await step(&job, .scriptReady, .scriptExpansion, 25, "script expanded", artifacts: a)
        } else {
            try await step(&job, .scriptReady, .scriptExpansion, 25, "script reused from an earlier attempt")
        }

        // 2. Continuity validation (→ 35 %).
        if a.validationResult.isEmpty {
            try await step(&job, .scriptReady, .continuityValidation, 30, "validating continuity")
            try await pause()
            a.validationResult = ScriptWriter.validate(job, script: a.expandedScript)
            try await step(&job, .continuityChecked, .continuityValidation, 35, "continuity checked", artifacts: a)
        } else {
            try await step(&job, .continuityChecked, .continuityValidation, 35, "continuity result reused")
        }

        // 3. Video generation (35 → 85 %): the provider id is saved before polling starts.
        if a.providerJobID.isEmpty {
            let pid = try await provider.submit(prompt: a.expandedScript, config: job.config, jobID: job.id)
            a.providerJobID = pid
            try await step(&job, .continuityChecked, .videoGeneration, 40, "submitted to \(provider.name)", artifacts: a)
        } else {
            // Never submit twice: a retried or restarted job polls the generation it already paid for.
            try await step(&job, .continuityChecked, .videoGeneration, 40, "resuming \(provider.name) job \(a.providerJobID)")
        }
        var pid = a.providerJobID
        var done: ProviderStatus
        while true {
            try await pause()
            done = try await provider.poll(providerJobID: pid)
            if done.state == .succeeded { break }
            if case .failed(let why) = done.state {
                throw StageFailure(code: "PROVIDER_FAILED", message: why, retryable: true)
            }
            let p = 40 + done.progress * 45 / 100
            try await step(&job, .continuityChecked, .videoGeneration, min(max(p, 40), 84), "generating video (\(done.progress)%)")
            if provider is SimulatedProvider { pid = SimulatedProvider.advance(pid) }
        }
        a.previewVideoURL = done.videoURL + "?rendition=preview"
        try await step(&job, .previewReady, .videoGeneration, 85, "preview ready", artifacts: a)

        // 4. Upload / post-processing (85 → 95 %).
        try await step(&job, .previewReady, .upload, 88, "storing video, thumbnail and HLS renditions")
        try await pause()
        a.finalVideoURL = done.videoURL
        a.thumbnailURL = done.videoURL.replacingSuffix(".mp4", with: ".jpg")
        a.hlsPlaylistURL = done.videoURL.replacingSuffix(".mp4", with: ".m3u8")
        try await step(&job, .previewReady, .upload, 95, "uploaded", artifacts: a)

        // 5. Finalization (95 → 100 %): one segment per job, in one transaction.
        try await step(&job, .previewReady, .finalization, 97, "finalizing")
        try Task.checkCancellation()
        let result = JobResult(videoURL: a.finalVideoURL, thumbnailURL: a.thumbnailURL)
        if let (final, event) = try await store.finalize(jobID: job.id, workerID: workerID, result: result,
                                                        durationSeconds: done.durationSeconds) {
            job = final
            publish(event)
        }
    }

    /// Records the failure; requeues with backoff while attempts remain, else dead-letters.
    private func fail(_ job: Job, _ f: StageFailure, _ log: Logger) async {
        let attempts = job.retryCount + 1
        let dead = !f.retryable || attempts > job.maxRetries
        let err = JobError(code: f.code, message: f.message, stage: job.stage)
        do {
            let (failed, e1) = try await store.apply(
                StateChange(status: .failed, stage: .error, progress: job.progress,
                            message: dead ? "failed: \(f.message); dead-lettered" : "failed: \(f.message); will retry",
                            error: err, deadLettered: dead, requireWorker: workerID), to: job.id)
            publish(e1)
            log.warning("job failed", metadata: ["error.code": "\(f.code)", "dead_lettered": "\(dead)"])
            guard !dead else { return }
            let delay = config.retry.delayMs(attempt: attempts, jitter: Double.random(in: 0..<1))
            let (_, e2) = try await store.apply(
                StateChange(status: .queued, stage: .pending, progress: failed.progress,
                            message: "retry \(attempts) of \(job.maxRetries) in \(delay) ms",
                            retryCount: attempts, runAfterMs: delay), to: job.id)
            publish(e2)
        } catch {
            log.warning("could not record failure; the lease will expire", metadata: ["error": "\(error)"])
        }
    }
}

extension String {
    func replacingSuffix(_ suffix: String, with new: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) + new : self + new
    }
}
