internal import CNghttp2
internal import CReelSys
internal import ReelEventLoop
import ReelWire
#if canImport(Glibc)
import Glibc
#endif

extension GRPCClient {
    /// The loop side of a client: socket, nghttp2 session, open streams and the queue of calls
    /// waiting for one. Confined to its loop thread; nghttp2 callbacks find it via user_data.
    final class Connection: LoopHandler {
        let host: String
        let port: Int
        let authority: String
        let maxReceiveMessageSize: Int
        let loop: EventLoop
        let registry: ConnectionRegistry

        private(set) var fd: Int32 = -1
        private(set) var session: OpaquePointer?
        /// Calls open on the wire, by stream id (completed ones stay until the stream closes).
        var streams: [Int32: PendingCall] = [:]
        /// Calls waiting for a stream, oldest first (`queueHead` is the first live index).
        private var queue: [PendingCall?] = []
        private var queueHead = 0
        /// Every call not yet closed, queued or open, by call id (for cancellation).
        private var calls: [UInt64: PendingCall] = [:]
        private(set) var deadlineCount = 0
        /// After a REFUSED_STREAM no new stream starts until another stream ends or this time
        /// passes: servers (grpc-core) free a stream's slot a little after its last frame, so
        /// the refusal says their real limit is lower right now.
        private(set) var holdUntil: ContinuousClock.Instant?
        static let refusalHold: Duration = .milliseconds(5)

        /// The registry's periodic tick has work here (deadlines or a hold to lift).
        var needsTimer: Bool { deadlineCount > 0 || holdUntil != nil }

        /// The server's SETTINGS_MAX_CONCURRENT_STREAMS (nghttp2's 100 until its SETTINGS arrive).
        var serverMaxStreams = 100
        /// GOAWAY received (or stream ids ran out): no new streams here; reconnect once drained.
        var goingAway = false
        private var closedByUser = false
        /// Why the last connection ended, for calls that can't get a new one.
        private var lastFailure: GRPCStatus?

        private var out: [UInt8] = []
        private var outOffset = 0
        private var wantsWritable = false
        private var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)
        private var serviceScheduled = false
        /// Streams to reset at the next service (decided inside nghttp2 callbacks).
        var pendingResets: [(Int32, UInt32)] = []

        init(host: String, port: Int, authority: String, maxReceiveMessageSize: Int, loop: EventLoop,
             registry: ConnectionRegistry) {
            self.host = host
            self.port = port
            self.authority = authority
            self.maxReceiveMessageSize = maxReceiveMessageSize
            self.loop = loop
            // Loop-confined like this connection: both are used only on `loop`'s thread.
            self.registry = registry
        }

        deinit {
            if let session { nghttp2_session_del(session) }
            if fd >= 0 { Glibc.close(fd) }
        }

        var openStreamCount: Int { streams.count }
        var queuedCount: Int { queue.count - queueHead }

        // MARK: - Connection lifecycle

        /// A blocking TCP connect (with TCP_NODELAY), made non-blocking afterwards.
        static func connectSocket(host: String, port: Int, authority: String) throws(GRPCStatus) -> Int32 {
            let fd = reel_connect_tcp(host, Int32(clamping: port))
            if fd < 0 {
                let reason = -fd == EINVAL ? "cannot resolve the address" : errnoText(-fd)
                throw GRPCStatus(.unavailable, "cannot connect to \(authority): \(reason)")
            }
            _ = reel_set_nonblocking(fd)
            return fd
        }

        /// Loop thread: takes over a connected socket, starts a session and registers for reads.
        func adopt(fd: Int32) {
            registry.add(self)
            if closedByUser { Glibc.close(fd); return }
            do {
                try startSession(fd: fd)
            } catch {
                Glibc.close(fd)
                lastFailure = error
            }
        }

        private func startSession(fd: Int32) throws(GRPCStatus) {
            guard let session = Self.makeSession(userData: Unmanaged.passUnretained(self).toOpaque()) else {
                throw GRPCStatus(.internal, "cannot create an HTTP/2 session")
            }
            var settings = [
                nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
                nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                                       value: Self.streamWindow),
            ]
            var rc = nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
            if rc == 0 {
                // Room for large responses (ListJobs pages) without a WINDOW_UPDATE round trip per 64 KiB.
                rc = nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0,
                                                           Self.connectionWindow)
            }
            if rc != 0 {
                nghttp2_session_del(session)
                throw GRPCStatus(.internal, "HTTP/2 setup failed: \(Self.nghttp2Text(rc))")
            }
            self.fd = fd
            self.session = session
            serverMaxStreams = 100
            holdUntil = nil
            goingAway = false
            lastFailure = nil
            wantsWritable = false
            loop.register(fd: fd, handler: self, events: UInt32(REEL_EPOLLIN | REEL_EPOLLRDHUP))
            scheduleService()
        }

        /// Drops the socket and session; open calls end with `status`. Queued calls stay queued
        /// (the next service reconnects for them) unless the user closed the client.
        func fail(_ status: GRPCStatus) {
            if lastFailure == nil { lastFailure = status }
            let open = streams.values
            streams.removeAll()
            for call in open {
                forget(call)
                call.complete(.failure(status))
            }
            tearDown()
            if !closedByUser && queuedCount > 0 { scheduleService() }
        }

        private func tearDown() {
            if fd >= 0 {
                loop.deregister(fd: fd)
                Glibc.close(fd)
                fd = -1
            }
            if let session { nghttp2_session_del(session) }
            session = nil
            out.removeAll()
            outOffset = 0
            pendingResets.removeAll()
        }

        /// The user's close: GOAWAY, then every call, open or queued, fails with UNAVAILABLE.
        func close() {
            guard !closedByUser else { return }
            closedByUser = true
            let status = GRPCStatus(.unavailable, "the client was closed")
            if let session, fd >= 0 {
                _ = nghttp2_session_terminate_session(session, UInt32(NGHTTP2_NO_ERROR.rawValue))
                flush()
            }
            failQueued(status)
            fail(status)
            registry.remove(self)
        }

        private func failQueued(_ status: GRPCStatus) {
            let waiting = queue[queueHead...].compactMap { $0 }
            queue.removeAll()
            queueHead = 0
            for call in waiting {
                forget(call)
                call.complete(.failure(status))
            }
        }

        // MARK: - Calls

        /// Loop thread: a new call from a task.
        func start(_ submission: CallSubmission) {
            let call = PendingCall(submission)
            if submission.control.cancelled.load(ordering: .acquiring) {
                call.complete(.failure(GRPCStatus(.cancelled, "the call was cancelled before it started")))
                return
            }
            if closedByUser {
                call.complete(.failure(GRPCStatus(.unavailable, "the client was closed")))
                return
            }
            calls[call.id] = call
            if submission.deadline != nil { deadlineCount += 1 }
            queue.append(call)
            scheduleService()
        }

        /// Loop thread: the caller's task was cancelled.
        func cancel(callID: UInt64) {
            guard let call = calls[callID] else { return }  // not started yet (start sees the flag) or done
            finishEarly(call, GRPCStatus(.cancelled, "the call was cancelled by the client"))
        }

        /// Ends a call before its stream does: a queued one leaves the queue, an open one is reset.
        private func finishEarly(_ call: PendingCall, _ status: GRPCStatus) {
            if call.streamID > 0 {
                if streams[call.streamID] === call {
                    pendingResets.append((call.streamID, UInt32(NGHTTP2_CANCEL.rawValue)))
                }
            } else if let index = queue[queueHead...].firstIndex(where: { $0 === call }) {
                queue[index] = nil
            }
            forget(call)
            call.complete(.failure(status))
            scheduleService()
        }

        /// The call no longer needs cancellation or deadline tracking.
        private func forget(_ call: PendingCall) {
            if calls.removeValue(forKey: call.id) != nil, call.submission.deadline != nil { deadlineCount -= 1 }
        }

        /// The registry's periodic tick: lifts an expired hold, ends calls past their deadline.
        func timerTick(now: ContinuousClock.Instant) {
            if let holdUntil, now >= holdUntil {
                self.holdUntil = nil
                scheduleService()
            }
            if deadlineCount > 0 { expireDeadlines(now: now) }
        }

        func expireDeadlines(now: ContinuousClock.Instant) {
            let expired = calls.values.filter { call in call.submission.deadline.map { now >= $0 } ?? false }
            for call in expired {
                let timeout = call.submission.timeout.map { "\($0)" } ?? "its deadline"
                finishEarly(call, GRPCStatus(.deadlineExceeded, "deadline exceeded after \(timeout) (client side)"))
            }
        }

        /// nghttp2 callback: the stream is gone; the call gets its outcome unless it already has one.
        func streamClosed(_ streamID: Int32, errorCode: UInt32) {
            guard let call = streams.removeValue(forKey: streamID) else { return }
            guard let wire = call.wire else { return }
            wire.close(resetCode: errorCode)
            if !call.completed && errorCode == UInt32(NGHTTP2_REFUSED_STREAM.rawValue) && wire.headers.isEmpty
                && call.refusals < PendingCall.maxRefusals && !closedByUser {
                // Not processed by the server (over its stream limit, above GOAWAY's last stream
                // id): try again once the server has room.
                call.refusals += 1
                holdUntil = .now + Self.refusalHold
                call.wire = nil
                call.streamID = -1
                call.firstMessage = nil
                call.messageCount = 0
                queue.insert(call, at: queueHead)
                scheduleService()
                return
            }
            forget(call)
            holdUntil = nil  // a slot the server has really freed
            scheduleService()
            guard !call.completed else { return }
            if let deadline = call.submission.deadline, ContinuousClock.now > deadline {
                // Deadlines are swept every few ms: an answer later than the deadline is still too late.
                let timeout = call.submission.timeout.map { "\($0)" } ?? "its deadline"
                call.complete(.failure(GRPCStatus(.deadlineExceeded, "deadline exceeded after \(timeout) (client side)")))
                return
            }
            let status = wire.finalStatus()
            guard status.code == .ok else {
                call.complete(.failure(status))
                return
            }
            switch call.submission.mode {
            case .unary:
                if call.messageCount == 1, let message = call.firstMessage {
                    call.complete(.success(message))
                } else {
                    call.complete(.failure(GRPCStatus(.internal, call.messageCount == 0
                        ? "no response message for unary call \(call.submission.path)"
                        : "\(call.messageCount) response messages for unary call \(call.submission.path)")))
                }
            case .streaming:
                call.complete(.success(nil))
            }
        }

        /// nghttp2 callback: response bytes for a stream; complete messages go to the caller.
        func received(_ data: UnsafeRawBufferPointer, streamID: Int32) {
            guard let call = streams[streamID], !call.completed, let wire = call.wire else { return }
            wire.receive(data: data)
            if let status = wire.localStatus {
                pendingResets.append((streamID, UInt32(NGHTTP2_CANCEL.rawValue)))
                forget(call)
                call.complete(.failure(status))
                scheduleService()
                return
            }
            guard !wire.messages.isEmpty else { return }
            let messages = wire.messages
            wire.messages.removeAll(keepingCapacity: true)
            switch call.submission.mode {
            case .unary:
                if call.firstMessage == nil { call.firstMessage = messages[0] }
                call.messageCount += messages.count
            case .streaming(let onMessage):
                call.messageCount += messages.count
                for message in messages { onMessage(message) }
            }
        }

        // MARK: - Service: submit queued calls, reset, flush

        func scheduleService() {
            guard !serviceScheduled else { return }
            serviceScheduled = true
            registry.scheduleService(self)
        }

        /// Runs at the end of a loop turn: (re)connects if calls wait, submits what the server's
        /// stream limit allows, sends resets, and flushes everything in as few writes as it can.
        func service() {
            serviceScheduled = false
            if session != nil && goingAway && streams.isEmpty && queuedCount > 0 {
                tearDown()  // drained after GOAWAY: a fresh connection for the queue
            }
            if session == nil {
                guard queuedCount > 0, !closedByUser else { return }
                reconnect()
                guard session != nil else { return }
            }
            guard let session else { return }
            for (streamID, code) in pendingResets {
                _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, code)
            }
            pendingResets.removeAll(keepingCapacity: true)
            while !goingAway && holdUntil == nil && streams.count < serverMaxStreams, let call = dequeue() {
                submit(call, session: session)
            }
            if queueHead > 1024 && queueHead * 2 > queue.count {
                queue.removeFirst(queueHead)
                queueHead = 0
            }
            flush()
        }

        private func dequeue() -> PendingCall? {
            while queueHead < queue.count {
                let call = queue[queueHead]
                queue[queueHead] = nil
                queueHead += 1
                if let call { return call }
            }
            queue.removeAll(keepingCapacity: true)
            queueHead = 0
            return nil
        }

        private func reconnect() {
            let fd: Int32
            do {
                fd = try Self.connectSocket(host: host, port: port, authority: authority)
                try startSession(fd: fd)
            } catch {
                // Nothing to send the queued calls on: they fail rather than wait forever.
                failQueued(error)
                return
            }
        }

        private func submit(_ call: PendingCall, session: OpaquePointer) {
            let head = call.submission.head
            var bytes = head.bytes
            let streamID = bytes.withUnsafeMutableBufferPointer { buffer -> Int32 in
                let base = buffer.baseAddress!
                var nva = head.fields.map { f in
                    nghttp2_nv(name: base + f.nameStart, value: base + f.valueStart, namelen: f.nameCount,
                               valuelen: f.valueCount, flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
                }
                var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil),
                                                     read_callback: Connection.readRequestBody)
                return nghttp2_submit_request(session, nil, &nva, nva.count, &provider, nil)
            }
            if streamID < 0 {
                if streamID == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE.rawValue
                    || streamID == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED.rawValue {
                    // Out of stream ids, or the session is going away: the next connection takes it.
                    goingAway = true
                    queueHead -= 1
                    queue[queueHead] = call
                    return
                }
                forget(call)
                call.complete(.failure(GRPCStatus(.internal, "cannot start a stream: \(Self.nghttp2Text(streamID))")))
                return
            }
            call.streamID = streamID
            call.wire = StreamResponse(body: call.submission.body, maxMessageSize: maxReceiveMessageSize)
            streams[streamID] = call
        }

        // MARK: - Socket I/O

        func handle(events: UInt32) {
            if events & UInt32(REEL_EPOLLIN | REEL_EPOLLERR | REEL_EPOLLHUP | REEL_EPOLLRDHUP) != 0 { readAvailable() }
            if fd >= 0 {
                if events & UInt32(REEL_EPOLLOUT) != 0 { flush() }
                scheduleService()
            }
        }

        private func readAvailable() {
            while fd >= 0, let session {
                let n = readBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n > 0 {
                    let rc = readBuffer.withUnsafeBytes {
                        nghttp2_session_mem_recv(session, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), n)
                    }
                    if rc < 0 {
                        flush()  // nghttp2 queued a GOAWAY: say it before hanging up
                        fail(GRPCStatus(.unavailable, "HTTP/2 connection error: \(Self.nghttp2Text(Int32(clamping: rc)))"))
                        return
                    }
                    if n < readBuffer.count { return }
                } else if n == 0 {
                    fail(GRPCStatus(.unavailable, "connection to \(authority) closed by the server"))
                    return
                } else {
                    if errno == EINTR { continue }
                    if errno == EAGAIN || errno == EWOULDBLOCK { return }
                    fail(GRPCStatus(.unavailable, "connection to \(authority) lost: \(Self.errnoText(errno))"))
                    return
                }
            }
        }

        /// Moves nghttp2's output to the socket, coalescing frames into ~64 KB writes; asks for
        /// EPOLLOUT while the socket is full.
        func flush() {
            while fd >= 0, let session {
                while out.count - outOffset < 64 * 1024 {
                    var chunk: UnsafePointer<UInt8>?
                    let n = nghttp2_session_mem_send(session, &chunk)
                    if n < 0 {
                        fail(GRPCStatus(.unavailable, "HTTP/2 send error: \(Self.nghttp2Text(Int32(clamping: n)))"))
                        return
                    }
                    if n == 0 { break }
                    if let chunk { out.append(contentsOf: UnsafeBufferPointer(start: chunk, count: n)) }
                }
                if out.count == outOffset { break }
                let w = out.withUnsafeBytes { send(fd, $0.baseAddress! + outOffset, $0.count - outOffset, Int32(MSG_NOSIGNAL)) }
                if w > 0 {
                    outOffset += w
                    if outOffset == out.count {
                        out.removeAll(keepingCapacity: out.capacity <= 256 * 1024)
                        outOffset = 0
                    }
                } else if w < 0 && errno == EINTR {
                    continue
                } else if w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                    setWantsWritable(true)
                    return
                } else {
                    fail(GRPCStatus(.unavailable, "connection to \(authority) lost: \(Self.errnoText(errno))"))
                    return
                }
            }
            setWantsWritable(false)
            if let session, fd >= 0, streams.isEmpty,
               nghttp2_session_want_read(session) == 0, nghttp2_session_want_write(session) == 0 {
                // Both sides said GOAWAY and nothing is open: this connection is done.
                fail(GRPCStatus(.unavailable, "connection to \(authority) closed (GOAWAY)"))
            }
        }

        private func setWantsWritable(_ on: Bool) {
            guard fd >= 0, on != wantsWritable else { return }
            wantsWritable = on
            loop.modify(fd: fd, events: UInt32(REEL_EPOLLIN | REEL_EPOLLRDHUP) | (on ? UInt32(REEL_EPOLLOUT) : 0))
        }

        // MARK: - Helpers

        static let streamWindow: UInt32 = 4 * 1024 * 1024
        static let connectionWindow: Int32 = 16 * 1024 * 1024

        static func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }
        static func nghttp2Text(_ code: Int32) -> String { String(cString: nghttp2_strerror(code)) }
    }
}
