internal import CReelSys
internal import ReelEventLoop
import ReelWire
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The gRPC client: many concurrent calls on one h2c (prior knowledge) connection.
///
/// The connection lives on an event-loop thread (its own, or one of a shared `LoopGroup`'s);
/// calls may be made from any task (or, through `BlockingGRPCClient`, from any thread). Calls beyond the server's `SETTINGS_MAX_CONCURRENT_STREAMS`
/// wait in a queue, in order, until a stream closes; a stream the server refuses unprocessed
/// (REFUSED_STREAM) goes back to the front of the queue. Every failure is thrown as a
/// `GRPCStatus`: the server's `grpc-status`, `UNAVAILABLE` when the connection fails (calls
/// open on it are not retried), `DEADLINE_EXCEEDED` when a call's timeout passes locally,
/// `CANCELLED` when the calling task is cancelled (the stream is reset). After a failure or a
/// GOAWAY the next call opens a new connection.
public final class GRPCClient: Sendable {
    public let host: String
    public let port: Int
    /// The largest response message accepted (`RESOURCE_EXHAUSTED` above it).
    public let maxReceiveMessageSize: Int

    let connection: LoopBound<Connection>
    /// The group this client's loop belongs to, and whether the client created it for itself
    /// (then it is shut down with the client).
    private let group: LoopGroup
    private let ownsGroup: Bool
    private let nextCallID = Atomic<UInt64>(1)
    private let closed = Atomic<Bool>(false)
    /// Header fields every request carries, encoded once.
    private let fixedHeaders: [(String, String)]

    /// Connects to `host:port` (a blocking TCP connect on the calling thread) and hands the
    /// connection to a loop of `group`, or to a loop thread of its own when `group` is nil.
    /// Throws `UNAVAILABLE` when the server can't be reached.
    public init(host: String, port: Int, group: LoopGroup? = nil,
                maxReceiveMessageSize: Int = GRPCFraming.defaultMaxMessageSize) throws(GRPCStatus) {
        self.host = host
        self.port = port
        self.maxReceiveMessageSize = maxReceiveMessageSize
        let authority = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        fixedHeaders = [(":method", "POST"), (":scheme", "http"), (":authority", authority),
                         ("content-type", "application/grpc"), ("te", "trailers")]
        if let group, group.isShutDown { throw GRPCStatus(.unavailable, "the loop group was shut down") }
        let fd = try Connection.connectSocket(host: host, port: port, authority: authority)
        let loopGroup = group ?? LoopGroup(threads: 1, namePrefix: "reel-grpc-client")
        let (loop, registry) = loopGroup.nextLoop()
        let conn = Connection(host: host, port: port, authority: authority,
                              maxReceiveMessageSize: maxReceiveMessageSize, loop: loop, registry: registry)
        self.group = loopGroup
        self.ownsGroup = group == nil
        connection = LoopBound(conn, loop: loop)
        connection.withValue { $0.adopt(fd: fd) }
    }

    deinit {
        if !closed.load(ordering: .acquiring) {
            connection.withValue { $0.close() }
        }
        if ownsGroup { group.shutdown() }
    }

    /// Says goodbye (GOAWAY) and closes the socket; open and queued calls fail with
    /// `UNAVAILABLE`, later calls too. Returns once the connection is closed. Close clients
    /// before shutting down a shared `LoopGroup`.
    public func close() async {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        guard !group.isShutDown else { return }
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            connection.withValue { conn in
                conn.close()
                done.resume()
            }
        }
        if ownsGroup { group.shutdown() }
    }

    /// One request message, one response message.
    ///
    /// - Parameters:
    ///   - path: `/package.Service/Method`.
    ///   - request: the encoded request message (framed here).
    ///   - timeout: sent as `grpc-timeout` and enforced locally too (swept every 5-100 ms; an
    ///     answer after it fails too); it counts from this call, time spent queued included.
    ///   - metadata: extra request headers; names are lowercased, values sent as given.
    /// - Returns: the encoded response message.
    /// - Throws: `GRPCStatus` for any non-OK outcome.
    public func unary(path: String, request: [UInt8], timeout: Duration? = nil,
                      metadata: [(String, String)] = []) async throws -> [UInt8] {
        let outcome = try await perform(path: path, request: request, timeout: timeout, metadata: metadata,
                                        mode: .unary)
        return outcome ?? []
    }

    /// One request message, a stream of response messages.
    ///
    /// `onMessage` runs for each message as it arrives, in order, **on the connection's loop
    /// thread**: keep it short and non-blocking (decode, record, hand off). Returns when the
    /// server ends the stream with OK; otherwise throws the `GRPCStatus`. Cancel the calling
    /// task to stop watching (the stream is reset; `CANCELLED` is thrown).
    public func serverStreaming(path: String, request: [UInt8], timeout: Duration? = nil,
                                metadata: [(String, String)] = [],
                                onMessage: @escaping @Sendable ([UInt8]) -> Void) async throws {
        _ = try await perform(path: path, request: request, timeout: timeout, metadata: metadata,
                              mode: .streaming(onMessage))
    }

    /// The server's current `SETTINGS_MAX_CONCURRENT_STREAMS` as this connection applies it
    /// (100 until the server's first SETTINGS frame arrives).
    public func maxConcurrentStreams() async -> Int {
        await withCheckedContinuation { (done: CheckedContinuation<Int, Never>) in
            connection.withValue { done.resume(returning: $0.serverMaxStreams) }
        }
    }

    /// Calls open on the wire and calls waiting for a stream, right now.
    public func callCounts() async -> (open: Int, queued: Int) {
        await withCheckedContinuation { (done: CheckedContinuation<(open: Int, queued: Int), Never>) in
            connection.withValue { done.resume(returning: ($0.openStreamCount, $0.queuedCount)) }
        }
    }

    // MARK: - Submission

    private func perform(path: String, request: [UInt8], timeout: Duration?, metadata: [(String, String)],
                         mode: PendingCall.Mode) async throws -> [UInt8]? {
        let control = try newCall()
        let connection = self.connection
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[UInt8]?, any Error>) in
                let call = submission(control, path: path, request: request, timeout: timeout, metadata: metadata,
                                      mode: mode, completion: .task(continuation))
                connection.withValue { $0.start(call) }
            }
        } onCancel: {
            Self.cancel(control, on: connection)
        }
    }

    /// Starts a call whose outcome goes to `mailbox` (`BlockingGRPCClient`); cancel it with `cancel(_:)`.
    func start(path: String, request: [UInt8], timeout: Duration?, metadata: [(String, String)],
               mode: PendingCall.Mode, mailbox: CallMailbox) throws(GRPCStatus) -> CallControl {
        let control = try newCall()
        let call = submission(control, path: path, request: request, timeout: timeout, metadata: metadata,
                              mode: mode, completion: .thread(mailbox))
        connection.withValue { $0.start(call) }
        return control
    }

    /// Ends a call early with `CANCELLED` (its stream is reset), from any thread.
    func cancel(_ control: CallControl) {
        Self.cancel(control, on: connection)
    }

    private static func cancel(_ control: CallControl, on connection: LoopBound<Connection>) {
        control.cancelled.store(true, ordering: .releasing)
        connection.withValue { $0.cancel(callID: control.id) }
    }

    private func newCall() throws(GRPCStatus) -> CallControl {
        if closed.load(ordering: .acquiring) { throw GRPCStatus(.unavailable, "the client was closed") }
        if group.isShutDown { throw GRPCStatus(.unavailable, "the client's loop group was shut down") }
        return CallControl(id: nextCallID.wrappingAdd(1, ordering: .relaxed).oldValue)
    }

    private func submission(_ control: CallControl, path: String, request: [UInt8], timeout: Duration?,
                            metadata: [(String, String)], mode: PendingCall.Mode,
                            completion: Completion) -> CallSubmission {
        CallSubmission(control: control, path: path, head: requestHead(path: path, timeout: timeout, metadata: metadata),
                       body: GRPCFraming.frame(request), deadline: timeout.map { ContinuousClock.now.advanced(by: $0) },
                       timeout: timeout, mode: mode, completion: completion)
    }

    private func requestHead(path: String, timeout: Duration?, metadata: [(String, String)]) -> RequestHead {
        var head = RequestHead()
        head.append(fixedHeaders[0])
        head.append((":path", path))
        for field in fixedHeaders.dropFirst() { head.append(field) }
        if let timeout {
            let (seconds, attoseconds) = timeout.components
            let nanos = max(0, seconds) &* 1_000_000_000 &+ max(0, attoseconds / 1_000_000_000)
            head.append(("grpc-timeout", GRPCTimeout.encode(nanoseconds: UInt64(nanos))))
        }
        for (name, value) in metadata { head.append((name.lowercased(), value)) }
        return head
    }
}
