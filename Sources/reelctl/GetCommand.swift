import ArgumentParser

struct GetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "get", abstract: "Show a job's current state.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The job id (a UUID).") var id: String

    func run() throws {
        try CallFailure.reporting {
            let job = try global.connect().getJob(id: id)
            Terminal.out(global.json ? JobFormatting.json(job) : JobFormatting.text(job))
        }
    }
}
