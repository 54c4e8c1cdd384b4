internal import CNghttp2
internal import CReelSys
internal import ReelEventLoop
import ReelWire
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// One h2c connection: bytes in from the socket through nghttp2, gRPC calls out to
/// handlers, responses back. Confined to its event loop's thread.
final class HTTP2Connection: LoopHandler, LoopFlushable, LoopSendTarget {
    let fd: Int32
    let loop: EventLoop
    let server: GRPCServerCore
    unowned let context: LoopContext
    private let tls: TLSSession?
    private var session: OpaquePointer?
    private var streams: [Int32: ServerStream] = [:]
    private var out: [UInt8] = []
    private var outOffset = 0
    private var writeBlocked = false
    private var flushPending = false
    private var closed = false
    private var goingAway = false
    var lastActivity = ContinuousClock.now
    /// When a frame last arrived whole (or the connection opened), and how many bytes arrived
    /// since: a client trickling a frame (slow-loris) is cut off.
    private var lastProgress = ContinuousClock.now
    private var bytesSinceProgress = 0
    private var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)
    private var wantsWritable = false
    /// Streams whose provider `readData` ended, until nghttp2 reports that frame sent (nghttp2
    /// sends a frame before it reads the next: one at a time, no lookup by id per frame).
    private var ending: [ServerStream] = []
    /// Loop-owned streams that ended after sending messages: their trailers wait until the DATA
    /// already queued on the connection is out (see `finishOwned`), and a loop turn has passed.
    private var trailersLater: [ServerStream] = []
    private var trailersTurnPassed = false
    private var trailersTurnScheduled = false

    init(fd: Int32, loop: EventLoop, server: GRPCServerCore, context: LoopContext, tls: TLSSession? = nil) {
        self.context = context
        self.tls = tls
        self.fd = fd
        self.loop = loop
        self.server = server
        var cbs: OpaquePointer?
        nghttp2_session_callbacks_new(&cbs)
        defer { nghttp2_session_callbacks_del(cbs) }
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs) { _, frame, ud in
            HTTP2Connection.from(ud).onBeginHeaders(frame!)
        }
        nghttp2_session_callbacks_set_on_header_callback(cbs) { _, frame, name, namelen, value, valuelen, _, ud in
            HTTP2Connection.from(ud).onHeader(frame!, name!, namelen, value!, valuelen)
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs) { _, frame, ud in
            HTTP2Connection.from(ud).onFrameRecv(frame!)
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs) { _, _, streamID, data, len, ud in
            HTTP2Connection.from(ud).onData(streamID, UnsafeRawBufferPointer(start: data, count: len))
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs) { _, streamID, errorCode, ud in
            HTTP2Connection.from(ud).onStreamClose(streamID, errorCode)
        }
        nghttp2_session_callbacks_set_on_frame_send_callback(cbs) { _, frame, ud in
            HTTP2Connection.from(ud).onFrameSent(frame!)
        }
        var opt: OpaquePointer?
        nghttp2_option_new(&opt)
        defer { nghttp2_option_del(opt) }
        nghttp2_option_set_max_send_header_block_length(opt, 64 * 1024)
        nghttp2_session_server_new2(&session, cbs, Unmanaged.passUnretained(self).toOpaque(), opt)

        var settings = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue),
                                   value: server.config.maxConcurrentStreams),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: 1 << 20),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: 64 * 1024),
        ]
        nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
        nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, 16 << 20)
    }

    deinit { if let session { nghttp2_session_del(session) } }

    private static func from(_ ud: UnsafeMutableRawPointer?) -> HTTP2Connection {
        Unmanaged<HTTP2Connection>.fromOpaque(ud!).takeUnretainedValue()
    }

    var openStreams: Int { streams.count }

    // MARK: socket I/O

    func handle(events: UInt32) {
        let handshaking = tls.map { !$0.established } ?? false
        if handshaking || events & UInt32(REEL_EPOLLIN | REEL_EPOLLERR | REEL_EPOLLHUP) != 0 { readAvailable() }
        if !closed, events & UInt32(REEL_EPOLLOUT) != 0 { writeBlocked = false }
        if !closed { flush() }
    }

    private func readAvailable() {
        lastActivity = .now
        if let tls, !tls.established {
            switch tls.handshake() {
            case .done: break
            case .wantRead: return
            case .wantWrite: return wantWritable()
            case .failed: return close()  // no TLS, or a client that doesn't speak h2
            }
        }
        while !closed {
            var n: Int
            if let tls {
                n = readBuffer.withUnsafeMutableBytes { tls.read($0.baseAddress!, $0.count) }
                if n == 0 { return }  // would block
                if n < 0 { n = 0 }    // closed or failed: handled as EOF below
            } else {
                n = readBuffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            }
            if n > 0 {
                bytesSinceProgress += n
                let rc = readBuffer.withUnsafeBytes { nghttp2_session_mem_recv(session, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), n) }
                if rc < 0 {
                    server.logger.debug("h2 protocol error, closing", metadata: ["h2.error": "\(String(cString: nghttp2_strerror(Int32(rc))))"])
                    flush()  // let nghttp2's GOAWAY out if it queued one
                    close()
                    return
                }
                if tls == nil && n < readBuffer.count { return }
            } else if n == 0 {
                close()
                return
            } else {
                if errno == EAGAIN || errno == EWOULDBLOCK { return }
                if errno == EINTR { continue }
                close()
                return
            }
        }
    }

    private func wantWritable() {
        if !wantsWritable {
            wantsWritable = true
            loop.modify(fd: fd, events: UInt32(REEL_EPOLLIN | REEL_EPOLLOUT | REEL_EPOLLRDHUP))
        }
    }

    /// Flushes at the end of this loop turn: a response's message and trailers, and other
    /// calls' responses finished in the same turn, go out in one write.
    private func flushSoon() {
        guard !flushPending, !closed else { return }
        flushPending = true
        loop.flushAtEndOfTurn(self)
    }

    func flushDeferred() {
        flushPending = false
        flush()
    }

    /// Moves nghttp2's output to the socket, coalescing frames into ~64 KB writes.
    func flush() {
        guard !closed else { return }
        if let tls, !tls.established { return }  // nothing goes out before the handshake
        while true {
            if !writeBlocked {
                while out.count - outOffset < 64 * 1024 {
                    var data: UnsafePointer<UInt8>?
                    let n = nghttp2_session_mem_send(session, &data)
                    if n < 0 { close(); return }
                    if n == 0 {
                        if trailersTurnPassed && !trailersLater.isEmpty {
                            releaseTrailers()
                            continue
                        }
                        break
                    }
                    out.append(contentsOf: UnsafeBufferPointer(start: data, count: n))
                }
            }
            if out.count == outOffset { break }
            var w: Int
            if let tls {
                w = out.withUnsafeBytes { p in tls.write(p.baseAddress! + outOffset, out.count - outOffset) }
                if w == 0 { w = -1; errno = EAGAIN }
            } else {
                w = out.withUnsafeBytes { p in write(fd, p.baseAddress! + outOffset, out.count - outOffset) }
            }
            if w > 0 {
                writeBlocked = false  // the socket takes bytes again: nghttp2 may produce more
                outOffset += w
                if outOffset == out.count { out.removeAll(keepingCapacity: out.capacity <= 256 * 1024); outOffset = 0 }
            } else if w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                writeBlocked = true
                return wantWritable()
            } else if w < 0 && errno == EINTR {
                continue
            } else {
                close(); return
            }
        }
        if wantsWritable {
            wantsWritable = false
            loop.modify(fd: fd, events: UInt32(REEL_EPOLLIN | REEL_EPOLLRDHUP))
        }
        if nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0 {
            close()
        }
    }

    func close() {
        guard !closed else { return }
        closed = true
        for (_, s) in streams { abandon(s) }
        streams.removeAll()
        trailersLater = []
        ending = []
        loop.deregister(fd: fd)
        Glibc.close(fd)
        context.connectionClosed(self)
    }

    private func abandon(_ s: ServerStream) {
        s.credit.gone.store(true, ordering: .releasing)
        s.task?.cancel()
        s.inbound?.finish()
        s.finished = true
        let waiters = s.waiters
        s.waiters = []
        for w in waiters { w.resume(throwing: StreamGoneError()) }
        ended(s)
    }

    /// A loop-owned stream is over (whoever ended it): counted once, and its owner told.
    private func ended(_ s: ServerStream) {
        guard s.loopOwned, let onEnd = s.onEnd else { return }
        s.onEnd = nil
        server.callEnded()
        onEnd()
    }

    // MARK: nghttp2 callbacks

    private func onBeginHeaders(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        guard reel_nghttp2_is_headers_request(frame) != 0 else { return 0 }
        let id = frame.pointee.hd.stream_id
        streams[id] = ServerStream(id: id, maxMessageSize: server.config.maxMessageSize)
        return 0
    }

    private func onHeader(_ frame: UnsafePointer<nghttp2_frame>, _ name: UnsafePointer<UInt8>, _ nlen: Int,
                          _ value: UnsafePointer<UInt8>, _ vlen: Int) -> Int32 {
        guard let s = streams[frame.pointee.hd.stream_id], !s.headersSent else { return 0 }
        s.headerBytes += nlen + vlen + 32  // RFC 9113's accounting, as SETTINGS_MAX_HEADER_LIST_SIZE means it
        if s.headerBytes > Self.maxHeaderListSize {
            if s.earlyStatus == nil {
                s.earlyStatus = GRPCStatus(.resourceExhausted, "request headers exceed \(Self.maxHeaderListSize) bytes")
            }
            return 0
        }
        func named(_ h: StaticString) -> Bool {
            nlen == h.utf8CodeUnitCount && memcmp(name, h.utf8Start, nlen) == 0
        }
        // Transport headers no handler reads (`te: trailers`, the client's name, pseudo-headers
        // other than the two below) are not turned into strings at all.
        if nlen > 0 && name[0] == UInt8(ascii: ":") {
            if named(":path") {
                s.path = String(decoding: UnsafeBufferPointer(start: value, count: vlen), as: UTF8.self)
            } else if named(":method") {
                s.method = String(decoding: UnsafeBufferPointer(start: value, count: vlen), as: UTF8.self)
            }
            return 0
        }
        if named("te") || named("user-agent") { return 0 }
        let n = String(decoding: UnsafeBufferPointer(start: name, count: nlen), as: UTF8.self)
        let v = String(decoding: UnsafeBufferPointer(start: value, count: vlen), as: UTF8.self)
        switch n {
        case "content-type": s.contentType = v
        case "grpc-encoding": s.encoding = v
        case "grpc-timeout": s.timeout = v
        default:
            if s.metadata.count < 64 { s.metadata[n] = v }
        }
        return 0
    }

    private func onFrameRecv(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        lastProgress = .now
        bytesSinceProgress = 0
        let type = UInt32(frame.pointee.hd.type)
        let id = frame.pointee.hd.stream_id
        if type == NGHTTP2_HEADERS.rawValue, reel_nghttp2_is_headers_request(frame) != 0, let s = streams[id] {
            headersComplete(s)
        }
        if (type == NGHTTP2_HEADERS.rawValue || type == NGHTTP2_DATA.rawValue),
           reel_nghttp2_frame_end_stream(frame) != 0, let s = streams[id] {
            requestComplete(s)
        }
        return 0
    }

    static let maxHeaderListSize = 64 * 1024

    private func headersComplete(_ s: ServerStream) {
        s.headersDone = true
        if s.earlyStatus != nil {
            // decided while the headers arrived (too large)
        } else if s.method != "POST" {
            s.httpStatus = 405
            s.earlyStatus = GRPCStatus(.internal, "method \(s.method) not allowed; gRPC uses POST")
        } else if !(s.contentType == "application/grpc" || s.contentType.hasPrefix("application/grpc+proto")
                    || s.contentType.hasPrefix("application/grpc;")) {
            s.httpStatus = 415
            s.earlyStatus = GRPCStatus(.internal, "unsupported content-type \(s.contentType)")
        } else if let route = server.router.routes[s.path] {
            s.route = route
        } else {
            s.earlyStatus = GRPCStatus(.unimplemented, "unknown method \(s.path)")
        }
        if !s.timeout.isEmpty {
            if let ns = GRPCTimeout.parse(s.timeout) {
                s.deadline = ContinuousClock.now.advanced(by: .nanoseconds(Int64(min(ns, UInt64(Int64.max)))))
                context.armDeadline(s.deadline!, conn: self, stream: s.id)
            } else if s.earlyStatus == nil {
                s.earlyStatus = GRPCStatus(.internal, "malformed grpc-timeout \(s.timeout)")
            }
        }
        // A status decided from the headers alone is sent at once; the body is discarded.
        if let status = s.earlyStatus { return respondTrailersOnly(s, status) }
        // A bidi call starts now: its requests arrive while it answers.
        if let route = s.route, route.kind == .bidiStreaming {
            let (requests, inbound) = AsyncStream<[UInt8]>.makeStream(bufferingPolicy: .bufferingOldest(64))
            s.inbound = inbound
            start(s, route, GRPCCall(path: s.path, request: [], requests: requests, metadata: s.metadata, deadline: s.deadline,
                                     sink: sink(for: s)))
        }
    }

    private func start(_ s: ServerStream, _ route: GRPCRoute, _ call: GRPCCall) {
        let sink = call.sink
        server.callStarted()
        let server = self.server
        s.task = Task {
            let status = await route.handler(call)
            sink.finish(status)
            server.callEnded()
        }
    }

    private func onData(_ streamID: Int32, _ data: UnsafeRawBufferPointer) -> Int32 {
        guard let s = streams[streamID], s.earlyStatus == nil, !s.finished else { return 0 }
        do {
            let msgs = try s.reader.feed(data)
            if let inbound = s.inbound {
                for m in msgs {
                    if case .dropped = inbound.yield(m) {
                        return fail(s, GRPCStatus(.resourceExhausted, "more than 64 request messages waiting; read the responses"))
                    }
                }
                return 0
            }
            s.messages.append(contentsOf: msgs)
            if s.messages.count > 1 {
                return fail(s, GRPCStatus(.unimplemented, "more than one request message on a unary or server-streaming call"))
            }
        } catch {
            switch error {
            case .tooLarge(let declared, let limit):
                return fail(s, GRPCStatus(.resourceExhausted, "request message of \(declared) bytes exceeds the limit of \(limit) bytes"))
            case .compressedUnsupported:
                return fail(s, GRPCStatus(.unimplemented, "compressed messages are not supported (grpc-encoding \(s.encoding.isEmpty ? "unset" : s.encoding)); send identity"))
            case .badFlag(let f):
                return fail(s, GRPCStatus(.internal, "invalid compressed-flag byte \(f)"))
            }
        }
        return 0
    }

    private func fail(_ s: ServerStream, _ status: GRPCStatus) -> Int32 {
        s.earlyStatus = status
        s.messages = []
        s.inbound?.finish()
        if s.headersSent {
            terminate(streamID: s.id, status: status)
        } else {
            respondTrailersOnly(s, status)
        }
        return 0
    }

    private func requestComplete(_ s: ServerStream) {
        guard s.earlyStatus == nil, !s.finished, let route = s.route else { return }
        if s.reader.hasPartialMessage {
            _ = fail(s, GRPCStatus(.internal, "request message cut short: the length prefix promises more than the stream carried"))
            return
        }
        if let inbound = s.inbound {
            inbound.finish()
            return
        }
        guard s.messages.count == 1 else {
            _ = fail(s, GRPCStatus(.internal, s.messages.isEmpty ? "no request message" : "too many request messages"))
            return
        }
        if let onLoop = route.onLoop {
            // A streaming call served from the loop thread: its handler keeps the stream.
            let request = s.messages[0]
            s.messages = []
            takeOver(s)
            if onLoop(request, s.metadata, LoopStream(connection: self, stream: s)) { return }
            s.loopOwned = false
            s.onEnd = nil
            server.callEnded()
            s.messages = [request]
        }
        if let inline = route.inline, let answer = inline(s.messages[0], s.metadata) {
            // Answered here, on the loop thread: no task, no hop to the pool and back.
            s.messages = []
            switch answer {
            case .message(let m):
                s.outbound.append(GRPCFraming.frame(m))
                submitHeaders(s, extra: [], withBody: true)
                s.finished = true
                s.trailers = .ok
                server.noteStatus(.ok, path: s.path, started: s.started)
                flushSoon()
            case .status(let status):
                respondTrailersOnly(s, status)
                flushSoon()
            }
            return
        }
        let call = GRPCCall(path: s.path, request: s.messages[0], requests: nil, metadata: s.metadata, deadline: s.deadline,
                            sink: sink(for: s))
        s.messages = []
        start(s, route, call)
    }

    private func onStreamClose(_ streamID: Int32, _ errorCode: UInt32) -> Int32 {
        if let s = streams.removeValue(forKey: streamID) {
            if s.dataEnding, let i = ending.firstIndex(where: { $0 === s }) { ending.remove(at: i) }
            abandon(s)
        }
        return 0
    }

    // MARK: responses

    private func submitHeaders(_ s: ServerStream, extra: [(String, String)], withBody: Bool) {
        s.headersSent = true
        if s.httpStatus == 200 && extra.isEmpty && withBody {
            // Every successful call's response headers: made once (nghttp2 copies them).
            var provider = dataProvider(s)
            _ = nghttp2_submit_response(session, s.id, StaticHeaders.ok.nv, StaticHeaders.ok.count, &provider)
            s.dataAttached = true
            return
        }
        var headers: [(String, String)] = [(":status", String(s.httpStatus)), ("content-type", "application/grpc"),
                                           ("grpc-accept-encoding", "identity")]
        headers.append(contentsOf: extra)
        withNV(headers) { nv in
            if withBody {
                var provider = dataProvider(s)
                _ = nghttp2_submit_response(session, s.id, nv.baseAddress, nv.count, &provider)
                s.dataAttached = true
            } else {
                _ = nghttp2_submit_response(session, s.id, nv.baseAddress, nv.count, nil)
            }
        }
    }

    /// Where nghttp2 reads the stream's DATA from: `readData`, with the stream itself as the
    /// source (no lookup by id per frame; the stream outlives its provider, which nghttp2 drops
    /// when the stream closes).
    private func dataProvider(_ s: ServerStream) -> nghttp2_data_provider {
        var provider = nghttp2_data_provider()
        provider.source.ptr = Unmanaged.passUnretained(s).toOpaque()
        provider.read_callback = { _, _, buf, length, flags, source, ud in
            HTTP2Connection.from(ud).readData(Unmanaged<ServerStream>.fromOpaque(source!.pointee.ptr).takeUnretainedValue(),
                                              buf!, length, flags!)
        }
        return provider
    }

    /// Bytes were queued on a stream whose headers are out: make sure nghttp2 will read them.
    /// (A provider that just ended is still attached until its last frame is sent; `onFrameSent`
    /// takes over then.)
    private func dataQueued(_ s: ServerStream) {
        if !s.dataAttached {
            var provider = dataProvider(s)
            _ = nghttp2_submit_data(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), s.id, &provider)
            s.dataAttached = true
        } else if s.deferred {
            s.deferred = false
            nghttp2_session_resume_data(session, s.id)
        }
    }

    /// nghttp2 sent a frame. The last DATA frame of a provider that ran dry detaches it (before
    /// this callback, so that a new one may be submitted here): what was queued or decided since
    /// goes out now.
    private func onFrameSent(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        guard UInt32(frame.pointee.hd.type) == NGHTTP2_DATA.rawValue, !ending.isEmpty else { return 0 }
        let id = frame.pointee.hd.stream_id
        guard let i = ending.firstIndex(where: { $0.id == id }) else { return 0 }
        let s = ending.remove(at: i)
        s.dataEnding = false
        s.dataAttached = false
        if s.queuedBytes > 0 {
            dataQueued(s)
        } else if let status = s.trailers {
            s.trailers = nil
            submitTrailers(s, status)
        }
        return 0
    }

    private func submitTrailers(_ s: ServerStream, _ status: GRPCStatus) {
        if status.code == .ok && status.message.isEmpty {
            _ = nghttp2_submit_trailer(session, s.id, StaticHeaders.okTrailers.nv, StaticHeaders.okTrailers.count)
        } else {
            withNV(statusHeaders(status)) { nv in
                _ = nghttp2_submit_trailer(session, s.id, nv.baseAddress, nv.count)
            }
        }
    }

    private func statusHeaders(_ status: GRPCStatus) -> [(String, String)] {
        var h = [("grpc-status", String(status.code.rawValue))]
        if !status.message.isEmpty { h.append(("grpc-message", PercentEncoding.encode(status.message))) }
        return h
    }

    /// A response with no messages: status in the one HEADERS frame (END_STREAM).
    private func respondTrailersOnly(_ s: ServerStream, _ status: GRPCStatus) {
        guard !s.finished, !s.headersSent else { return }
        s.finished = true
        s.task?.cancel()
        submitHeaders(s, extra: statusHeaders(status), withBody: false)
        server.noteStatus(status, path: s.route == nil ? "-" : s.path, started: s.started)
    }

    private func sink(for s: ServerStream) -> StreamSink {
        StreamSink(connection: LoopBound(self, loop: loop), streamID: s.id, credit: s.credit,
                   highWater: server.config.streamHighWater)
    }

    // MARK: loop-owned streams

    /// Hands the stream to code on the loop (`GRPCCall.handOff`): nil when it has ended.
    func handOff(streamID: Int32, _ body: (LoopStream?) -> Void) {
        guard let s = streams[streamID], !s.finished, !s.loopOwned, !closed else { return body(nil) }
        takeOver(s)
        body(LoopStream(connection: self, stream: s))
    }

    private func takeOver(_ s: ServerStream) {
        s.loopOwned = true
        s.onEnd = {}
        server.callStarted()
    }

    /// `LoopStream.write`: `framed` queued on the stream (not copied), unless the stream is gone
    /// or (`evenIfFull` aside) over its high-water mark.
    func writeOwned(_ s: ServerStream, _ framed: [UInt8], evenIfFull: Bool) -> LoopStream.Write {
        guard !s.finished, !closed else { return .gone }
        let queued = s.credit.pending.add(framed.count, ordering: .relaxed).newValue
        if queued > server.config.streamHighWater && !evenIfFull {
            s.credit.pending.subtract(framed.count, ordering: .relaxed)
            return .full
        }
        s.outbound.append(framed)
        if !s.headersSent {
            submitHeaders(s, extra: [], withBody: true)
        } else {
            dataQueued(s)
        }
        flushSoon()
        return .sent
    }

    /// `LoopStream.finish`: the owner's status.
    /// A fan-out ends thousands of streams at once (a job's terminal event): their trailers —
    /// and the stream closing they set off at both ends — go after the DATA queued on the
    /// connection, in a later loop turn, so that the last message reaches every stream of the
    /// loop before any of them spends time closing. Each stream still gets its trailers right
    /// after its own messages.
    func finishOwned(_ s: ServerStream, _ status: GRPCStatus) {
        guard !s.finished, !closed else { return }
        s.onEnd = {}  // the owner knows
        if s.headersSent {
            s.finished = true
            server.noteStatus(status, path: s.route == nil ? "-" : s.path, started: s.started)
            s.laterTrailers = status
            trailersLater.append(s)
            if !trailersTurnScheduled {
                trailersTurnScheduled = true
                let me = UncheckedBox(self)
                loop.execute {
                    me.value.trailersTurnPassed = true
                    me.value.flushSoon()
                }
            }
        } else {
            finishStream(s, status)
        }
        ended(s)
    }

    private func releaseTrailers() {
        let list = trailersLater
        trailersLater = []
        trailersTurnPassed = false
        trailersTurnScheduled = false
        for s in list {
            guard let status = s.laterTrailers, streams[s.id] === s else { continue }
            s.laterTrailers = nil
            sendTrailers(s, status)
        }
    }

    /// `status` as the stream's trailers: after the DATA still queued when a data provider is
    /// attached (`readData` sends them when it runs dry), else at once.
    private func sendTrailers(_ s: ServerStream, _ status: GRPCStatus) {
        if s.dataAttached {
            s.trailers = status
            if s.deferred {
                s.deferred = false
                nghttp2_session_resume_data(session, s.id)
            }
        } else {
            submitTrailers(s, status)
        }
    }

    /// `LoopSendTarget`: a handler's message that needs no waiter.
    func enqueue(streamID: Int32, _ bytes: [UInt8]) {
        enqueue(streamID: streamID, bytes, waiter: nil)
    }

    /// A handler's message for `streamID`. `waiter` (if any) resumes once the stream's unsent
    /// bytes are under the high-water mark again.
    func enqueue(streamID: Int32, _ framed: [UInt8], waiter: CheckedContinuation<Void, any Error>?) {
        guard let s = streams[streamID], !s.finished, !closed else {
            waiter?.resume(throwing: StreamGoneError())
            return
        }
        s.outbound.append(framed)
        if !s.headersSent {
            submitHeaders(s, extra: [], withBody: true)
        } else {
            dataQueued(s)
        }
        if let waiter {
            if s.queuedBytes <= server.config.streamHighWater {
                waiter.resume()
            } else {
                s.waiters.append(waiter)
            }
        }
        flushSoon()
    }

    /// The handler task's status. A stream handed to the loop is ended by its owner instead.
    func finish(streamID: Int32, status: GRPCStatus) {
        guard let s = streams[streamID], !s.loopOwned else { return }
        finishStream(s, status)
    }

    private func finishStream(_ s: ServerStream, _ status: GRPCStatus) {
        guard !s.finished, !closed else { return }
        if !s.headersSent {
            respondTrailersOnly(s, status)
        } else {
            s.finished = true
            server.noteStatus(status, path: s.route == nil ? "-" : s.path, started: s.started)
            sendTrailers(s, status)
        }
        flushSoon()
    }

    /// Ends a call early (deadline, shutdown): cancels its handler and sends `status`.
    func terminate(streamID: Int32, status: GRPCStatus) {
        guard let s = streams[streamID], !s.finished else { return }
        s.task?.cancel()
        s.inbound?.finish()
        s.credit.gone.store(true, ordering: .releasing)
        let waiters = s.waiters
        s.waiters = []
        for w in waiters { w.resume(throwing: StreamGoneError()) }
        s.outbound.removeAll()
        finishStream(s, status)
        ended(s)
    }

    /// nghttp2 asks for a DATA frame's payload. When the queue runs dry the provider ends
    /// (EOF without END_STREAM: the stream stays open) instead of deferring: nghttp2 then drops
    /// the stream from its send queue at once, and the next message attaches a provider again
    /// (`dataQueued`). A watch stream sending one message at a time costs nghttp2 one queue
    /// insertion and one removal per message, not two of each and a second callback.
    private func readData(_ s: ServerStream, _ buf: UnsafeMutablePointer<UInt8>, _ length: Int,
                          _ flags: UnsafeMutablePointer<UInt32>) -> Int {
        let n = s.outbound.read(into: buf, length: length)
        if n > 0 {
            s.credit.pending.subtract(n, ordering: .relaxed)
            if s.queuedBytes <= server.config.streamHighWater / 2 && !s.waiters.isEmpty {
                let waiters = s.waiters
                s.waiters = []
                for w in waiters { w.resume() }
            }
        }
        guard s.queuedBytes == 0 else { return n }
        if let status = s.trailers {
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue | NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
            submitTrailers(s, status)
            s.trailers = nil
            return n
        }
        if n == 0 {
            s.deferred = true
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        }
        flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue | NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
        s.dataEnding = true
        ending.append(s)
        return n
    }

    // MARK: lifecycle

    /// GOAWAY: no new streams; streaming calls end with UNAVAILABLE, unary calls finish.
    func beginShutdown() {
        guard !closed, !goingAway else { return }
        goingAway = true
        nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue),
                              nghttp2_session_get_last_proc_stream_id(session), UInt32(NGHTTP2_NO_ERROR.rawValue), nil, 0)
        for (id, s) in streams where s.route.map({ $0.kind != .unary }) ?? false {
            terminate(streamID: id, status: GRPCStatus(.unavailable, "server is shutting down"))
        }
        flush()
    }

    func checkIdle(now: ContinuousClock.Instant) {
        guard !closed else { return }
        // Bytes keep coming but no frame completes: a slow-loris, not a client.
        let frameTimeout = min(server.config.idleTimeout, .seconds(10))
        if bytesSinceProgress > 0, now - lastProgress > frameTimeout {
            nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue),
                                  nghttp2_session_get_last_proc_stream_id(session), UInt32(NGHTTP2_PROTOCOL_ERROR.rawValue), nil, 0)
            flush()
            close()
            return
        }
        if streams.isEmpty, now - lastActivity > server.config.idleTimeout {
            nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue),
                                  nghttp2_session_get_last_proc_stream_id(session), UInt32(NGHTTP2_NO_ERROR.rawValue), nil, 0)
            flush()
            close()
        }
    }

    /// Whether the call on `streamID` is still running (its deadline still matters).
    func isLive(streamID: Int32) -> Bool {
        guard let s = streams[streamID] else { return false }
        return !s.finished
    }

    func deadlinePassed(streamID: Int32) {
        guard let s = streams[streamID], !s.finished else { return }
        terminate(streamID: streamID, status: GRPCStatus(.deadlineExceeded, "deadline exceeded"))
    }

    /// Called once per accepted socket, after registration.
    func start() { flush() }
}

/// Header blocks every call sends, built once for the life of the process (never freed).
private struct StaticHeaders: @unchecked Sendable {
    // Safety: written once at initialization, only read afterwards (nghttp2 copies them).
    let nv: UnsafeMutablePointer<nghttp2_nv>
    let count: Int

    init(_ headers: [(String, String)]) {
        nv = .allocate(capacity: headers.count)
        count = headers.count
        for (i, (n, v)) in headers.enumerated() {
            let nb = Array(n.utf8), vb = Array(v.utf8)
            let np = UnsafeMutablePointer<UInt8>.allocate(capacity: nb.count)
            let vp = UnsafeMutablePointer<UInt8>.allocate(capacity: vb.count)
            np.initialize(from: nb, count: nb.count)
            vp.initialize(from: vb, count: vb.count)
            (nv + i).initialize(to: nghttp2_nv(name: np, value: vp, namelen: nb.count, valuelen: vb.count,
                                               flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)))
        }
    }

    static let ok = StaticHeaders([(":status", "200"), ("content-type", "application/grpc"), ("grpc-accept-encoding", "identity")])
    static let okTrailers = StaticHeaders([("grpc-status", "0")])
}

/// Builds an nghttp2_nv array for the duration of `body` (nghttp2 copies names and values).
private func withNV(_ headers: [(String, String)], _ body: (UnsafeMutableBufferPointer<nghttp2_nv>) -> Void) {
    var storage: [UnsafeMutablePointer<UInt8>] = []
    var nv = [nghttp2_nv]()
    nv.reserveCapacity(headers.count)
    for (n, v) in headers {
        let nb = Array(n.utf8), vb = Array(v.utf8)
        let np = UnsafeMutablePointer<UInt8>.allocate(capacity: max(nb.count, 1))
        let vp = UnsafeMutablePointer<UInt8>.allocate(capacity: max(vb.count, 1))
        np.initialize(from: nb, count: nb.count)
        vp.initialize(from: vb, count: vb.count)
        storage.append(np); storage.append(vp)
        nv.append(nghttp2_nv(name: np, value: vp, namelen: nb.count, valuelen: vb.count, flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)))
    }
    nv.withUnsafeMutableBufferPointer { body($0) }
    for p in storage { p.deallocate() }
}
