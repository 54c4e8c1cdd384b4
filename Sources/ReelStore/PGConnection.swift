internal import CLibPQ
import ReelCore
#if canImport(Glibc)
import Glibc
#endif

/// One libpq connection. Blocking; owned by one pool thread and never shared.
final class PGConnection {
    private var conn: OpaquePointer?
    private var prepared: [String: String] = [:]
    let url: String

    init(url: String) throws(ReelError) {
        self.url = url
        conn = PQconnectdb(url)
        guard PQstatus(conn) == CONNECTION_OK else {
            let msg = conn.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            PQfinish(conn)
            conn = nil
            throw ReelError(.unavailable, "cannot connect to PostgreSQL: \(msg.trimmingTrailingNewlines())")
        }
        _ = try? exec("SET client_min_messages = warning")
    }

    deinit { PQfinish(conn) }

    var isHealthy: Bool { PQstatus(conn) == CONNECTION_OK }

    /// Re-establishes a broken connection; prepared statements are lost with it.
    func resetIfNeeded() -> Bool {
        if isHealthy { return true }
        PQreset(conn)
        prepared.removeAll()
        return isHealthy
    }

    /// Runs SQL without parameters (may hold several statements).
    @discardableResult
    func exec(_ sql: String) throws(ReelError) -> PGRows {
        let res = PQexec(conn, sql)
        return try consume(res, sql: sql)
    }

    /// Runs one statement with text parameters, as a prepared statement cached per connection.
    func query(_ sql: String, _ params: [String?]) throws(ReelError) -> PGRows {
        let name: String
        if let n = prepared[sql] {
            name = n
        } else {
            name = "s\(prepared.count)"
            let res = PQprepare(conn, name, sql, Int32(params.count), nil)
            _ = try consume(res, sql: sql)
            prepared[sql] = name
        }
        let cstrs: [UnsafeMutablePointer<CChar>?] = params.map { $0.map { strdup($0) } ?? nil }
        defer { for p in cstrs { free(p) } }
        let res = cstrs.withUnsafeBufferPointer { buf in
            buf.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: max(buf.count, 1)) { p in
                PQexecPrepared(conn, name, Int32(params.count), params.isEmpty ? nil : p, nil, nil, 0)
            }
        }
        do {
            return try consume(res, sql: sql)
        } catch {
            // A failed prepare inside an aborted transaction must not leave a stale name.
            if error.code == .unavailable { prepared.removeAll() }
            throw error
        }
    }

    private func consume(_ res: OpaquePointer?, sql: String) throws(ReelError) -> PGRows {
        defer { PQclear(res) }
        let st = PQresultStatus(res)
        if st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK {
            return PGRows(res)
        }
        let state = PQresultErrorField(res, Int32(UInt8(ascii: "C"))).map { String(cString: $0) } ?? ""
        let msg = (PQresultErrorMessage(res).map { String(cString: $0) } ?? "").trimmingTrailingNewlines()
        if !isHealthy || state.hasPrefix("08") || state == "57P01" {
            throw ReelError(.unavailable, "database unavailable: \(msg.isEmpty ? String(cString: PQerrorMessage(conn)) : msg)")
        }
        if state == "40001" || state == "40P01" {
            throw ReelError(.unavailable, "database conflict, retry: \(msg)")
        }
        throw ReelError(.internal, "database error \(state): \(msg)")
    }
}

/// A result's rows as text (nil = SQL NULL).
struct PGRows {
    var rows: [[String?]] = []

    init(_ res: OpaquePointer?) {
        let n = PQntuples(res), m = PQnfields(res)
        rows.reserveCapacity(Int(n))
        for i in 0..<n {
            var row: [String?] = []
            row.reserveCapacity(Int(m))
            for j in 0..<m {
                if PQgetisnull(res, i, j) != 0 {
                    row.append(nil)
                } else {
                    row.append(String(cString: PQgetvalue(res, i, j)))
                }
            }
            rows.append(row)
        }
    }

    var first: [String?]? { rows.first }
    var isEmpty: Bool { rows.isEmpty }
}

extension String {
    func trimmingTrailingNewlines() -> String {
        var s = self
        while s.last == "\n" || s.last == " " { s.removeLast() }
        return s
    }
}
