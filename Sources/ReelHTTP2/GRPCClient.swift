internal import CNghttp2
internal import CReelSys
#if canImport(Glibc)
import Glibc
#endif
import ReelWire

/// A blocking gRPC client over one h2c (prior knowledge) connection.
///
/// Not thread-safe: one connection, used from the thread that created it; calls run one at a
/// time. Every failure is thrown as a `GRPCStatus`: the server's `grpc-status`, `UNAVAILABLE`
/// for connection failures, `DEADLINE_EXCEEDED` when a call's timeout passes locally.
/// A call in flight when the connection fails (or that the server refuses with GOAWAY) fails
/// with `UNAVAILABLE` and is not retried; the next call opens a new connection first.
public final class GRPCClient {
    public let host: String
    public let port: Int
    /// The largest response message accepted (`RESOURCE_EXHAUSTED` above it).
    public let maxReceiveMessageSize: Int

    let authority: String
    var fd: Int32 = -1
    var session: OpaquePointer?
    /// Open calls by stream id; nghttp2 callbacks find their call here.
    var calls: [Int32: Call] = [:]
    /// Set once the connection is unusable; open calls fail with it, the next call reconnects.
    var connectionFailure: GRPCStatus?
    /// The server sent GOAWAY: no new streams on this connection.
    var goawayReceived = false
    /// `close()` was called: no reconnecting.
    var closedByUser = false
    /// Bytes produced by `nghttp2_session_mem_send` not yet written to the socket.
    var pendingOutput: [UInt8] = []
    var pendingOutputStart = 0

    /// Connects to `host:port` and queues the client preface and SETTINGS (sent with the first call).
    /// Throws `UNAVAILABLE` when the server can't be reached.
    public init(host: String, port: Int, maxReceiveMessageSize: Int = GRPCFraming.defaultMaxMessageSize) throws {
        self.host = host
        self.port = port
        self.maxReceiveMessageSize = maxReceiveMessageSize
        self.authority = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        // `self` is complete here: on a throw, deinit releases what was opened.
        try openConnection()
    }

    deinit {
        if let session { nghttp2_session_del(session) }
        if fd >= 0 { Glibc.close(fd) }
    }

    /// (Re)opens the TCP connection and a fresh nghttp2 session, dropping any previous one.
    private func openConnection() throws(GRPCStatus) {
        if let session { nghttp2_session_del(session) }
        session = nil
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
        calls.removeAll()
        pendingOutput.removeAll()
        pendingOutputStart = 0
        goawayReceived = false
        connectionFailure = GRPCStatus(.unavailable, "not connected to \(authority)")

        let fd = reel_connect_tcp(host, Int32(clamping: port))
        if fd < 0 {
            let reason = -fd == EINVAL ? "cannot resolve the address" : Self.errnoText(-fd)
            throw GRPCStatus(.unavailable, "cannot connect to \(authority): \(reason)")
        }
        self.fd = fd
        _ = reel_set_nonblocking(fd)

        guard let session = Self.makeSession(userData: Unmanaged.passUnretained(self).toOpaque()) else {
            throw GRPCStatus(.internal, "cannot create an HTTP/2 session")
        }
        self.session = session

        var settings = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                                   value: Self.streamWindow),
        ]
        var rc = nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
        if rc == 0 {
            // Room for large responses (ListJobs pages) without a WINDOW_UPDATE round trip per 64 KiB.
            rc = nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, Self.connectionWindow)
        }
        if rc != 0 { throw GRPCStatus(.internal, "HTTP/2 setup failed: \(Self.nghttp2Text(rc))") }
        connectionFailure = nil
    }

    /// Says goodbye (GOAWAY) and closes the socket. Later calls fail with `UNAVAILABLE`.
    public func close() {
        closedByUser = true
        guard fd >= 0 else { return }
        if connectionFailure == nil, let session {
            _ = nghttp2_session_terminate_session(session, UInt32(NGHTTP2_NO_ERROR.rawValue))
            try? flushOutput()
        }
        fail(GRPCStatus(.unavailable, "connection closed by the client"))
    }

    /// One request message, one response message.
    ///
    /// - Parameters:
    ///   - path: `/package.Service/Method`.
    ///   - request: the encoded request message (framed here).
    ///   - timeout: sent as `grpc-timeout` and enforced locally too.
    ///   - metadata: extra request headers; names are lowercased, values sent as given.
    /// - Returns: the encoded response message.
    /// - Throws: `GRPCStatus` for any non-OK outcome.
    public func unary(path: String, request: [UInt8], timeout: Duration? = nil,
                      metadata: [(String, String)] = []) throws -> [UInt8] {
        var response: [UInt8]?
        var count = 0
        try perform(path: path, request: request, timeout: timeout, metadata: metadata) { message in
            count += 1
            if response == nil { response = message }
        }
        guard count == 1, let response else {
            throw GRPCStatus(.internal, count == 0
                ? "no response message for unary call \(path)"
                : "\(count) response messages for unary call \(path)")
        }
        return response
    }

    /// One request message, a stream of response messages.
    ///
    /// `onMessage` runs for each message as it arrives. If it throws, the stream is cancelled
    /// (RST_STREAM CANCEL) and its error is rethrown as is. Returns when the server ends the
    /// stream with OK; otherwise throws the `GRPCStatus`.
    public func serverStreaming(path: String, request: [UInt8], timeout: Duration? = nil,
                                metadata: [(String, String)] = [],
                                onMessage: ([UInt8]) throws -> Void) throws {
        try perform(path: path, request: request, timeout: timeout, metadata: metadata, onMessage: onMessage)
    }

    // MARK: - The call loop

    private func perform(path: String, request: [UInt8], timeout: Duration?, metadata: [(String, String)],
                         onMessage: ([UInt8]) throws -> Void) throws {
        if closedByUser { throw GRPCStatus(.unavailable, "the client was closed") }
        processIdleInput()
        if connectionFailure != nil || goawayReceived { try openConnection() }
        let deadline = timeout.map { ContinuousClock.now.advanced(by: $0) }
        let call = Call(body: GRPCFraming.frame(request), maxMessageSize: maxReceiveMessageSize)
        let streamID = try submitRequest(path: path, timeout: timeout, metadata: metadata, call: call)
        defer { calls[streamID] = nil }

        while true {
            while !call.messages.isEmpty {
                let message = call.messages.removeFirst()
                do {
                    try onMessage(message)
                } catch {
                    cancel(streamID: streamID, call: call)
                    throw error
                }
            }
            if call.isClosed { break }
            if let status = call.localStatus {
                cancel(streamID: streamID, call: call)
                throw status
            }
            if let deadline, ContinuousClock.now >= deadline {
                cancel(streamID: streamID, call: call)
                throw GRPCStatus(.deadlineExceeded, "deadline exceeded after \(timeout!) (client side)")
            }
            try waitForIO(until: deadline)
        }
        let status = call.finalStatus()
        if status.code != .ok { throw status }
    }

    private func submitRequest(path: String, timeout: Duration?, metadata: [(String, String)],
                               call: Call) throws(GRPCStatus) -> Int32 {
        var fields: [(String, String)] = [
            (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
            ("content-type", "application/grpc"), ("te", "trailers"),
        ]
        if let timeout {
            let (seconds, attoseconds) = timeout.components
            let nanos = max(0, seconds) * 1_000_000_000 + max(0, attoseconds / 1_000_000_000)
            fields.append(("grpc-timeout", GRPCTimeout.encode(nanoseconds: UInt64(nanos))))
        }
        for (name, value) in metadata { fields.append((name.lowercased(), value)) }

        // nghttp2 copies the name/value bytes during submit, so scratch storage is enough.
        var storage: [UnsafeMutablePointer<UInt8>] = []
        defer { for p in storage { p.deallocate() } }
        func bytes(_ s: String) -> (UnsafeMutablePointer<UInt8>, Int) {
            let utf8 = Array(s.utf8)
            let p = UnsafeMutablePointer<UInt8>.allocate(capacity: max(1, utf8.count))
            p.initialize(from: utf8, count: utf8.count)
            storage.append(p)
            return (p, utf8.count)
        }
        var nva: [nghttp2_nv] = fields.map { name, value in
            let (n, nl) = bytes(name)
            let (v, vl) = bytes(value)
            return nghttp2_nv(name: n, value: v, namelen: nl, valuelen: vl, flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
        }
        var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil),
                                             read_callback: GRPCClient.readRequestBody)
        let streamID = nghttp2_submit_request(session, nil, &nva, nva.count, &provider, nil)
        if streamID < 0 {
            let code: GRPCStatus.Code = streamID == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED.rawValue
                || streamID == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE.rawValue ? .unavailable : .internal
            throw GRPCStatus(code, "cannot start a stream: \(Self.nghttp2Text(streamID))")
        }
        calls[streamID] = call
        return streamID
    }

    /// Resets a call we no longer want, and tells the server promptly (best effort).
    private func cancel(streamID: Int32, call: Call) {
        guard !call.isClosed, connectionFailure == nil, let session else { return }
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID,
                                      UInt32(NGHTTP2_CANCEL.rawValue))
        try? flushOutput()
    }

    /// One turn of the loop: write what nghttp2 has queued, wait for the socket (at most until
    /// the deadline), read what arrived and feed it to nghttp2 (whose callbacks fill in calls).
    private func waitForIO(until deadline: ContinuousClock.Instant?) throws(GRPCStatus) {
        try flushOutput()
        if let connectionFailure { throw connectionFailure }
        guard let session else { throw GRPCStatus(.unavailable, "connection closed") }
        if nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0
            && pendingOutput.isEmpty {
            fail(GRPCStatus(.unavailable, "connection closed (GOAWAY)"))
            return
        }

        var events = Int16(POLLIN)
        if !pendingOutput.isEmpty { events |= Int16(POLLOUT) }
        var pfd = pollfd(fd: fd, events: events, revents: 0)
        var timeoutMs: Int32 = -1
        if let deadline {
            let left = ContinuousClock.now.duration(to: deadline)
            if left <= .zero { return }
            let (s, atto) = left.components
            timeoutMs = Int32(clamping: s * 1000 + (atto + 999_999_999_999_999) / 1_000_000_000_000_000)
        }
        let n = poll(&pfd, 1, timeoutMs)
        if n < 0 {
            if errno == EINTR { return }
            fail(GRPCStatus(.unavailable, "poll: \(Self.errnoText(errno))"))
            return
        }
        if n == 0 { return }
        if pfd.revents & Int16(POLLOUT) != 0 { try flushOutput() }
        if pfd.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 { readInput() }
    }

    /// Reads what arrived while no call ran (a GOAWAY after the server's idle timeout, or EOF
    /// after a restart), so that the next call knows to reconnect instead of failing.
    private func processIdleInput() {
        while connectionFailure == nil, fd >= 0 {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 0) == 1 else { return }
            readInput()
        }
    }

    private func readInput() {
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return }
            fail(GRPCStatus(.unavailable, "connection to \(authority) lost: \(Self.errnoText(errno))"))
            return
        }
        if n == 0 {
            fail(GRPCStatus(.unavailable, "connection to \(authority) closed by the server"))
            return
        }
        guard let session else { return }
        let rc = buffer.withUnsafeBytes {
            nghttp2_session_mem_recv(session, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), n)
        }
        if rc < 0 {
            // nghttp2 queued a GOAWAY; say it before hanging up.
            try? flushOutput()
            fail(GRPCStatus(.unavailable, "HTTP/2 connection error: \(Self.nghttp2Text(Int32(clamping: rc)))"))
        }
    }

    /// Moves everything nghttp2 wants to send into `pendingOutput` and writes as much as the
    /// socket takes without blocking.
    func flushOutput() throws(GRPCStatus) {
        guard fd >= 0, let session else { return }
        while true {
            var chunk: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &chunk)
            if n < 0 {
                fail(GRPCStatus(.unavailable, "HTTP/2 send error: \(Self.nghttp2Text(Int32(clamping: n)))"))
                throw connectionFailure!
            }
            if n == 0 { break }
            if let chunk { pendingOutput.append(contentsOf: UnsafeBufferPointer(start: chunk, count: n)) }
        }
        while pendingOutputStart < pendingOutput.count {
            let n = pendingOutput.withUnsafeBytes {
                send(fd, $0.baseAddress! + pendingOutputStart, $0.count - pendingOutputStart, Int32(MSG_NOSIGNAL))
            }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { break }
                fail(GRPCStatus(.unavailable, "connection to \(authority) lost: \(Self.errnoText(errno))"))
                throw connectionFailure!
            }
            pendingOutputStart += n
        }
        if pendingOutputStart == pendingOutput.count {
            pendingOutput.removeAll(keepingCapacity: true)
            pendingOutputStart = 0
        }
    }

    /// Marks the connection dead: open calls end with `status`, the socket is closed.
    func fail(_ status: GRPCStatus) {
        if connectionFailure == nil { connectionFailure = status }
        for call in calls.values where !call.isClosed { call.close(localStatus: status) }
        if fd >= 0 { Glibc.close(fd); fd = -1 }
    }

    // MARK: - Helpers

    static let streamWindow: UInt32 = 4 * 1024 * 1024
    static let connectionWindow: Int32 = 16 * 1024 * 1024

    static func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }
    static func nghttp2Text(_ code: Int32) -> String { String(cString: nghttp2_strerror(code)) }
}
