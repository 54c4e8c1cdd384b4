import ArgumentParser

struct WatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Follow a job until it ends: a live progress bar on a terminal, else one JSON line per event.",
        discussion: "Exits 0 when the job ends FINAL_READY, 3 when it ends FAILED (dead-lettered) or CANCELLED. A lost connection is retried, resuming after the last event seen.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The job id (a UUID).") var id: String
    @Option(name: .customLong("after-seq"), help: "Replay only events after this seq (no snapshot), then follow live.")
    var afterSeq: Int64 = 0

    func run() throws {
        let code = try CallFailure.reporting {
            let watcher = JobWatcher(global: global, client: try global.connect())
            return try watcher.follow(id: id, afterSeq: afterSeq)
        }
        if code != 0 { throw ExitCode(code) }
    }
}
