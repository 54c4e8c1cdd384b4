import ReelCore
import ReelBlocking

/// A fixed set of libpq connections, each on a thread of its own (see `BlockingPool`).
public final class PGPool: Sendable {
    private let pool: BlockingPool<PGConnection>
    public var size: Int { pool.size }

    /// Connects every connection up front: a database that can't be reached fails here, at once.
    public init(url: String, size: Int) throws {
        var conns: [PGConnection] = []
        for _ in 0..<size { conns.append(try PGConnection(url: url)) }
        pool = BlockingPool(name: "reel-pg", resources: conns)
    }

    /// Runs `body` on a pooled connection's thread and returns its result.
    public func withConnection<T: Sendable>(_ body: @escaping @Sendable (PGConnectionHandle) throws -> T) async throws -> T {
        do {
            return try await pool.run { conn in
                guard conn.resetIfNeeded() else { throw ReelError(.unavailable, "database connection lost; reconnecting") }
                return try body(PGConnectionHandle(conn))
            }
        } catch is BlockingPoolClosed {
            throw ReelError(.unavailable, "database pool is closed")
        }
    }

    public func close() { pool.close() }
}

/// The connection as seen inside `withConnection`: valid only during the call, on its thread.
public struct PGConnectionHandle {
    let conn: PGConnection
    init(_ conn: PGConnection) { self.conn = conn }

    func query(_ sql: String, _ params: [String?]) throws(ReelError) -> PGRows { try conn.query(sql, params) }
    /// `statements` in one round trip and one implicit transaction (libpq pipeline mode).
    func pipeline(_ statements: [(sql: String, params: [String?])]) throws(ReelError) -> [PGRows] { try conn.pipeline(statements) }
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
