import ReelCore
import Foundation
import Synchronization

/// A fixed set of libpq connections, each on a thread of its own, so blocking calls never
/// run on an event loop or Swift's cooperative pool. Work is queued to whichever is free.
public final class PGPool: Sendable {
    private struct State {
        var queue: [@Sendable (PGConnection) -> Void] = []
        var closed = false
    }
    private let state = Mutex(State())
    private let ready = NSCondition()
    public let size: Int

    /// Connects every connection up front: a database that can't be reached fails here, at once.
    public init(url: String, size: Int) throws {
        self.size = size
        var conns: [PGConnection] = []
        for _ in 0..<size { conns.append(try PGConnection(url: url)) }
        for (i, c) in conns.enumerated() {
            let box = UncheckedSendable(c)
            let t = Thread { [self] in self.serve(box.value) }
            t.name = "reel-pg-\(i)"
            t.start()
        }
    }

    private func serve(_ conn: PGConnection) {
        while true {
            ready.lock()
            var work: (@Sendable (PGConnection) -> Void)? = nil
            while work == nil {
                let (w, closed) = state.withLock { s -> ((@Sendable (PGConnection) -> Void)?, Bool) in
                    s.queue.isEmpty ? (nil, s.closed) : (s.queue.removeFirst(), false)
                }
                if let w { work = w; break }
                if closed { ready.unlock(); return }
                ready.wait()
            }
            ready.unlock()
            work!(conn)
        }
    }

    /// Runs `body` on a pooled connection's thread and returns its result.
    public func withConnection<T: Sendable>(_ body: @escaping @Sendable (PGConnectionHandle) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, any Error>) in
            let enqueued = state.withLock { s -> Bool in
                if s.closed { return false }
                s.queue.append { conn in
                    guard conn.resetIfNeeded() else {
                        cont.resume(throwing: ReelError(.unavailable, "database connection lost; reconnecting"))
                        return
                    }
                    do { cont.resume(returning: try body(PGConnectionHandle(conn))) } catch { cont.resume(throwing: error) }
                }
                return true
            }
            if !enqueued { cont.resume(throwing: ReelError(.unavailable, "database pool is closed")); return }
            ready.lock(); ready.signal(); ready.unlock()
        }
    }

    public func close() {
        state.withLock { $0.closed = true }
        ready.lock(); ready.broadcast(); ready.unlock()
    }
}

/// The connection as seen inside `withConnection`: valid only during the call, on its thread.
public struct PGConnectionHandle {
    let conn: PGConnection
    init(_ conn: PGConnection) { self.conn = conn }

    func query(_ sql: String, _ params: [String?]) throws(ReelError) -> PGRows { try conn.query(sql, params) }
    @discardableResult func exec(_ sql: String) throws(ReelError) -> PGRows { try conn.exec(sql) }

    /// BEGIN … COMMIT around `body`; ROLLBACK on any error.
    func transaction<T>(_ body: () throws -> T) throws -> T {
        try exec("BEGIN")
        do {
            let r = try body()
            try exec("COMMIT")
            return r
        } catch {
            _ = try? exec("ROLLBACK")
            throw error
        }
    }
}

struct UncheckedSendable<T>: @unchecked Sendable {
    // Safety: hands a freshly made connection to the one thread that will own it.
    let value: T
    init(_ value: T) { self.value = value }
}
