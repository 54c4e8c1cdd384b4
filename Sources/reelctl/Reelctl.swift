import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

@main
struct Reelctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reelctl",
        abstract: "Command-line client for the Reel job service (gRPC over h2c).",
        discussion: """
        Talks to reeld at --address (or $REEL_ADDRESS; default 127.0.0.1:50051).
        --json prints JSON as the HTTP API writes it (protobuf's JSON mapping: lowerCamelCase
        keys, enums by proto name like JOB_STATUS_QUEUED): one object per job, one line per
        watch event.
        Global options may come before or after the subcommand.

        Exit codes:
          0          success (watch: the job ended FINAL_READY; health: SERVING)
          1          other failures (e.g. a watch stream that ended before the job)
          2          usage error
          3          watch/create --watch: the job ended FAILED or CANCELLED;
                     health: not SERVING
          10 + code  the call failed with gRPC status `code`; stderr gets one line
                     `reelctl: CODE: message`. E.g. 13 INVALID_ARGUMENT,
                     15 NOT_FOUND, 19 FAILED_PRECONDITION, 14 DEADLINE_EXCEEDED,
                     24 UNAVAILABLE (also: cannot connect, connection lost).
        """,
        subcommands: [
            CreateCommand.self, GetCommand.self, WatchCommand.self, CancelCommand.self,
            RetryCommand.self, ListCommand.self, HealthCommand.self, SceneCommand.self, KeysCommand.self, BudgetCommand.self, WeightCommand.self,
        ]
    )

    @OptionGroup var global: GlobalOptions

    /// ArgumentParser's entry point, except that usage errors exit 2 (its default is 64).
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if exitCode(for: error) == .validationFailure {
                Terminal.err(fullMessage(for: error))
                Glibc.exit(2)
            }
            exit(withError: error)
        }
    }
}
