import ArgumentParser

struct RetryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retry",
        abstract: "Put a FAILED (or dead-lettered) job back in the queue.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The job id (a UUID).") var id: String

    func run() throws {
        try CallFailure.reporting {
            let job = try global.connect().retryJob(id: id)
            Terminal.out(global.json ? JobFormatting.json(job) : JobFormatting.text(job))
        }
    }
}
