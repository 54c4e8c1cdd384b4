internal import CReelSys
internal import ReelEventLoop
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
    /// Open connections per loop.
    private let connections: Mutex<[Int]>

    init(config: GRPCServerConfig, router: GRPCRouter, logger: Logger, onCallFinished: GRPCServer.CallObserver?) {
        self.config = config; self.router = router; self.logger = logger; self.onCallFinished = onCallFinished
        connections = Mutex([Int](repeating: 0, count: max(1, config.loops)))
    }

    /// The loop a connection accepted on `loop` should live on: the one with the fewest
    /// connections (the accepting one when it is among them). The kernel spreads connections
    /// over the loops' listening sockets by a hash of their addresses, which with a few
    /// connections often leaves one loop — one core — with most of them.
    func placeConnection(acceptedOn loop: Int) -> Int {
        connections.withLock { c in
            var best = loop
            for i in c.indices where c[i] < c[best] { best = i }
            c[best] += 1
            return best
        }
    }

    func connectionClosed(loop: Int) {
        connections.withLock { $0[loop] -= 1 }
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
    let index: Int
    /// Every loop's context, this one's included (set before the loops start).
    var peers: [LoopBound<LoopContext>] = []
    var listenFD: Int32
    var connections: [Int32: HTTP2Connection] = [:]
    /// Calls' deadlines, soonest first. A call that ends before its deadline leaves its entry
    /// behind (removing it would cost a search per call); `armDeadline` sweeps such entries out
    /// once they outnumber the live ones.
    private var deadlines = DeadlineHeap()
    private var lastIdleCheck = ContinuousClock.now

    init(loop: EventLoop, core: GRPCServerCore, listenFD: Int32, index: Int) {
        self.loop = loop; self.core = core; self.listenFD = listenFD; self.index = index
    }

    /// The listening socket is readable: accept everything pending, each connection for the
    /// loop that has the fewest.
    func handle(events: UInt32) {
        while listenFD >= 0 {
            let fd = reel_accept_nonblocking(listenFD)
            if fd < 0 { return }
            let target = core.placeConnection(acceptedOn: index)
            if target == index || target >= peers.count {
                adopt(fd)
            } else {
                peers[target].withValue { $0.adopt(fd) }
            }
        }
    }

    /// Serves the accepted socket `fd` on this loop.
    func adopt(_ fd: Int32) {
        var tls: TLSSession? = nil
        if let ctx = core.config.tls {
            guard let t = TLSSession(context: ctx, fd: fd) else {
                close(fd)
                core.connectionClosed(loop: index)
                return
            }
            tls = t
        }
        let conn = HTTP2Connection(fd: fd, loop: loop, server: core, context: self, tls: tls)
        connections[fd] = conn
        loop.register(fd: fd, handler: conn, events: UInt32(REEL_EPOLLIN | REEL_EPOLLRDHUP))
        conn.start()
    }

    func connectionClosed(_ c: HTTP2Connection) {
        connections[c.fd] = nil
        core.connectionClosed(loop: index)
    }

    func armDeadline(_ at: ContinuousClock.Instant, conn: HTTP2Connection, stream: Int32) {
        if deadlines.count >= sweepAt {
            deadlines.removeAll { d in d.conn.map { !$0.isLive(streamID: d.stream) } ?? true }
            sweepAt = max(1024, deadlines.count * 2)
        }
        deadlines.push(Deadline(at: at, conn: conn, stream: stream))
    }
    private var sweepAt = 1024

    func tick() {
        let now = ContinuousClock.now
        while let d = deadlines.first, d.at <= now {
            deadlines.popFirst()
            d.conn?.deadlinePassed(streamID: d.stream)
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
            let ctx = LoopContext(loop: loop, core: core, listenFD: fd, index: i)
            loops.append(loop)
            contexts.append(LoopBound(ctx, loop: loop))
        }
        for c in contexts {
            let peers = contexts
            c.withValue { $0.peers = peers }
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

struct Deadline {
    let at: ContinuousClock.Instant
    weak var conn: HTTP2Connection?
    let stream: Int32
}

/// A binary min-heap of deadlines by time.
struct DeadlineHeap {
    private var items: [Deadline] = []

    var count: Int { items.count }
    var first: Deadline? { items.first }

    mutating func push(_ d: Deadline) {
        items.append(d)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[i].at < items[parent].at else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func popFirst() {
        guard !items.isEmpty else { return }
        items.swapAt(0, items.count - 1)
        items.removeLast()
        siftDown(0)
    }

    /// Drops every entry `shouldRemove` says, then restores the heap order.
    mutating func removeAll(where shouldRemove: (Deadline) -> Bool) {
        items.removeAll(where: shouldRemove)
        for i in stride(from: items.count / 2 - 1, through: 0, by: -1) { siftDown(i) }
    }

    private mutating func siftDown(_ start: Int) {
        var i = start
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count && items[l].at < items[m].at { m = l }
            if r < items.count && items[r].at < items[m].at { m = r }
            if m == i { return }
            items.swapAt(i, m)
            i = m
        }
    }
}
