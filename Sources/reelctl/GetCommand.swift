import ArgumentParser
import ReelCore

struct GetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "get", abstract: "Show a job's current state.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The job id (a UUID).") var id: String

    func run() throws {
        try CallFailure.reporting {
            let client = try global.connect()
            let job = try client.getJob(id: id)
            // A job with a completion webhook: its deliveries, from the job's events (DESIGN §8).
            let hooks = job.webhookURL.isEmpty ? [] : try Self.webhookEvents(of: job, client: client)
            Terminal.out(global.json ? JobFormatting.json(job, webhookEvents: hooks) : JobFormatting.text(job, webhookEvents: hooks))
        }
    }

    private struct Enough: Error {}

    /// The job's webhook delivery events up to its `last_event_seq`, oldest first. A replay
    /// (`after_seq`) ends at a terminal event, and one after it goes on with the events that
    /// follow (deliveries, a RetryJob's run): so replays from where each ended, to the end.
    static func webhookEvents(of job: Job, client: JobServiceClient) throws -> [JobEvent] {
        var out: [JobEvent] = []
        var after: Int64 = 1  // event 1 is the job's creation
        while after < job.lastEventSeq {
            let start = after
            do {
                try client.watchJob(id: job.id, afterSeq: after) { e in
                    guard e.seq > after, e.seq <= job.lastEventSeq else { throw Enough() }
                    after = e.seq
                    if JobFormatting.isWebhookEvent(e) { out.append(e) }
                    if e.seq >= job.lastEventSeq { throw Enough() }  // a job still running goes live: stop
                }
            } catch is Enough {}
            if after == start { break }  // nothing more stored (retention pruned the rest)
        }
        return out
    }
}
