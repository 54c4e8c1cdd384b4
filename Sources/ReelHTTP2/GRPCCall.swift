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

    /// Gives the stream to code on its loop: `body` runs there with it (nil if it has ended),
    /// and from then on its owner ends it — the status this handler returns is ignored.
    public func handOff(_ body: @escaping @Sendable (LoopStream?) -> Void) {
        let id = sink.streamID
        sink.connection.withValue { conn in conn.handOff(streamID: id, body) }
    }
}
