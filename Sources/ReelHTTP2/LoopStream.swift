internal import ReelEventLoop
import ReelWire

/// A call's stream handed to code on its connection's event loop (`GRPCRoute(serverStreaming:onLoop:)`,
/// `GRPCCall.handOff`): messages are written to it directly on the loop's thread, with no task
/// and no mailbox entry per message, so one event can go to thousands of streams in one pass.
/// Its owner must end it (`finish`) unless it ends otherwise (`onEnd`).
///
/// Loop-confined: use it only on `loop`'s thread — where it was handed over, or in work
/// `loop.execute` runs.
public struct LoopStream {
    let connection: HTTP2Connection
    let stream: ServerStream

    public enum Write: Sendable, Equatable {
        case sent
        /// Over the stream's high-water mark (the reader is slow): nothing was queued.
        case full
        /// The stream has ended.
        case gone
    }

    /// The loop this stream lives on.
    public var loop: StreamLoop { StreamLoop(loop: connection.loop) }

    /// The stream has ended (finished, reset by the client, cut by a deadline or shutdown).
    public var isGone: Bool { stream.finished }

    /// Queues a framed message (`GRPCFraming.frame`): kept by reference, not copied, so one
    /// buffer can serve every stream it goes to. `.full` past the high-water mark unless
    /// `evenIfFull` (a single message that must go regardless, like a watch's opening snapshot).
    public func write(framed: [UInt8], evenIfFull: Bool = false) -> Write {
        connection.writeOwned(stream, framed, evenIfFull: evenIfFull)
    }

    /// Ends the call with `status` (trailers after what was written). `onEnd` is not called.
    public func finish(_ status: GRPCStatus) {
        connection.finishOwned(stream, status)
    }

    /// `f` runs (on the loop) if the stream ends other than by `finish`: the client went away,
    /// a deadline passed, the server is shutting down (which sends UNAVAILABLE itself). Not
    /// called when the stream had already ended: check `isGone`.
    public func onEnd(_ f: @escaping () -> Void) {
        if stream.onEnd != nil { stream.onEnd = f }
    }

    /// For a task that writes to the stream meanwhile: waits on the reader instead of refusing.
    public var sender: StreamSender {
        StreamSender(sink: StreamSink(connection: LoopBound(connection, loop: connection.loop), streamID: stream.id,
                                      credit: stream.credit, highWater: connection.server.config.streamHighWater))
    }
}

/// Writes to a `LoopStream` from a task: in order with everything else posted to its loop.
public struct StreamSender: Sendable {
    let sink: StreamSink

    /// Sends a framed message; suspends while the reader is over the high-water mark; throws
    /// when the stream is gone.
    public func send(framed: [UInt8]) async throws {
        try await sink.send(framed)
    }

    public var isGone: Bool { sink.isGone }
}

/// An event loop of the server, as a place to run work: streams on one loop are touched
/// only from it.
public struct StreamLoop: Sendable, Hashable {
    let loop: EventLoop

    public func execute(_ f: @escaping @Sendable () -> Void) { loop.execute(f) }
    public var id: ObjectIdentifier { ObjectIdentifier(loop) }

    public static func == (a: StreamLoop, b: StreamLoop) -> Bool { a.loop === b.loop }
    public func hash(into h: inout Hasher) { h.combine(ObjectIdentifier(loop)) }
}
