internal import CLibPQ
import ReelCore
#if canImport(Glibc)
import Glibc
#endif

/// One libpq connection. Blocking; owned by one pool thread and never shared.
final class PGConnection {
    private var conn: OpaquePointer?
    private var prepared: [String: String] = [:]
    /// Names of prepared statements are never reused on a connection: the cache may be dropped
    /// (after an error that may have lost it) while the server still holds the old names.
    private var preparedCount = 0
    private func nextStatementName() -> String {
        preparedCount += 1
        return "s\(preparedCount)"
    }
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
        configureSession()
    }

    /// Session settings, set again after every reset. No JIT: reeld's statements are short OLTP
    /// ones, but the planner's row estimates for `unnest` of parameter arrays put the batch
    /// statements (createJobs, the claim) over `jit_above_cost`, and compiling them took about
    /// 2 s of CPU per statement — CreateJobs of 60 jobs took 2.2 s, 7 ms without.
    private func configureSession() {
        _ = try? exec("SET client_min_messages = warning; SET jit = off")
    }

    deinit { PQfinish(conn) }

    /// Set when a pipeline was left with answers unread: the connection is reset before reuse.
    private var needsReset = false

    var isHealthy: Bool { !needsReset && PQstatus(conn) == CONNECTION_OK }

    /// Re-establishes a broken connection; prepared statements are lost with it.
    func resetIfNeeded() -> Bool {
        if isHealthy { return true }
        needsReset = false
        PQreset(conn)
        prepared.removeAll()
        if PQstatus(conn) == CONNECTION_OK { configureSession() }
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
            name = nextStatementName()
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
            // The statements may be gone with the session: prepare afresh, under new names.
            if error.code == .unavailable { prepared.removeAll() }
            throw error
        }
    }

    /// Runs `statements` in libpq pipeline mode as one implicit transaction: every statement is
    /// sent before any answer is read, so a batch costs one round trip instead of one per
    /// statement, and the Sync at the end commits them all at once (an error in any of them
    /// rolls them all back and is thrown). Answers come back in order.
    func pipeline(_ statements: [(sql: String, params: [String?])]) throws(ReelError) -> [PGRows] {
        // Prepare what this connection hasn't seen yet (once per statement per connection).
        for st in statements where prepared[st.sql] == nil {
            let name = nextStatementName()
            _ = try consume(PQprepare(conn, name, st.sql, Int32(st.params.count), nil), sql: st.sql)
            prepared[st.sql] = name
        }
        guard PQsetnonblocking(conn, 1) == 0, PQenterPipelineMode(conn) == 1 else {
            throw ReelError(.unavailable, "database unavailable: \(String(cString: PQerrorMessage(conn)).trimmingTrailingNewlines())")
        }
        defer {
            if PQexitPipelineMode(conn) != 1 { needsReset = true }
            _ = PQsetnonblocking(conn, 0)
        }
        for st in statements {
            let cstrs: [UnsafeMutablePointer<CChar>?] = st.params.map { $0.map { strdup($0) } ?? nil }
            defer { for p in cstrs { free(p) } }
            let name = prepared[st.sql]!
            let sent = cstrs.withUnsafeBufferPointer { buf in
                buf.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: max(buf.count, 1)) { p in
                    PQsendQueryPrepared(conn, name, Int32(st.params.count), st.params.isEmpty ? nil : p, nil, nil, 0)
                }
            }
            guard sent == 1 else { throw lostDuringPipeline() }
            // Keep the socket moving while sending, so a large batch never fills both directions.
            try pump(wantRead: false)
        }
        guard PQpipelineSync(conn) == 1 else { throw lostDuringPipeline() }
        var out: [PGRows] = []
        out.reserveCapacity(statements.count)
        var firstError: ReelError?
        for st in statements {
            // Each statement answers with one result, then NULL.
            let res = try nextResult()
            if PQresultStatus(res) == PGRES_PIPELINE_ABORTED {
                PQclear(res)
                out.append(PGRows(nil))
            } else {
                do { out.append(try consume(res, sql: st.sql)) } catch {
                    if firstError == nil { firstError = error }
                    out.append(PGRows(nil))
                }
            }
            if let extra = try nextResultOrNil() { PQclear(extra) }
        }
        let sync = try nextResult()
        let synced = PQresultStatus(sync) == PGRES_PIPELINE_SYNC
        PQclear(sync)
        if let e = firstError { throw e }
        guard synced else { throw lostDuringPipeline() }
        return out
    }

    private func lostDuringPipeline() -> ReelError {
        needsReset = true
        return ReelError(.unavailable, "database unavailable: \(String(cString: PQerrorMessage(conn)).trimmingTrailingNewlines())")
    }

    /// Flushes what libpq has buffered and, when asked or when the server's answers are in the
    /// way, waits for and reads input: never blocks on a write the server can't take.
    private func pump(wantRead: Bool) throws(ReelError) {
        while true {
            let f = PQflush(conn)
            if f < 0 { throw lostDuringPipeline() }
            if f == 0 && !wantRead { return }
            var pfd = pollfd(fd: PQsocket(conn), events: Int16(POLLIN) | (f == 1 ? Int16(POLLOUT) : 0), revents: 0)
            if poll(&pfd, 1, -1) < 0 && errno != EINTR { throw lostDuringPipeline() }
            if pfd.revents & (Int16(POLLIN) | Int16(POLLERR) | Int16(POLLHUP)) != 0 {
                guard PQconsumeInput(conn) == 1 else { throw lostDuringPipeline() }
                if wantRead { return }
            }
        }
    }

    private func nextResultOrNil() throws(ReelError) -> OpaquePointer? {
        while PQisBusy(conn) == 1 { try pump(wantRead: true) }
        return PQgetResult(conn)
    }

    private func nextResult() throws(ReelError) -> OpaquePointer? {
        guard let r = try nextResultOrNil() else { throw lostDuringPipeline() }
        return r
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
        if state == "RLB01" {
            // A tenant's budget refused (the settlement trigger, on RetryJob): its message names it.
            let primary = PQresultErrorField(res, Int32(UInt8(ascii: "M"))).map { String(cString: $0) } ?? msg
            throw ReelError(.resourceExhausted, primary)
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
        guard let res else { return }
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
