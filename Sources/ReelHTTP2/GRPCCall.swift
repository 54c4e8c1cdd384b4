import ReelWire

/// What a method handler sees of one call: the request message, its metadata and
/// deadline, and a way to send response messages. The handler returns the final status.
public struct GRPCCall: Sendable {
    public let path: String
    /// The request message of a unary or server-streaming call (empty for bidi calls).
    public let request: [UInt8]
    /// A bidirectional call's request messages as they arrive; ends at the client's END_STREAM.
    public let requests: AsyncStream<[UInt8]>?
    public let metadata: [String: String]
    public let deadline: ContinuousClock.Instant?
    let sink: StreamSink

    /// Sends one response message. Suspends while the client is slow to read (flow
    /// control), so output is never buffered without bound; throws when the stream is gone.
    public func send(_ message: [UInt8]) async throws {
        try await sink.send(GRPCFraming.frame(message))
    }

    /// `send` of a message already framed (`GRPCFraming.frame`), e.g. one shared by many calls.
    public func send(framed: [UInt8]) async throws {
        try await sink.send(framed)
    }

    /// Hands a framed message over without waiting, from any thread: false when the stream is
    /// over its high-water mark (nothing is sent; `send` waits instead) or gone (`isGone`).
    public func trySend(framed: [UInt8]) -> Bool {
        sink.trySend(framed)
    }

    /// The stream has ended (the client went away, a deadline passed).
    public var isGone: Bool { sink.isGone }
}

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

    public init(_ kind: GRPCMethodKind, _ handler: @escaping @Sendable (GRPCCall) async -> GRPCStatus) {
        self.kind = kind; self.handler = handler; self.inline = nil
    }

    /// A unary route with an inline fast path (see `inline`).
    public init(unary handler: @escaping @Sendable (GRPCCall) async -> GRPCStatus,
                inline: @escaping @Sendable (_ request: [UInt8], _ metadata: [String: String]) -> GRPCInlineAnswer?) {
        self.kind = .unary; self.handler = handler; self.inline = inline
    }
}

/// Paths (`/package.Service/Method`) to handlers. An unknown path answers UNIMPLEMENTED.
public struct GRPCRouter: Sendable {
    public var routes: [String: GRPCRoute] = [:]
    public init() {}
    public mutating func add(_ path: String, _ route: GRPCRoute) { routes[path] = route }
}

public struct GRPCServerConfig: Sendable {
    public var host: String
    public var port: Int
    public var loops: Int
    public var maxMessageSize: Int = GRPCFraming.defaultMaxMessageSize
    public var maxConcurrentStreams: UInt32 = 4096
    public var idleTimeout: Duration = .seconds(300)
    /// Bytes queued on one stream before `send` waits for the reader.
    public var streamHighWater: Int = 256 * 1024
    /// Serve TLS with ALPN h2 instead of h2c.
    public var tls: TLSContext?

    public init(host: String, port: Int, loops: Int) { self.host = host; self.port = port; self.loops = loops }
}
