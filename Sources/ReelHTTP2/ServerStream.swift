internal import ReelEventLoop
import ReelWire
import Synchronization

/// Per-stream state of one gRPC call on the server. Loop-confined.
final class ServerStream {
    let id: Int32
    var path = ""
    var method = ""
    var contentType = ""
    var encoding = ""
    var timeout = ""
    var metadata: [String: String] = [:]
    var headerBytes = 0
    var headersDone = false
    var reader: GRPCMessageReader
    var messages: [[UInt8]] = []
    /// A status already decided while reading (too large, compressed…): incoming data is discarded.
    var earlyStatus: GRPCStatus?
    var httpStatus = 200
    var route: GRPCRoute?
    var task: Task<Void, Never>?
    /// Bidi calls: where arriving request messages go.
    var inbound: AsyncStream<[UInt8]>.Continuation?
    var deadline: ContinuousClock.Instant?
    let started = ContinuousClock.now

    // Response side.
    var headersSent = false
    var outbound: [UInt8] = []
    var outboundOffset = 0
    var trailers: GRPCStatus?
    var finished = false
    var deferred = false
    var waiters: [CheckedContinuation<Void, any Error>] = []
    /// What the handler's thread may read without a hop to the loop.
    let credit = StreamCredit()

    init(id: Int32, maxMessageSize: Int) {
        self.id = id
        reader = GRPCMessageReader(maxMessageSize: maxMessageSize)
    }

    var queuedBytes: Int { outbound.count - outboundOffset }
}

/// A stream's state as its handler's thread sees it: bytes handed to the loop and not yet
/// taken by HTTP/2, and whether the stream is gone. Written by both sides, atomically.
final class StreamCredit: Sendable {
    let pending = Atomic<Int>(0)
    let gone = Atomic<Bool>(false)
}

/// How a handler's messages reach its stream: hops onto the connection's loop.
struct StreamSink: Sendable {
    let connection: LoopBound<HTTP2Connection>
    let streamID: Int32
    let credit: StreamCredit
    let highWater: Int

    /// Hands `framed` to the loop. While the stream's unsent bytes stay under the high-water
    /// mark this returns at once (no wait for the loop); past it, it waits until the reader
    /// has taken enough (HTTP/2 flow control), so output is never buffered without bound.
    func send(_ framed: [UInt8]) async throws {
        if trySend(framed) { return }
        if isGone { throw StreamGoneError() }
        // Over the mark: hand it over anyway, counted, and wait for the reader to catch up.
        credit.pending.add(framed.count, ordering: .relaxed)
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, any Error>) in
            let c = UncheckedBox(cont)
            connection.withValue { conn in conn.enqueue(streamID: streamID, framed, waiter: c.value) }
        }
    }

    /// `send` if it needn't wait; false (nothing sent) when it would, or the stream is gone.
    func trySend(_ framed: [UInt8]) -> Bool {
        if isGone { return false }
        let queued = credit.pending.add(framed.count, ordering: .relaxed).newValue
        guard queued <= highWater else {
            credit.pending.subtract(framed.count, ordering: .relaxed)
            return false
        }
        connection.send(streamID: streamID, framed)
        return true
    }

    var isGone: Bool { credit.gone.load(ordering: .acquiring) }

    func finish(_ status: GRPCStatus) {
        connection.withValue { conn in conn.finish(streamID: streamID, status: status) }
    }
}

public struct StreamGoneError: Error, Sendable {}
