import ReelWire

/// How a method is called, and the handler that answers it.
public enum GRPCMethodKind: Sendable {
    case unary
    case serverStreaming
    /// Requests and responses interleave on one stream (server reflection, for one).
    case bidiStreaming
}

/// A unary call answered on the event loop's own thread, without a task: its response message
/// or its status.
public enum GRPCInlineAnswer: Sendable {
    case message([UInt8])
    case status(GRPCStatus)
}

public struct GRPCRoute: Sendable {
    public let kind: GRPCMethodKind
    public let handler: @Sendable (GRPCCall) async -> GRPCStatus
    /// For unary calls: tried first, on the loop thread, with the request message and metadata.
    /// It must never block or wait; it returns nil when only `handler` can answer (the answer
    /// needs the database, say), and then `handler` runs as usual.
    public let inline: (@Sendable (_ request: [UInt8], _ metadata: [String: String]) -> GRPCInlineAnswer?)?
    /// For server-streaming calls: tried first, on the loop thread, with the request message,
    /// the metadata and the stream. True: it took the stream (no task runs; it must end the
    /// stream); false: it did nothing with it, and `handler` runs as usual. Never blocks.
    public let onLoop: (@Sendable (_ request: [UInt8], _ metadata: [String: String], _ stream: LoopStream) -> Bool)?

    public init(_ kind: GRPCMethodKind, _ handler: @escaping @Sendable (GRPCCall) async -> GRPCStatus) {
        self.kind = kind; self.handler = handler; self.inline = nil; self.onLoop = nil
    }

    /// A server-streaming route that can start on the loop thread without a task (see `onLoop`).
    public init(serverStreaming handler: @escaping @Sendable (GRPCCall) async -> GRPCStatus,
                onLoop: @escaping @Sendable (_ request: [UInt8], _ metadata: [String: String], _ stream: LoopStream) -> Bool) {
        self.kind = .serverStreaming; self.handler = handler; self.inline = nil; self.onLoop = onLoop
    }

    /// A unary route with an inline fast path (see `inline`).
    public init(unary handler: @escaping @Sendable (GRPCCall) async -> GRPCStatus,
                inline: @escaping @Sendable (_ request: [UInt8], _ metadata: [String: String]) -> GRPCInlineAnswer?) {
        self.kind = .unary; self.handler = handler; self.inline = inline; self.onLoop = nil
    }
}
