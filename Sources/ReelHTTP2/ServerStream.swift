import ReelWire

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

    init(id: Int32, maxMessageSize: Int) {
        self.id = id
        reader = GRPCMessageReader(maxMessageSize: maxMessageSize)
    }

    var queuedBytes: Int { outbound.count - outboundOffset }
}

/// How a handler's messages reach its stream: hops onto the connection's loop.
struct StreamSink: Sendable {
    let connection: LoopBound<HTTP2Connection>
    let streamID: Int32

    func send(_ framed: [UInt8]) async throws {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, any Error>) in
            let c = UncheckedBox(cont)
            connection.withValue { conn in conn.enqueue(streamID: streamID, framed, waiter: c.value) }
        }
    }

    func finish(_ status: GRPCStatus) {
        connection.withValue { conn in conn.finish(streamID: streamID, status: status) }
    }
}

public struct StreamGoneError: Error, Sendable {}
