internal import CLibPQ
import ReelCore
import Foundation
import Logging
import Synchronization

/// LISTENs for the job events every reeld writes (a trigger NOTIFYs each statement's
/// `job_events` rows while more than one reeld is alive: `PostgresJobStore.touchInstance`), so
/// a watcher connected to one process sees a job run by another. A connection and a
/// thread of its own; reconnects by itself.
public final class EventListener: Sendable {
    static let channel = "reel_job_events"
    private let url: String
    private let logger: Logger
    private let onPayload: @Sendable (String) -> Void
    private let stopped = Atomic<Bool>(false)

    /// `onEvent` gets each event of each notification, in the order they were sent.
    public convenience init(url: String, logger: Logger, onEvent: @escaping @Sendable (JobEvent) -> Void) {
        self.init(url: url, logger: logger, onPayload: { payload in
            for event in Self.decode(payload) { onEvent(event) }
        })
    }

    /// `onPayload` gets each notification's payload as sent (tests count them).
    init(url: String, logger: Logger, onPayload: @escaping @Sendable (String) -> Void) {
        self.url = url; self.logger = logger; self.onPayload = onPayload
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
                onPayload(payload)
            }
        }
    }

    /// One event in a notification: its columns by name (`reel_notify_job_events()`, migration 11).
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

        var event: JobEvent {
            JobEvent(jobID: jobID, seq: seq, status: JobStatus(name: status ?? "") ?? .unspecified,
                     stage: Stage(name: stage ?? "") ?? .unspecified, progress: progress ?? 0,
                     message: message ?? "", atUnixMs: atUnixMs ?? 0, deadLettered: deadLettered ?? false)
        }
    }

    /// A notification's events: a JSON array of them (migration 11: one notification per
    /// statement), or one event as an object (the per-row trigger of migrations 4 and 7).
    /// Anything else: none.
    static func decode(_ payload: String) -> [JobEvent] {
        let data = Data(payload.utf8)
        let decoder = JSONDecoder()
        if payload.first == "[" {
            return ((try? decoder.decode([Payload].self, from: data)) ?? []).map(\.event)
        }
        return (try? decoder.decode(Payload.self, from: data)).map { [$0.event] } ?? []
    }
}
