import ReelCore
import Logging
import ReelObservability

/// What happens when an attempt fails, for in-process and external workers alike: the job
/// goes to FAILED with its error; while attempts remain and the error is retryable it goes
/// back to QUEUED after the backoff, else it stays FAILED, dead-lettered.
public struct FailureRecorder: Sendable {
    let store: any JobStore
    let retry: RetryPolicy
    let logger: Logger
    let publish: @Sendable (JobEvent) -> Void

    public init(store: any JobStore, retry: RetryPolicy, logger: Logger, publish: @escaping @Sendable (JobEvent) -> Void) {
        self.store = store; self.retry = retry; self.logger = logger; self.publish = publish
    }

    /// Returns the job as it ends up (QUEUED for a retry, FAILED when dead-lettered). Throws
    /// `failedPrecondition` when `workerID` no longer holds the job (nothing is written then).
    @discardableResult
    /// `newTaskOnRetry`: the provider's task is of no more use (it failed, or its result is
    /// gone), so its id is cleared and a retry submits a new one.
    public func record(_ job: Job, code: String, message: String, retryable: Bool, workerID: String,
                       newTaskOnRetry: Bool = false) async throws -> Job {
        let attempts = job.retryCount + 1
        let dead = !retryable || attempts > job.maxRetries
        let err = JobError(code: code, message: message, stage: job.stage)
        var cleared: Artifacts? = nil
        if newTaskOnRetry {
            var a = job.artifacts
            a.providerJobID = ""
            a.providerRequestID = ""
            cleared = a
        }
        let (failed, e1) = try await store.apply(
            StateChange(status: .failed, stage: .error, progress: job.progress,
                        message: dead ? "failed: \(message); dead-lettered" : "failed: \(message); will retry",
                        artifacts: cleared, error: err, deadLettered: dead, requireWorker: workerID,
                        requireFence: job.fence), to: job.id)
        publish(e1)
        logger.warning("job failed", metadata: ["reel.job_id": "\(job.id)", "error.code": "\(code)", "dead_lettered": "\(dead)"])
        if dead {
            ReelMetrics.jobEnded(failed, stage: job.stage)
            return failed
        }
        ReelMetrics.jobRetried(stage: job.stage, error: code)
        let delay = retry.delayMs(attempt: attempts, jitter: Double.random(in: 0..<1))
        let (queued, e2) = try await store.apply(
            StateChange(status: .queued, stage: .pending, progress: failed.progress,
                        message: "retry \(attempts) of \(job.maxRetries) in \(delay) ms",
                        retryCount: attempts, runAfterMs: delay), to: job.id)
        publish(e2)
        return queued
    }
}
