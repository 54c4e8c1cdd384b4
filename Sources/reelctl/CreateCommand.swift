import ArgumentParser
import Foundation
import ReelCore

struct CreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a job; print it (id on the first line), or follow it with --watch.")

    @OptionGroup var global: GlobalOptions
    @Option(name: .customLong("user-id"), help: "The user (1-128 of A-Z a-z 0-9 _ . -).") var userID: String
    @Option(name: .customLong("scene-id"), help: "The scene (1-128 of A-Z a-z 0-9 _ . -).") var sceneID: String
    @Option(help: "scene-creation or continuation.") var type: Choice<JobType>
    @Option(help: "The input text (at most 10,000 characters).") var text: String
    @Option(name: .customLong("idempotency-key"), help: "Default: derived from user, scene and text.")
    var idempotencyKey = ""
    @Option(help: "Scheduling tier (default standard).") var tier: Choice<Tier>?
    @Option(name: .customLong("max-retries"), help: "Attempts after a failure before dead-lettering (0: server default 3).")
    var maxRetries: Int32 = 0
    @Option(help: "Target video duration in seconds.") var duration: Int32 = 0
    @Option(help: "Output quality.") var quality: Choice<Quality>?
    @Option(help: "Provider model name.") var model = ""
    @Option(name: .customLong("style"), help: ArgumentHelp("A style override; repeatable.", valueName: "key=value"))
    var styles: [String] = []
    @Option(name: .customLong("run-at"),
            help: ArgumentHelp("Don't start it before this time: ISO 8601 (2026-12-24T18:00:00Z) or unix ms.",
                               valueName: "time"))
    var runAt: String?
    @Option(help: ArgumentHelp("Don't start it before this many seconds from now (or 90s, 15m, 2h, 1d).",
                               valueName: "duration"))
    var delay: String?
    @Flag(help: "Follow the job like `watch` until it ends (exit 0 FINAL_READY, 3 FAILED/CANCELLED).")
    var watch = false

    func validate() throws {
        for s in styles where !s.contains("=") { throw ValidationError("--style takes key=value, not \"\(s)\"") }
        if runAt != nil && delay != nil { throw ValidationError("give --run-at or --delay, not both") }
        _ = try runAtUnixMs()
    }

    /// `--run-at` or `--delay` as the request's `run_at_unix_ms` (0: now).
    func runAtUnixMs() throws -> Int64 {
        if let runAt { return try JobFormatting.parseTime(runAt, option: "--run-at") }
        if let delay {
            let ms = try JobFormatting.parseDuration(delay, option: "--delay")
            return Int64(Date().timeIntervalSince1970 * 1000) + ms
        }
        return 0
    }

    func run() throws {
        var input = CreateJobInput(
            userID: userID, sceneID: sceneID, type: type.value, inputText: text,
            config: JobConfig(targetDurationSeconds: duration, quality: quality?.value ?? .unspecified, model: model,
                              styleOverrides: Dictionary(styles.map { s in
                                  let eq = s.firstIndex(of: "=")!
                                  return (String(s[..<eq]), String(s[s.index(after: eq)...]))
                              }, uniquingKeysWith: { _, last in last })),
            idempotencyKey: idempotencyKey, tier: tier?.value ?? .unspecified, maxRetries: maxRetries)
        input.runAtUnixMs = try runAtUnixMs()

        let code = try CallFailure.reporting { () throws -> Int32 in
            let client = try global.connect()
            let job = try client.createJob(input)
            guard watch else {
                Terminal.out(global.json ? JobFormatting.json(job) : JobFormatting.text(job))
                return 0
            }
            let watcher = JobWatcher(global: global, client: client)
            if watcher.live { Terminal.out("job \(job.id) created") }
            return try watcher.follow(id: job.id, afterSeq: 0)
        }
        if code != 0 { throw ExitCode(code) }
    }
}
