import ArgumentParser
import ReelCore
import ReelWire
#if canImport(Glibc)
import Glibc
#endif

/// Follows one job's WatchJob stream to its end: a live progress line on a terminal,
/// else one JSON line per event. Reconnects after a lost connection, resuming after the
/// last seen `seq`, so nothing is missed or shown twice.
struct JobWatcher {
    let client: JobServiceClient
    /// Draw the progress line (stdout is a terminal and --json was not given).
    let live: Bool

    static let maxReconnects = 10

    init(global: GlobalOptions, client: JobServiceClient) {
        self.client = client
        self.live = Terminal.stdoutIsTerminal && !global.json
    }

    /// Returns the exit code: 0 for FINAL_READY, 3 for FAILED/CANCELLED.
    func follow(id: String, afterSeq: Int64) throws -> Int32 {
        var lastSeq = afterSeq
        var lastEvent: JobEvent?
        var line = ProgressLine()
        var reconnects = 0

        while true {
            do {
                // After a failure the client opens a new connection for this call.
                try client.watchJob(id: id, afterSeq: lastSeq) { event in
                    if lastEvent != nil && event.seq <= lastSeq { return }  // already shown
                    reconnects = 0
                    lastSeq = max(lastSeq, event.seq)
                    lastEvent = event
                    if live { line.draw(event) } else { Terminal.out(JobFormatting.json(event)) }
                }
                break
            } catch let status as GRPCStatus where status.code == .unavailable && lastEvent != nil
                && reconnects < Self.maxReconnects {
                // The server went away mid-watch (restart, deploy): come back after the last seq.
                reconnects += 1
                if live {
                    line.redraw(note: "reconnecting: \(status.message)")
                } else {
                    Terminal.err("reelctl: \(status.message); reconnecting (after seq \(lastSeq))")
                }
                usleep(UInt32(min(4000, 250 << min(reconnects - 1, 4))) * 1000)
            } catch {
                if live { line.finish() }  // the error line goes below the progress line
                throw error
            }
        }

        // A webhook delivery's event (after the end, --after-seq past it) keeps the status, not the outcome's message.
        var final = lastEvent.flatMap { $0.endsWatch && !JobFormatting.isWebhookEvent($0) ? $0 : nil }.map { ($0.status, $0.deadLettered, $0.message) }
        var job: Job?
        if final == nil || (live && final?.0 == .finalReady) {
            // No terminal event seen (e.g. --after-seq at or past the end): ask for the job itself.
            job = try? client.getJob(id: id)
            if final == nil, let job, job.isFinished { final = (job.status, job.deadLettered, job.message) }
        }
        if live { line.finish() }
        guard let (status, deadLettered, message) = final else {
            Terminal.err("reelctl: the watch stream of job \(id) ended before the job finished")
            return 1
        }
        if live {
            if status == .finalReady, let url = job?.result?.videoURL ?? job?.artifacts.finalVideoURL, !url.isEmpty {
                Terminal.out("video: \(url)")
            }
            // The last line names the outcome in the API's spelling: FINAL_READY, FAILED, CANCELLED.
            var summary = "job \(id) \(status.name.uppercased())"
            if deadLettered { summary += " (dead-lettered)" }
            if line.last != nil { summary += " after \(line.elapsed)" }
            // "cancelled: wrong scene" → "CANCELLED …: wrong scene"; a bare "cancelled" adds nothing.
            var reason = message
            if reason.lowercased().hasPrefix(status.name + ": ") { reason.removeFirst(status.name.count + 2) }
            if status != .finalReady, !reason.isEmpty, reason.lowercased() != status.name { summary += ": \(reason)" }
            Terminal.out(summary)
        }
        return status == .finalReady ? 0 : 3
    }
}
