import ArgumentParser
import ReelCore

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List jobs, newest first.")

    @OptionGroup var global: GlobalOptions
    @Option(name: .customLong("user-id"), help: "Only this user's jobs.") var userID = ""
    @Option(name: .customLong("scene-id"), help: "Only this scene's jobs.") var sceneID = ""
    @Option(help: "Only jobs with this status.") var status: Choice<JobStatus>?
    @Flag(name: .customLong("dead-lettered"), help: "Only dead-lettered jobs.") var deadLettered = false
    @Option(name: .customLong("page-size"), help: "Jobs per page (server default 50, max 500).") var pageSize: Int32 = 0
    @Option(name: .customLong("page-token"), help: "The next_page_token of a previous page.") var pageToken = ""

    func run() throws {
        try CallFailure.reporting {
            let page = try global.connect().listJobs(ListJobsInput(
                userID: userID, sceneID: sceneID, status: status?.value ?? .unspecified,
                deadLetteredOnly: deadLettered, pageSize: pageSize, pageToken: pageToken))
            Terminal.out(global.json ? JobFormatting.json(page) : JobFormatting.text(page))
        }
    }
}
