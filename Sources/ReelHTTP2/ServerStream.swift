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
    /// Framed messages waiting for nghttp2, shared with other streams (a fan-out's one encoding).
    var outbound = OutboundQueue()
    var trailers: GRPCStatus?
    /// A loop-owned stream's status, waiting for the connection's queued DATA (`finishOwned`).
    var laterTrailers: GRPCStatus?
    var finished = false
    /// nghttp2 has a data provider for the stream (it will call `readData`); `deferred`: it is
    /// paused, waiting for bytes.
    var dataAttached = false
    var deferred = false
    /// `readData` ended the provider (the queue ran dry); nghttp2 detaches it once that frame is sent.
    var dataEnding = false
    var waiters: [CheckedContinuation<Void, any Error>] = []
    /// What the handler's thread may read without a hop to the loop.
    let credit = StreamCredit()
    /// Code on the loop owns the stream (`LoopStream`): the handler task's own `finish` is
    /// ignored, and the end of the stream is counted and told to `onEnd` here.
    var loopOwned = false
    var onEnd: (() -> Void)?

    init(id: Int32, maxMessageSize: Int) {
        self.id = id
        reader = GRPCMessageReader(maxMessageSize: maxMessageSize)
    }

    var queuedBytes: Int { outbound.bytes }
}

/// A stream's unsent response bytes as the framed messages they were handed over as: appending
/// one keeps a reference to it (no copy; 10,000 streams of a fan-out share one), and nothing is
/// held once it has all gone to nghttp2. One message waiting needs no allocation at all.
struct OutboundQueue {
    private var head: [UInt8] = []
    private var headOffset = 0
    private var rest: [[UInt8]] = []
    private var restIndex = 0
    private(set) var bytes = 0

    mutating func append(_ chunk: [UInt8]) {
        guard !chunk.isEmpty else { return }
        if bytes == 0 {
            head = chunk
            headOffset = 0
        } else {
            rest.append(chunk)
        }
        bytes += chunk.count
    }

    /// Copies up to `length` bytes into `buf`; returns how many.
    mutating func read(into buf: UnsafeMutablePointer<UInt8>, length: Int) -> Int {
        var done = 0
        while done < length && bytes > 0 {
            let n = min(length - done, head.count - headOffset)
            head.withUnsafeBufferPointer { p in (buf + done).update(from: p.baseAddress! + headOffset, count: n) }
            done += n
            headOffset += n
            bytes -= n
            if headOffset == head.count { advance() }
        }
        return done
    }

    private mutating func advance() {
        headOffset = 0
        if restIndex < rest.count {
            head = rest[restIndex]
            rest[restIndex] = []
            restIndex += 1
            if restIndex == rest.count {
                rest = []
                restIndex = 0
            }
        } else {
            head = []
        }
    }

    mutating func removeAll() { self = OutboundQueue() }
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
