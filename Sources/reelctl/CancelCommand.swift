import ArgumentParser

struct CancelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel",
        abstract: "Cancel a job.",
        discussion: "A queued job is cancelled at once; a running one stops at its next checkpoint. A finished job: FAILED_PRECONDITION.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The job id (a UUID).") var id: String
    @Option(help: "Why, recorded with the job.") var reason = ""

    func run() throws {
        try CallFailure.reporting {
            let job = try global.connect().cancelJob(id: id, reason: reason)
            Terminal.out(global.json ? JobFormatting.json(job) : JobFormatting.text(job))
        }
    }
}
