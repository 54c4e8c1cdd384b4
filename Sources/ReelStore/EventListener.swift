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

    /// `reel_notify_job_event()`'s payload (migration 4): the event's columns by name.
    struct Payload: Decodable {
        var jobID: String
        var seq: Int64
        var status: String?
        var stage: String?
        var progress: Int32?
        var message: String?
        var atUnixMs: Int64?
        var deadLettered: Bool?

        enum CodingKeys: String, CodingKey {
            case jobID = "job_id", seq, status, stage, progress, message, atUnixMs = "at_unix_ms", deadLettered = "dead_lettered"
        }
    }

    static func decode(_ payload: String) -> JobEvent? {
        guard let p = try? JSONDecoder().decode(Payload.self, from: Data(payload.utf8)) else { return nil }
        return JobEvent(jobID: p.jobID, seq: p.seq, status: JobStatus(name: p.status ?? "") ?? .unspecified,
                        stage: Stage(name: p.stage ?? "") ?? .unspecified, progress: p.progress ?? 0,
                        message: p.message ?? "", atUnixMs: p.atUnixMs ?? 0, deadLettered: p.deadLettered ?? false)
    }
}
