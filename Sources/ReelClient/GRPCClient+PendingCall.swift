import ReelWire
import Synchronization

extension GRPCClient {
    /// One call from submission to completion. Loop-confined.
    final class PendingCall {
        enum Mode: Sendable {
            case unary
            case streaming(@Sendable ([UInt8]) -> Void)
        }

        let submission: CallSubmission
        var id: UInt64 { submission.control.id }
        /// The wire state of the current attempt (nil while queued).
        var wire: StreamResponse?
        var streamID: Int32 = -1
        /// The first response message of a unary call, and how many arrived.
        var firstMessage: [UInt8]?
        var messageCount = 0
        /// The caller has its answer; the stream may still be closing on the wire.
        var completed = false
        /// Times the server refused the stream unprocessed (REFUSED_STREAM): retried up to
        /// `maxRefusals` times.
        var refusals = 0
        static let maxRefusals = 20

        init(_ submission: CallSubmission) { self.submission = submission }

        func complete(_ result: Result<[UInt8]?, GRPCStatus>) {
            guard !completed else { return }
            completed = true
            switch submission.completion {
            case .task(let continuation): continuation.resume(with: result.mapError { $0 as any Error })
            case .thread(let mailbox): mailbox.finish(result)
            }
        }
    }

    /// Where a call's outcome goes: the awaiting task, or the blocked thread of a `BlockingGRPCClient`.
    enum Completion: Sendable {
        case task(CheckedContinuation<[UInt8]?, any Error>)
        case thread(CallMailbox)
    }

    /// Shared by the caller's task (cancellation) and the loop (start): whichever runs second sees it.
    final class CallControl: Sendable {
        let id: UInt64
        let cancelled = Atomic<Bool>(false)
        init(id: UInt64) { self.id = id }
    }

    /// A request's header fields as one byte buffer plus (offset, length) pairs, built off the loop.
    struct RequestHead: Sendable {
        var bytes: [UInt8] = []
        var fields: [(nameStart: Int, nameCount: Int, valueStart: Int, valueCount: Int)] = []

        mutating func append(_ field: (String, String)) {
            let nameStart = bytes.count
            bytes.append(contentsOf: field.0.utf8)
            let valueStart = bytes.count
            bytes.append(contentsOf: field.1.utf8)
            fields.append((nameStart, valueStart - nameStart, valueStart, bytes.count - valueStart))
        }
    }

    /// Everything a call needs, carried from the caller's task to the loop.
    struct CallSubmission: Sendable {
        let control: CallControl
        let path: String
        let head: RequestHead
        let body: [UInt8]
        let deadline: ContinuousClock.Instant?
        let timeout: Duration?
        let mode: PendingCall.Mode
        let completion: Completion
    }
}
