import Dispatch
import ReelWire
import Synchronization

/// Hands one call's messages and outcome from the connection's loop thread to a thread that
/// waits for them (`BlockingGRPCClient`), in order.
final class CallMailbox: Sendable {
    private struct Contents {
        var messages: [[UInt8]] = []
        var outcome: Result<[UInt8]?, GRPCStatus>?
    }

    private let contents = Mutex(Contents())
    /// Signalled after every delivery; the waiter re-checks `contents`, so extra signals are harmless.
    private let delivered = DispatchSemaphore(value: 0)

    /// Loop thread: a response message of a streaming call.
    func deliver(_ message: [UInt8]) {
        contents.withLock { $0.messages.append(message) }
        delivered.signal()
    }

    /// Loop thread: the call's outcome, after its last message.
    func finish(_ outcome: Result<[UInt8]?, GRPCStatus>) {
        contents.withLock { $0.outcome = outcome }
        delivered.signal()
    }

    /// Blocks until something arrived: the messages so far and, once they are all taken, the outcome.
    func next() -> (messages: [[UInt8]], outcome: Result<[UInt8]?, GRPCStatus>?) {
        while true {
            let taken = contents.withLock { c -> ([[UInt8]], Result<[UInt8]?, GRPCStatus>?)? in
                if c.messages.isEmpty && c.outcome == nil { return nil }
                let messages = c.messages
                c.messages.removeAll()
                return (messages, c.outcome)
            }
            if let taken { return taken }
            delivered.wait()
        }
    }
}
