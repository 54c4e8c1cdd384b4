internal import CReelSys
import ReelWire
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Shared, immutable parts of the server plus its counters; safe from any thread.
final class GRPCServerCore: Sendable {
    let config: GRPCServerConfig
    let router: GRPCRouter
    let logger: Logger
    let inFlight = Atomic<Int>(0)
    let onCallFinished: GRPCServer.CallObserver?

    init(config: GRPCServerConfig, router: GRPCRouter, logger: Logger, onCallFinished: GRPCServer.CallObserver?) {
        self.config = config; self.router = router; self.logger = logger; self.onCallFinished = onCallFinished
    }

    func callStarted() { inFlight.add(1, ordering: .relaxed) }
    func callEnded() { inFlight.subtract(1, ordering: .relaxed) }
    /// Every call's outcome: its path (`-` for an unknown one), final status and duration.
    func noteStatus(_ s: GRPCStatus, path: String, started: ContinuousClock.Instant) {
        onCallFinished?(path, s, .now - started)
    }
}

/// Per-loop bookkeeping: its listener, connections, deadlines and idle checks. Loop-confined.
final class LoopContext: LoopHandler, LoopTicker {
    let loop: EventLoop
    let core: GRPCServerCore
    var listenFD: Int32
    var connections: [Int32: HTTP2Connection] = [:]
    private var deadlines: [(at: ContinuousClock.Instant, conn: HTTP2Connection, stream: Int32)] = []
    private var lastIdleCheck = ContinuousClock.now

    init(loop: EventLoop, core: GRPCServerCore, listenFD: Int32) {
        self.loop = loop; self.core = core; self.listenFD = listenFD
    }

    /// The listening socket is readable: accept everything pending.
    func handle(events: UInt32) {
        while listenFD >= 0 {
            let fd = reel_accept_nonblocking(listenFD)
            if fd < 0 { return }
            var tls: TLSSession? = nil
            if let ctx = core.config.tls {
                guard let t = TLSSession(context: ctx, fd: fd) else { close(fd); continue }
                tls = t
            }
            let conn = HTTP2Connection(fd: fd, loop: loop, server: core, context: self, tls: tls)
            connections[fd] = conn
            loop.register(fd: fd, handler: conn, events: UInt32(REEL_EPOLLIN | REEL_EPOLLRDHUP))
            conn.start()
        }
    }

    func connectionClosed(_ c: HTTP2Connection) {
        connections[c.fd] = nil
        deadlines.removeAll { $0.conn === c }
    }

    func armDeadline(_ at: ContinuousClock.Instant, conn: HTTP2Connection, stream: Int32) {
        deadlines.append((at, conn, stream))
    }

    func tick() {
        let now = ContinuousClock.now
        if !deadlines.isEmpty {
            var due: [(HTTP2Connection, Int32)] = []
            deadlines.removeAll { d in
                if d.at <= now { due.append((d.conn, d.stream)); return true }
                return false
            }
            for (c, s) in due { c.deadlinePassed(streamID: s) }
        }
        if now - lastIdleCheck > .seconds(1) {
            lastIdleCheck = now
            for c in Array(connections.values) { c.checkIdle(now: now) }
        }
    }

    func stopListening() {
        if listenFD >= 0 {
            loop.deregister(fd: listenFD)
            close(listenFD)
            listenFD = -1
        }
    }
}

/// The gRPC server: one event loop per core, each accepting on its own SO_REUSEPORT socket.
public final class GRPCServer: Sendable {
    private let core: GRPCServerCore
    private let loops: [EventLoop]
    private let contexts: [LoopBound<LoopContext>]
    public let port: Int

    /// Sees every finished call: path, status, duration (for metrics and access logs).
    public typealias CallObserver = @Sendable (_ path: String, _ status: GRPCStatus, _ duration: Duration) -> Void

    public init(config: GRPCServerConfig, router: GRPCRouter, logger: Logger,
                onCallFinished: CallObserver? = nil) throws {
        core = GRPCServerCore(config: config, router: router, logger: logger, onCallFinished: onCallFinished)
        var loops: [EventLoop] = []
        var contexts: [LoopBound<LoopContext>] = []
        var port = config.port
        for i in 0..<max(1, config.loops) {
            let fd = reel_listen_tcp(config.host, Int32(port), 4096)
            if fd < 0 {
                for c in contexts { c.withValue { $0.stopListening() } }
                throw GRPCServerError(message: "cannot listen on \(config.host):\(port): \(String(cString: strerror(-fd)))")
            }
            if port == 0 { port = Int(reel_local_port(fd)) }
            let loop = EventLoop(index: i)
            let ctx = LoopContext(loop: loop, core: core, listenFD: fd)
            loops.append(loop)
            contexts.append(LoopBound(ctx, loop: loop))
        }
        self.loops = loops
        self.contexts = contexts
        self.port = port
    }

    public func start() {
        for (i, loop) in loops.enumerated() {
            contexts[i].withValue { ctx in
                ctx.loop.register(fd: ctx.listenFD, handler: ctx, events: UInt32(REEL_EPOLLIN))
                ctx.loop.addTicker(ctx)
            }
            loop.start(name: "reel-h2-\(i)")
        }
    }

    public var inFlightCalls: Int { core.inFlight.load(ordering: .relaxed) }

    /// Stops accepting, sends GOAWAY, ends streaming calls with UNAVAILABLE, waits up to
    /// `grace` for unary calls to finish, then closes every connection and stops the loops.
    public func shutdown(grace: Duration = .seconds(10)) async {
        for c in contexts {
            c.withValue { ctx in
                ctx.stopListening()
                for conn in Array(ctx.connections.values) { conn.beginShutdown() }
            }
        }
        let until = ContinuousClock.now + grace
        while inFlightCalls > 0 && ContinuousClock.now < until {
            try? await Task.sleep(for: .milliseconds(20))
        }
        // Let the final responses reach the sockets.
        try? await Task.sleep(for: .milliseconds(100))
        for c in contexts {
            c.withValue { ctx in for conn in Array(ctx.connections.values) { conn.flush(); conn.close() } }
        }
        try? await Task.sleep(for: .milliseconds(50))
        for l in loops { l.stop() }
    }
}

public struct GRPCServerError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}
