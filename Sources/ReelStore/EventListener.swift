internal import CLibPQ
import ReelCore
import Foundation
import Logging
import Synchronization

/// LISTENs for the job events every reeld writes (a trigger NOTIFYs each `job_events` row
/// while more than one reeld is alive: `PostgresJobStore.touchInstance`), so a watcher
/// connected to one process sees a job run by another. A connection and a
/// thread of its own; reconnects by itself.
public final class EventListener: Sendable {
    static let channel = "reel_job_events"
    private let url: String
    private let logger: Logger
    private let onEvent: @Sendable (JobEvent) -> Void
    private let stopped = Atomic<Bool>(false)

    public init(url: String, logger: Logger, onEvent: @escaping @Sendable (JobEvent) -> Void) {
        self.url = url; self.logger = logger; self.onEvent = onEvent
    }

    public func start() {
        let t = Thread { [self] in self.run() }
        t.name = "reel-listen"
        t.start()
    }

    public func stop() { stopped.store(true, ordering: .relaxed) }

    private func run() {
        var backoff: UInt32 = 100_000
        while !stopped.load(ordering: .relaxed) {
            guard let conn = PQconnectdb(url), PQstatus(conn) == CONNECTION_OK else {
                usleep(backoff)
                backoff = min(backoff * 2, 5_000_000)
                continue
            }
            backoff = 100_000
            let res = PQexec(conn, "LISTEN \(Self.channel)")
            let ok = PQresultStatus(res) == PGRES_COMMAND_OK
            PQclear(res)
            if ok { listen(conn) }
            PQfinish(conn)
        }
    }

    /// Waits on the socket and hands every notification over, until the connection breaks.
    private func listen(_ conn: OpaquePointer) {
        var pfd = pollfd(fd: PQsocket(conn), events: Int16(POLLIN), revents: 0)
        while !stopped.load(ordering: .relaxed) {
            let n = poll(&pfd, 1, 500)
            if n < 0 && errno != EINTR { return }
            if PQconsumeInput(conn) == 0 || PQstatus(conn) != CONNECTION_OK {
                logger.warning("event listener lost its connection; reconnecting")
                return
            }
            while let note = PQnotifies(conn) {
                let payload = String(cString: note.pointee.extra)
                PQfreemem(note)
                if let event = Self.decode(payload) { onEvent(event) }
            }
        }
    }

    static func decode(_ payload: String) -> JobEvent? {
        guard let o = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any],
              let id = o["job_id"] as? String, let seq = (o["seq"] as? NSNumber)?.int64Value else { return nil }
        return JobEvent(jobID: id, seq: seq, status: JobStatus(name: o["status"] as? String ?? "") ?? .unspecified,
                        stage: Stage(name: o["stage"] as? String ?? "") ?? .unspecified,
                        progress: (o["progress"] as? NSNumber)?.int32Value ?? 0, message: o["message"] as? String ?? "",
                        atUnixMs: (o["at_unix_ms"] as? NSNumber)?.int64Value ?? 0,
                        deadLettered: (o["dead_lettered"] as? Bool) ?? false)
    }
}
