import Foundation
import Synchronization

/// Threads of its own for blocking C calls (libpq, libcurl), so they never run on an event
/// loop or Swift's cooperative pool. Each thread owns one `Resource` (a connection, a curl
/// handle) for its whole life; work is queued to whichever thread is free.
public final class BlockingPool<Resource>: Sendable {
    public typealias Work = @Sendable (Resource) -> Void

    private struct State {
        var queue: [Work] = []
        var head = 0
        var closed = false
    }
    private let state = Mutex(State())
    private let ready = NSCondition()
    public let size: Int

    /// Starts one thread per resource; `name` prefixes the thread names.
    public init(name: String, resources: [Resource]) {
        size = resources.count
        for (i, r) in resources.enumerated() {
            let box = UnsafeTransfer(r)
            let t = Thread { [self] in self.serve(box.value) }
            t.name = "\(name)-\(i)"
            t.start()
        }
    }

    private func next() -> (Work?, Bool) {
        state.withLock { s in
            if s.head < s.queue.count {
                let w = s.queue[s.head]
                s.head += 1
                if s.head > 1024 && s.head * 2 > s.queue.count {
                    s.queue.removeFirst(s.head)
                    s.head = 0
                }
                return (w, false)
            }
            return (nil, s.closed)
        }
    }

    private func serve(_ resource: Resource) {
        while true {
            ready.lock()
            var work: Work?
            while true {
                let (w, closed) = next()
                if let w { work = w; break }
                if closed { ready.unlock(); return }
                ready.wait()
            }
            ready.unlock()
            work!(resource)
        }
    }

    /// Runs `body` on a pool thread with its resource and returns the result.
    public func run<T: Sendable>(_ body: @escaping @Sendable (Resource) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, any Error>) in
            let accepted = state.withLock { s -> Bool in
                if s.closed { return false }
                s.queue.append { r in
                    do { cont.resume(returning: try body(r)) } catch { cont.resume(throwing: error) }
                }
                return true
            }
            if !accepted { cont.resume(throwing: BlockingPoolClosed()); return }
            ready.lock(); ready.signal(); ready.unlock()
        }
    }

    /// Lets queued work finish, then ends the threads.
    public func close() {
        state.withLock { $0.closed = true }
        ready.lock(); ready.broadcast(); ready.unlock()
    }
}

public struct BlockingPoolClosed: Error, CustomStringConvertible {
    public var description: String { "the pool is closed" }
}

/// Hands a non-Sendable value to the one thread that will own it from then on.
struct UnsafeTransfer<T>: @unchecked Sendable {
    // Safety: the sender never touches `value` again after the hand-over.
    let value: T
    init(_ value: T) { self.value = value }
}
