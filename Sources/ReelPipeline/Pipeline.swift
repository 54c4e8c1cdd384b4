import ReelCore
import Logging
import Synchronization
import ReelObservability

/// Runs one claimed job through its stages (DESIGN §5), writing every step through the
/// store and publishing each committed event. Each stage's artifact is saved with the step
/// that finishes it, so a retried or restarted job resumes after its last finished stage;
/// the provider's job id is saved before polling, so a generation is never paid for twice.
public struct Pipeline: Sendable {
    public struct Config: Sendable {
        public var stageDelay: Duration
        public var retry: RetryPolicy
        /// Longest time any one stage but video generation may take (seed 000's stuck jobs).
        public var stageTimeout: Duration
        /// Longest time video generation (submit and every poll) may take.
        public var videoTimeout: Duration
        /// Time between provider polls.
        public var pollInterval: Duration
        /// Give the worker slot back while waiting on the provider (true for real providers).
        public var parkWhileGenerating: Bool
        /// Provider weights for `cost_units` (`--provider-cost-weight`).
        public var costModel = CostModel()

        public init(stageDelay: Duration = .milliseconds(500), retry: RetryPolicy = RetryPolicy(),
                    stageTimeout: Duration = .seconds(120), videoTimeout: Duration = .seconds(900),
                    pollInterval: Duration? = nil, parkWhileGenerating: Bool = false) {
            self.stageDelay = stageDelay; self.retry = retry; self.stageTimeout = stageTimeout
            self.videoTimeout = videoTimeout; self.pollInterval = pollInterval ?? stageDelay
            self.parkWhileGenerating = parkWhileGenerating
        }
    }

    let store: any JobStore
    /// The simulated provider, or the first real one.
    let provider: any VideoProvider
    /// The real providers in order of preference (`--provider kling,runway`): account slots,
    /// parking, circuits, callbacks (DESIGN §5); empty for the simulated provider.
    let remotes: [ProviderRuntime]
    let postProcessor: PostProcessing?
    let config: Config
    let workerID: String
    let logger: Logger
    let publish: @Sendable (JobEvent) -> Void
    /// Fed each stage's measured time (the ETA follows them); nil: nothing measured.
    let estimator: ETAEstimator?
    /// Writes the script with an LLM (`--script-agent openai`); nil: the template writer.
    public var scriptAgent: ScriptAgent?
    /// Asks an LLM whether the script contradicts the bible after the rule-based check (`--continuity-agent openai`).
    public var continuityAgent: ScriptAgent?

    public init(store: any JobStore, provider: any VideoProvider,
                remotes: [ProviderRuntime] = [], postProcessor: PostProcessing? = nil, config: Config,
                workerID: String, logger: Logger, estimator: ETAEstimator? = nil,
                publish: @escaping @Sendable (JobEvent) -> Void) {
        self.store = store; self.provider = remotes.first?.provider ?? provider; self.remotes = remotes
        self.postProcessor = postProcessor; self.config = config
        self.workerID = workerID; self.logger = logger; self.estimator = estimator; self.publish = publish
    }

    /// A stage failure: `retryable` ones go back to the queue while attempts remain.
    public struct StageFailure: Error, Sendable, CustomStringConvertible {
        public var code: String
        public var message: String
        public var retryable: Bool
        /// The provider's task is of no more use (it failed, or its result is gone): a retry
        /// submits a new task instead of following this one again.
        public var newTaskOnRetry: Bool
        public init(code: String, message: String, retryable: Bool, newTaskOnRetry: Bool = false) {
            self.code = code; self.message = message; self.retryable = retryable; self.newTaskOnRetry = newTaskOnRetry
        }
        public var description: String { "\(code): \(message)" }
    }

    public func run(_ claimed: Job, slot: (any WorkerSlot)? = nil) async {
        var jobLogger = logger
        jobLogger[metadataKey: "reel.job_id"] = "\(claimed.id)"
        let log = jobLogger
        let run = RunState(writer: RunWriter(job: claimed, store: store, publish: publish))
        estimator?.remember(claimed)
        // A real provider's generation time is measured by `follow` (the task alone, not the
        // wait for an account slot); every other stage here, as the run leaves it.
        let measure: (@Sendable (Stage, Duration) -> Void)? = estimator.map { est in
            let config = claimed.config, remote = !remotes.isEmpty
            return { stage, took in
                if !(remote && stage == .videoGeneration) { est.record(config, stage, took: took) }
            }
        }
        let watchdog = Watchdog(stage: claimed.stage, limit: config.stageTimeout, measure: measure)
        // The stages race a watchdog that cancels them when a stage overruns its timeout.
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.runStages(run, watchdog, slot, log) }
            group.addTask { await watchdog.watch() }
            await group.next()
            group.cancelAll()
            await group.waitForAll()
        }
    }

    private func runStages(_ run: RunState, _ watchdog: Watchdog, _ slot: (any WorkerSlot)?, _ log: Logger) async {
        do {
            try await stages(run, watchdog, slot)
        } catch let e as ReelError where e.code == .failedPrecondition || e.code == .notFound {
            // Cancelled, or the lease moved on: this worker writes nothing more.
            log.info("job stopped at checkpoint", metadata: ["reason": "\(e.message)"])
            await cancelAtProviderIfCancelled(run, log)
        } catch is CancellationError {
            if let stage = watchdog.timedOut {
                await fail(run, StageFailure(code: "STAGE_TIMEOUT", message: "stage \(stage.name) ran past its timeout",
                                                 retryable: true), log)
            } else {
                log.info("job interrupted; lease handed back or left to expire")
                await cancelAtProviderIfCancelled(run, log)
            }
        } catch let f as StageFailure {
            await fail(run, f, log)
        } catch {
            log.warning("job step failed", metadata: ["error": "\(error)"])
            await fail(run, StageFailure(code: "INTERNAL", message: "\(error)", retryable: true), log)
        }
        watchdog.finish()
    }

    /// Writes one step of the run. A step is handed to the run's writer without waiting: it
    /// commits with the steps around it (many jobs' steps share one statement and one commit),
    /// in order, and watchers see it once it is committed. A `checkpoint` — the provider's task
    /// id, before the task is followed — is committed before the run goes on, so a restarted
    /// job follows that task and never pays for another. A stage's artifact is saved with its
    /// step, so a retried job resumes after the last stage whose step was committed; the run
    /// flushes before anything that costs money or ends it (a provider submit, finalization).
    /// `progressReport`: the step only moves progress within the previous step's status and
    /// stage (the writer coalesces those).
    /// `provider` names the provider that runs the attempt (`Job.provider`); `charge` is added,
    /// weighted, to the job's `cost_units` with the step.
    func step(_ run: RunState, _ status: JobStatus, _ stage: Stage, _ progress: Int32, _ message: String,
                      artifacts: Artifacts? = nil, checkpoint: Bool = false, progressReport: Bool = false,
                      provider: String? = nil, charge: Double? = nil) async throws {
        try Task.checkCancellation()
        var change = StateChange(status: status, stage: stage, progress: progress, message: message, artifacts: artifacts,
                                 requireWorker: workerID, requireFence: run.fence, progressReport: progressReport)
        change.provider = provider
        change.chargeUnits = charge
        if checkpoint {
            try await run.writer.commit(change)
        } else {
            try run.writer.post(change)
        }
    }

    private func pause() async throws {
        if config.stageDelay > .zero { try await Task.sleep(for: config.stageDelay) }
    }

    private func stages(_ run: RunState, _ watchdog: Watchdog, _ slot: (any WorkerSlot)?) async throws {
        var a = run.writer.job.artifacts
        let job = run.writer.job

        // 1. Script expansion (→ 25 %): the input, the bible at the job's version, recent segments.
        watchdog.enter(.scriptExpansion, limit: config.stageTimeout)
        let context = try await store.sceneContext(tenantID: job.tenantID, sceneID: job.sceneID, bibleVersion: job.bibleVersion, recent: 3)
        if a.expandedScript.isEmpty {
            try await step(run, .processing, .scriptExpansion, max(job.progress, 5), "expanding script")
            try await pause()
            let note: String
            (a.expandedScript, note) = try await expandScript(job, context: context)
            try await step(run, .scriptReady, .scriptExpansion, 25, note, artifacts: a)
        } else {
            try await step(run, .scriptReady, .scriptExpansion, 25, "script reused from an earlier attempt")
        }

        // 2. Continuity validation (→ 35 %): auto-correct what can be, else CONTINUITY_VIOLATION.
        watchdog.enter(.continuityValidation, limit: config.stageTimeout)
        // A result that found violations (the agent's, stored with its reasons) is checked again.
        if a.validationResult.isEmpty || a.validationResult.contains("\"valid\":false") {
            try await step(run, .scriptReady, .continuityValidation, 30, "validating continuity")
            try await pause()
            let outcome = ContinuityChecker(bible: context.bible).check(a.expandedScript, overrides: job.config.styleOverrides)
            guard outcome.valid else {
                throw StageFailure(code: "CONTINUITY_VIOLATION", message: outcome.violations.joined(separator: "; "), retryable: false)
            }
            a.expandedScript = outcome.script
            a.validationResult = outcome.json(bibleVersion: job.bibleVersion)
            var note = outcome.corrections.isEmpty ? "continuity checked" : "continuity checked; \(outcome.corrections.count) auto-corrected"
            if let agent = continuityAgent {
                note += try await checkContinuityByAgent(agent, run, &a, context: context)
            }
            try await step(run, .continuityChecked, .continuityValidation, 35, note, artifacts: a)
        } else {
            try await step(run, .continuityChecked, .continuityValidation, 35, "continuity result reused")
        }

        // 3. Video generation (35 → 85 %): the provider's task id is saved before it is followed.
        watchdog.enter(.videoGeneration, limit: config.videoTimeout)
        let done: ProviderTask
        if !remotes.isEmpty {
            done = try await generateRemotely(run, &a, context: context, slot: slot)
        } else {
            done = try await generateInProcess(run, &a, slot: slot)
        }
        if postProcessor == nil {
            a.previewVideoURL = done.videoURL
            try await step(run, .previewReady, .videoGeneration, 85, "preview ready", artifacts: a)
        } else {
            // The provider's URL is temporary and never stored: the copy is, in the next stage.
            try await step(run, .previewReady, .videoGeneration, 85, "video ready at \(run.attempt?.provider ?? provider.name)")
        }

        // 4. Upload / post-processing (85 → 95 %): store the video, a thumbnail, HLS renditions.
        watchdog.enter(.upload, limit: config.stageTimeout)
        try await step(run, .previewReady, .upload, 88, "storing video, thumbnail and HLS renditions")
        var duration = done.durationSeconds
        if let post = postProcessor {
            let p = try await post.process(jobID: job.id, videoURL: done.videoURL, providerDurationSeconds: done.durationSeconds)
            a.finalVideoURL = p.finalVideoURL
            a.previewVideoURL = p.previewVideoURL
            a.thumbnailURL = p.thumbnailURL
            a.hlsPlaylistURL = p.hlsPlaylistURL
            if p.durationSeconds > 0 { duration = p.durationSeconds }
        } else {
            try await pause()
            a.finalVideoURL = done.videoURL
            a.thumbnailURL = done.videoURL.replacingSuffix(".mp4", with: ".jpg")
            a.hlsPlaylistURL = done.videoURL.replacingSuffix(".mp4", with: ".m3u8")
        }
        try await step(run, .previewReady, .upload, 95, "uploaded", artifacts: a)

        // 5. Finalization (95 → 100 %): one segment per job, in one transaction.
        watchdog.enter(.finalization, limit: config.stageTimeout)
        try await step(run, .previewReady, .finalization, 97, "finalizing")
        try await run.writer.flush()
        try Task.checkCancellation()
        let result = JobResult(videoURL: a.finalVideoURL, thumbnailURL: a.thumbnailURL)
        if let (final, event) = try await store.finalize(jobID: job.id, workerID: workerID, fence: run.fence, result: result,
                                                        durationSeconds: duration) {
            publish(event)
            watchdog.finish()
            ReelMetrics.jobEnded(final, stage: final.stage)
        }
    }

    /// The in-process (simulated) provider: submit, save its id, poll until the video is ready,
    /// parking the worker slot meanwhile when configured.
    private func generateInProcess(_ run: RunState, _ a: inout Artifacts, slot: (any WorkerSlot)?) async throws -> ProviderTask {
        let job = run.writer.job
        if a.providerJobID.isEmpty {
            try await step(run, .continuityChecked, .videoGeneration, 36, "submitting to \(provider.name)",
                           provider: provider.name)
            let external = ProviderTaskRecord.externalID(jobID: job.id, attempt: job.retryCount + 1)
            let task = try await submitInProcess(GenerationRequest(prompt: a.expandedScript, config: job.config,
                                                                   externalTaskID: external))
            run.providerJobID = task.taskID
            a.providerJobID = task.taskID
            // The simulated provider charges each attempt that submits its generation (DESIGN §2 "Cost").
            let charge = CostModel.simulatedCharge(job.config) * config.costModel.weight(provider.name)
            try await step(run, .continuityChecked, .videoGeneration, 40, "submitted to \(provider.name)", artifacts: a,
                           checkpoint: true, provider: provider.name, charge: charge)
            ReelMetrics.costCharged(tenant: job.tenantID, user: job.userID, units: charge)
        } else {
            // Never submit twice: a retried or restarted job polls the generation it already paid for.
            run.providerJobID = a.providerJobID
            try await step(run, .continuityChecked, .videoGeneration, 40, "resuming \(provider.name) job \(a.providerJobID)")
        }
        let park = config.parkWhileGenerating ? slot : nil
        await park?.park()
        var lastProgress: Int32 = -1
        do {
            while true {
                if config.pollInterval > .zero { try await Task.sleep(for: config.pollInterval) }
                let status = try await queryInProcess(a.providerJobID)
                switch status.state {
                case .succeeded:
                    await park?.unpark()
                    return status
                case .failed(let why):
                    throw StageFailure(code: "PROVIDER_FAILED", message: why, retryable: true, newTaskOnRetry: true)
                case .submitted, .processing:
                    let reported = status.progress ?? 0
                    if reported != lastProgress {
                        lastProgress = reported
                        let p = min(max(40 + reported * 45 / 100, 40), 84)
                        try await step(run, .continuityChecked, .videoGeneration, p, "generating video (\(reported)%)",
                                       progressReport: true)
                    }
                }
            }
        } catch {
            await park?.unpark()
            throw error
        }
    }

    private func submitInProcess(_ request: GenerationRequest) async throws -> ProviderTask {
        do { return try await provider.submit(request) } catch let e as ProviderError {
            throw StageFailure(code: "PROVIDER_UNAVAILABLE", message: e.description, retryable: true)
        }
    }

    private func queryInProcess(_ taskID: String) async throws -> ProviderTask {
        do { return try await provider.query(taskID: taskID, kind: "") } catch let e as ProviderError {
            throw StageFailure(code: "PROVIDER_UNAVAILABLE", message: e.description, retryable: true)
        }
    }

    private func cancelAtProviderIfCancelled(_ run: RunState, _ log: Logger) async {
        let known = run.writer.job.artifacts.providerJobID
        guard let pid = run.providerJobID ?? (known.isEmpty ? nil : known) else { return }
        guard let current = try? await store.job(id: run.writer.jobID), current.status == .cancelled else { return }
        // This task may itself be cancelled (that is how the cancel reached it): ask the
        // provider from a task of its own, so the request isn't aborted on the way out.
        let provider = run.attempt.flatMap { runtime(named: $0.provider)?.provider } ?? self.provider
        let kind = run.attempt?.kind ?? ""
        await Task { await provider.cancel(taskID: pid, kind: kind) }.value
        log.info("asked the provider to cancel its job", metadata: ["reel.provider_job_id": "\(pid)"])
    }

    private func fail(_ run: RunState, _ f: StageFailure, _ log: Logger) async {
        // The failure comes after every step already handed over (one that can't be written
        // means the job moved on: then nothing is). A lease is held per worker, so a job whose
        // failure is never written would stay held by this live reeld: while the database is
        // away (a restart, a failover), the failure is retried until it is written, after the
        // steps that were committed (the unwritten ones are dropped with the run). Only a
        // shutdown (the run's task cancelled) stops trying: then the lease is handed back or
        // lapses, and the job is requeued either way.
        var delay = Duration.milliseconds(250)
        var flushed = false
        while true {
            do {
                if !flushed {
                    flushed = true
                    try await run.writer.flush()
                }
                _ = try await failures.record(run.writer.job, code: f.code, message: f.message, retryable: f.retryable,
                                              workerID: workerID, newTaskOnRetry: f.newTaskOnRetry)
                return
            } catch let e as ReelError where e.code == .unavailable && !Task.isCancelled {
                log.warning("could not record failure yet; retrying", metadata: ["error": "\(e)"])
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(8))
            } catch {
                log.warning("could not record failure", metadata: ["error": "\(error)"])
                return
            }
        }
    }

    var failures: FailureRecorder { FailureRecorder(store: store, retry: config.retry, logger: logger, publish: publish) }
}

/// One run's writer and what it learned. Touched only by the run's own task.
final class RunState: @unchecked Sendable {
    // Safety: created per run and used by that run's stages task alone (the watchdog never reads it).
    let writer: RunWriter
    /// The claim this run works under (`Job.fence`): its writes count only while it is current.
    let fence: Int64
    var providerJobID: String?
    /// The provider attempt this run follows (real providers).
    var attempt: ProviderTaskRecord?
    init(writer: RunWriter) { self.writer = writer; fence = writer.job.fence }
}

/// Cancels a run whose current stage overruns its limit, and says which stage it was.
final class Watchdog: Sendable {
    private struct State {
        var stage: Stage
        var deadline: ContinuousClock.Instant
        var enteredAt = ContinuousClock.now
        var timedOut: Stage?
        var done = false
    }
    private let state: Mutex<State>
    /// Told each stage's time as the run leaves it (the ETA estimator).
    private let measure: (@Sendable (Stage, Duration) -> Void)?

    init(stage: Stage, limit: Duration, measure: (@Sendable (Stage, Duration) -> Void)? = nil) {
        state = Mutex(State(stage: stage, deadline: .now + limit))
        self.measure = measure
    }

    /// Moves to `stage`; the stage left behind is recorded in `reel_stage_duration_seconds`.
    func enter(_ stage: Stage, limit: Duration) {
        let (left, took) = state.withLock { s -> (Stage, Duration) in
            let r = (s.stage, ContinuousClock.now - s.enteredAt)
            s.stage = stage; s.deadline = .now + limit; s.enteredAt = .now
            return r
        }
        if left != stage && left != .pending {
            ReelMetrics.stageDuration(left, took)
            measure?(left, took)
        }
    }

    /// The run ended; a stage completed by it (finalization) is recorded.
    func finish() {
        let finished = state.withLock { s -> (Stage, Duration)? in
            if s.done { return nil }
            s.done = true
            return (s.stage, ContinuousClock.now - s.enteredAt)
        }
        if let (stage, took) = finished, stage == .finalization {
            ReelMetrics.stageDuration(stage, took)
            measure?(stage, took)
        }
    }

    var timedOut: Stage? { state.withLock { $0.timedOut } }

    /// Returns when the run is done (then the group cancels nothing that matters) or when the
    /// current stage's deadline passes (then the group cancels the stages task).
    func watch() async {
        while !Task.isCancelled {
            let (deadline, done) = state.withLock { ($0.deadline, $0.done) }
            if done { return }
            if ContinuousClock.now >= deadline {
                state.withLock { $0.timedOut = $0.stage }
                return
            }
            try? await Task.sleep(for: min(deadline - .now, .milliseconds(100)))
        }
    }
}

/// Upload / post-processing of a finished video: store it, a thumbnail, HLS renditions.
public protocol PostProcessing: Sendable {
    func process(jobID: String, videoURL: String, providerDurationSeconds: Double) async throws -> PostProcessed
    /// The last frame of a job's segment, for a continuation to start from.
    func lastFrame(ofJob jobID: String) async -> SourceImage?
}

extension PostProcessor: PostProcessing {}

extension String {
    func replacingSuffix(_ suffix: String, with new: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) + new : self + new
    }
}
