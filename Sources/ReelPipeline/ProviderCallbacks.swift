import Crypto
import Foundation
import ReelCore
import Synchronization

/// Provider callbacks (DESIGN §5) reaching the run that follows the task in this process.
/// The HTTP listener hands a callback here after checking its token against the database; a
/// task id or external id that is not the followed attempt's changes nothing.
public final class ProviderCallbacks: Sendable {
    private struct Follow {
        var taskID: String
        var externalTaskID: String
        var latest: ProviderTask?
    }
    private let follows = Mutex<[String: Follow]>([:])
    private let bell = Doorbell()

    public init() {}

    /// An unguessable token for one attempt's callback URL: 256 random bits, hex.
    public static func newToken() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { $0.map { String(format: "%02x", $0) }.joined() }
    }

    /// The path under the HTTP listener where `provider` POSTs for the attempt with `token`.
    public static func path(provider: String, token: String) -> String { "/v1/providers/\(provider)/callback/\(token)" }

    func follow(jobID: String, taskID: String, externalTaskID: String) {
        follows.withLock { $0[jobID] = Follow(taskID: taskID, externalTaskID: externalTaskID) }
    }

    func stopFollowing(jobID: String) {
        follows.withLock { _ = $0.removeValue(forKey: jobID) }
        bell.clear(jobID)
    }

    /// The newest task state a callback brought for `jobID`, waiting up to `timeout` for one.
    func next(jobID: String, timeout: Duration) async -> ProviderTask? {
        if let t = take(jobID) { return t }
        guard await bell.wait(jobID, timeout: timeout) else { return nil }
        return take(jobID)
    }

    private func take(_ jobID: String) -> ProviderTask? {
        follows.withLock { f in
            let t = f[jobID]?.latest
            f[jobID]?.latest = nil
            return t
        }
    }

    public enum Delivery: Sendable, Equatable {
        /// Handed to the run that follows the task here.
        case delivered
        /// Nobody here follows that task (another instance may: it polls).
        case notFollowedHere
        /// The task is not the attempt's: nothing changes.
        case mismatch(String)
    }

    /// Hands `task` (already matched to `record` by its token) to the run following it.
    public func deliver(_ task: ProviderTask, for record: ProviderTaskRecord) -> Delivery {
        if !record.taskID.isEmpty, task.taskID != record.taskID {
            return .mismatch("task_id \(task.taskID) is not this attempt's task")
        }
        if !task.externalTaskID.isEmpty, task.externalTaskID != record.externalTaskID {
            return .mismatch("external_task_id \(task.externalTaskID) is not this attempt's")
        }
        let delivered = follows.withLock { f -> Bool in
            guard var follow = f[record.jobID] else { return false }
            // The run follows a newer attempt, or a task that is not this one.
            if !follow.taskID.isEmpty, follow.taskID != task.taskID { return false }
            if follow.externalTaskID != record.externalTaskID { return false }
            follow.latest = task
            f[record.jobID] = follow
            return true
        }
        if delivered { bell.ring(record.jobID) }
        return delivered ? .delivered : .notFollowedHere
    }
}
