internal import ReelEventLoop
import Synchronization

extension GRPCClient {
    /// A few event-loop threads that many client connections share (round robin), so that
    /// N connections need not cost N threads. A client created without a group gets a
    /// one-thread group of its own.
    public final class LoopGroup: Sendable {
        let loops: [EventLoop]
        /// One per loop, used only on that loop's thread (connections reach it from there).
        private let registries: [UncheckedBox<ConnectionRegistry>]
        private let next = Atomic<Int>(0)
        private let stopped = Atomic<Bool>(false)

        /// Starts `threads` loop threads (at least one).
        public convenience init(threads: Int = 1) {
            self.init(threads: threads, namePrefix: "reel-grpc-client")
        }

        init(threads: Int, namePrefix: String) {
            var loops: [EventLoop] = []
            var registries: [UncheckedBox<ConnectionRegistry>] = []
            for i in 0..<max(1, threads) {
                let loop = EventLoop(index: i)
                let registry = ConnectionRegistry()
                loops.append(loop)
                let box = UncheckedBox(registry)
                registries.append(box)
                // The mailbox runs this first thing on the loop thread: tickers are loop-confined.
                loop.execute { loop.addTicker(box.value) }
                loop.start(name: "\(namePrefix)-\(i)")
            }
            self.loops = loops
            self.registries = registries
        }

        public var threadCount: Int { loops.count }

        /// True once `shutdown()` was called: the loops run no new work.
        public var isShutDown: Bool { stopped.load(ordering: .acquiring) }

        /// Stops the loop threads once their queued work has run. Connections still open on
        /// them are abandoned: close the clients first.
        public func shutdown() {
            guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
            for loop in loops { loop.stop() }
        }

        deinit { shutdown() }

        /// A loop for a new connection and its registry (to be used on that loop's thread only).
        func nextLoop() -> (EventLoop, ConnectionRegistry) {
            let i = next.wrappingAdd(1, ordering: .relaxed).oldValue % loops.count
            return (loops[i], registries[i].value)
        }
    }

    /// Per loop: the connections living on it. After each loop turn (events, then mailbox) it
    /// lets the connections that asked for it submit queued calls and flush, so the frames of
    /// many calls leave in one write; and every few milliseconds it ends calls past their deadline and lifts refusal holds.
    final class ConnectionRegistry: LoopTicker {
        private var connections: [ObjectIdentifier: Connection] = [:]
        private var needService: [Connection] = []
        private var lastSweep = ContinuousClock.now

        func add(_ connection: Connection) { connections[ObjectIdentifier(connection)] = connection }
        func remove(_ connection: Connection) { connections[ObjectIdentifier(connection)] = nil }

        /// `connection` has queued calls or output: service it at the end of this loop turn.
        func scheduleService(_ connection: Connection) { needService.append(connection) }

        func tick() {
            while !needService.isEmpty {
                let batch = needService
                needService.removeAll(keepingCapacity: true)
                for connection in batch { connection.service() }
            }
            let now = ContinuousClock.now
            if now - lastSweep >= .milliseconds(5) {
                lastSweep = now
                for connection in connections.values where connection.needsTimer {
                    connection.timerTick(now: now)
                }
            }
        }
    }
}
