import ReelWire

/// A blocking front on `GRPCClient`, for callers without tasks (a command-line tool's
/// synchronous commands): each call blocks the calling thread until its outcome.
///
/// The connection and its rules are `GRPCClient`'s (its own loop thread, reconnect after a
/// failure or GOAWAY, `UNAVAILABLE`, `DEADLINE_EXCEEDED`, the server's `grpc-status`).
public final class BlockingGRPCClient: Sendable {
    private let client: GRPCClient

    /// Connects to `host:port`; throws `UNAVAILABLE` when the server can't be reached.
    public init(host: String, port: Int,
                maxReceiveMessageSize: Int = GRPCFraming.defaultMaxMessageSize) throws(GRPCStatus) {
        client = try GRPCClient(host: host, port: port, maxReceiveMessageSize: maxReceiveMessageSize)
    }

    /// One request message, one response message; see `GRPCClient.unary`.
    public func unary(path: String, request: [UInt8], timeout: Duration? = nil,
                      metadata: [(String, String)] = []) throws(GRPCStatus) -> [UInt8] {
        let mailbox = CallMailbox()
        _ = try client.start(path: path, request: request, timeout: timeout, metadata: metadata,
                             mode: .unary, mailbox: mailbox)
        while true {
            if let outcome = mailbox.next().outcome { return try outcome.get() ?? [] }
        }
    }

    /// One request message, a stream of response messages.
    ///
    /// `onMessage` runs for each message, in order, on the calling thread. If it throws, the
    /// stream is cancelled (RST_STREAM CANCEL) and its error is rethrown as is. Returns when the
    /// server ends the stream with OK; otherwise throws the `GRPCStatus`.
    public func serverStreaming(path: String, request: [UInt8], timeout: Duration? = nil,
                                metadata: [(String, String)] = [],
                                onMessage: ([UInt8]) throws -> Void) throws {
        let mailbox = CallMailbox()
        let control = try client.start(path: path, request: request, timeout: timeout, metadata: metadata,
                                       mode: .streaming { mailbox.deliver($0) }, mailbox: mailbox)
        while true {
            let (messages, outcome) = mailbox.next()
            do {
                for message in messages { try onMessage(message) }
            } catch {
                client.cancel(control)
                throw error
            }
            if let outcome {
                _ = try outcome.get()
                return
            }
        }
    }
}
