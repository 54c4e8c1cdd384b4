internal import CReelSys
import Synchronization
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One epoll loop on a thread of its own. Objects registered with it (listeners, connections)
/// are confined to that thread; other threads reach them only through `execute`.
package final class EventLoop: Sendable {
    private let epfd: Int32
    private let wakeFD: Int32
    private let mailbox = Mutex<[LoopWork]>([])
    private let stopped = Atomic<Bool>(false)
    // Confined to the loop thread: written and read only inside `run` and `execute`d closures.
    nonisolated(unsafe) private var handlers: [Int32: any LoopHandler] = [:]
    nonisolated(unsafe) private var tickers: [any LoopTicker] = []
    nonisolated(unsafe) private var dirty: [any LoopFlushable] = []
    nonisolated(unsafe) private(set) var threadID: pthread_t? = nil
    let index: Int

    private static let wakeToken: UInt64 = UInt64.max

    package init(index: Int) {
        self.index = index
        epfd = reel_epoll_create()
        wakeFD = reel_eventfd()
        _ = reel_epoll_ctl(epfd, Int32(REEL_EPOLL_CTL_ADD), wakeFD, UInt32(REEL_EPOLLIN), Self.wakeToken)
    }

    deinit {
        close(epfd)
        close(wakeFD)
    }

    var inLoop: Bool {
        guard let t = threadID else { return false }
        return pthread_equal(t, pthread_self()) != 0
    }

    /// Runs `f` on the loop thread, soon.
    package func execute(_ f: @escaping @Sendable () -> Void) {
        post(.run(f))
    }

    /// Hands `bytes` for `streamID` to `target` on the loop thread, in order with everything
    /// else posted to the loop — without a closure per message (a 10,000-watcher fan-out
    /// posts 10,000 of these per event).
    package func send(to target: any LoopSendTarget, streamID: Int32, bytes: [UInt8]) {
        post(.send(target, streamID, bytes))
    }

    private func post(_ w: LoopWork) {
        let wasEmpty = mailbox.withLock { box in
            box.append(w)
            return box.count == 1
        }
        if wasEmpty { _ = reel_eventfd_signal(wakeFD) }
    }

    /// Loop thread only.
    package func register(fd: Int32, handler: any LoopHandler, events: UInt32) {
        handlers[fd] = handler
        _ = reel_epoll_ctl(epfd, Int32(REEL_EPOLL_CTL_ADD), fd, events, UInt64(UInt32(bitPattern: fd)))
    }

    package func modify(fd: Int32, events: UInt32) {
        _ = reel_epoll_ctl(epfd, Int32(REEL_EPOLL_CTL_MOD), fd, events, UInt64(UInt32(bitPattern: fd)))
    }

    package func deregister(fd: Int32) {
        _ = reel_epoll_ctl(epfd, Int32(REEL_EPOLL_CTL_DEL), fd, 0, 0)
        handlers[fd] = nil
    }

    package func addTicker(_ t: any LoopTicker) { tickers.append(t) }

    /// Loop thread only: `c.flushDeferred()` runs once at the end of this loop turn, after every
    /// ready socket and posted closure, so that the responses of many calls leave in one write.
    package func flushAtEndOfTurn(_ c: any LoopFlushable) { dirty.append(c) }

    private func flushDirty() {
        while !dirty.isEmpty {
            let d = dirty
            dirty.removeAll(keepingCapacity: true)
            for c in d { c.flushDeferred() }
        }
    }

    var handlerCount: Int { handlers.count }

    package func stop() {
        stopped.store(true, ordering: .releasing)
        _ = reel_eventfd_signal(wakeFD)
    }

    package func start(name: String) {
        let thread = Thread { [self] in self.run() }
        thread.name = name
        thread.start()
    }

    private func run() {
        threadID = pthread_self()
        var datas = [UInt64](repeating: 0, count: 256)
        var events = [UInt32](repeating: 0, count: 256)
        while !stopped.load(ordering: .acquiring) {
            let n = reel_epoll_wait(epfd, &datas, &events, 256, 100)
            if n > 0 {
                for i in 0..<Int(n) {
                    if datas[i] == Self.wakeToken {
                        reel_eventfd_drain(wakeFD)
                        continue
                    }
                    let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: datas[i]))
                    handlers[fd]?.handle(events: events[i])
                }
            }
            let work = mailbox.withLock { box in
                let w = box
                box.removeAll(keepingCapacity: true)
                return w
            }
            for w in work { w.perform() }
            for t in tickers { t.tick() }
            flushDirty()
        }
        // Final drain so that no posted closure (e.g. a continuation) is lost.
        let work = mailbox.withLock { box in let w = box; box.removeAll(); return w }
        for w in work { w.perform() }
        flushDirty()
    }
}

/// What the loop's mailbox holds: a closure, or a message for a stream.
enum LoopWork: @unchecked Sendable {
    // Safety: a `.send` target is only touched by `perform`, on its loop's thread.
    case run(@Sendable () -> Void)
    case send(any LoopSendTarget, Int32, [UInt8])

    func perform() {
        switch self {
        case .run(let f): f()
        case .send(let target, let streamID, let bytes): target.enqueue(streamID: streamID, bytes)
        }
    }
}

/// Takes a stream's message on the loop thread (the server connection).
package protocol LoopSendTarget: AnyObject {
    func enqueue(streamID: Int32, _ bytes: [UInt8])
}

package protocol LoopHandler: AnyObject {
    func handle(events: UInt32)
}

package protocol LoopTicker: AnyObject {
    func tick()
}

package protocol LoopFlushable: AnyObject {
    func flushDeferred()
}

/// A loop-confined object carried across threads: dereferenced only inside `loop.execute`.
package struct LoopBound<T: AnyObject>: @unchecked Sendable {
    // Safety: `value` is only touched on `loop`'s thread (see `withValue`).
    private let value: T
    package let loop: EventLoop

    package init(_ value: T, loop: EventLoop) { self.value = value; self.loop = loop }

    package func withValue(_ f: @escaping @Sendable (T) -> Void) {
        let v = UncheckedBox(value)
        loop.execute { f(v.value) }
    }

    /// `bytes` for `streamID`, handed to the value on its loop without a closure.
    package func send(streamID: Int32, _ bytes: [UInt8]) where T: LoopSendTarget {
        loop.send(to: value, streamID: streamID, bytes: bytes)
    }
}

package struct UncheckedBox<T>: @unchecked Sendable {
    // Safety: used only to hop a loop-confined value onto its own loop thread.
    package let value: T
    package init(_ value: T) { self.value = value }
}
