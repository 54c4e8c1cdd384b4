import Foundation
import ReelCore

/// The model's shot script (the `response_format` schema `reel_shot_script`).
public struct ShotScript: Sendable, Equatable, Codable {
    public struct Shot: Sendable, Equatable, Codable {
        public var camera: String
        public var action: String
        public var characters: [String]
        public var durationSeconds: Double
        enum CodingKeys: String, CodingKey { case camera, action, characters, durationSeconds = "duration_seconds" }
    }
    /// What happens in the segment, in one or two sentences.
    public var action: String
    public var location: String
    public var characters: [String]
    public var shots: [Shot]

    public static let schema: JSONSchema = .object([
        ("action", .string(description: "What happens in this segment, one or two sentences.")),
        ("location", .string(description: "Where it happens: a location of the scene bible by its name.")),
        ("characters", .array(.string(), description: "Who appears, by the bible's names.")),
        ("shots", .array(.object([
            ("camera", .string(description: "Framing and movement, e.g. 'slow dolly-in, medium shot'.")),
            ("action", .string(description: "What is seen in this shot.")),
            ("characters", .array(.string())),
            ("duration_seconds", .number()),
        ]), description: "The shots in order, at least one.")),
    ])
}

/// The continuity agent's verdict (the schema `reel_continuity_verdict`).
public struct ContinuityVerdict: Sendable, Equatable, Codable {
    public var consistent: Bool
    public var violations: [String]
    public var reasons: String

    public static let schema: JSONSchema = .object([
        ("consistent", .boolean(description: "True when nothing in the script contradicts the scene bible.")),
        ("violations", .array(.string(), description: "Each contradiction of the bible, one per item; empty when consistent.")),
        ("reasons", .string(description: "Why, in a few sentences.")),
    ])

    /// A verdict that reports violations, or says it is not consistent, fails the check.
    public var passed: Bool { consistent && violations.isEmpty }
}

/// Script expansion and continuity checks by an LLM over Chat Completions (DESIGN §5 item 1,
/// `--script-agent openai`, `--continuity-agent openai`).
public struct ScriptAgent: Sendable {
    public let chat: ChatCompletionsClient
    /// The template writes the script when the agent fails (`--script-agent-fallback template`).
    public var fallbackToTemplate = false
    /// The provider's prompt limit in characters (Kling: 2,500).
    public var promptLimit = 2500

    public init(chat: ChatCompletionsClient) { self.chat = chat }

    public struct Expansion: Sendable {
        public var script: String
        public var plan: ShotScript
        public var usage: TokenUsage
        public var model: String
        public var attempts: Int
    }

    /// Asks the model for a shot script and renders it as the provider's prompt.
    public func expand(_ job: Job, context: SceneContext) async throws -> Expansion {
        let answer = try await chat.ask(purpose: "script", messages: Self.scriptMessages(job, context: context),
                                        schemaName: "reel_shot_script", schema: ShotScript.schema) { json throws(ScriptAgentError) in
            try Self.decodeScript(json)
        }
        let script = Self.render(answer.value, job: job, context: context, limit: promptLimit)
        return Expansion(script: script, plan: answer.value, usage: answer.usage, model: answer.model, attempts: answer.attempts)
    }

    /// Asks the model whether `script` contradicts the bible.
    public func checkContinuity(_ script: String, job: Job, context: SceneContext) async throws -> StructuredAnswer<ContinuityVerdict> {
        try await chat.ask(purpose: "continuity", messages: Self.continuityMessages(script, job: job, context: context),
                           schemaName: "reel_continuity_verdict", schema: ContinuityVerdict.schema) { json throws(ScriptAgentError) in
            try Self.decode(ContinuityVerdict.self, json)
        }
    }

    // MARK: answers

    static func decode<T: Decodable>(_ type: T.Type, _ json: JSONValue) throws(ScriptAgentError) -> T {
        do { return try JSONDecoder().decode(T.self, from: Data(json.text.utf8)) } catch {
            throw ScriptAgentError(kind: .malformed, message: "the answer does not decode: \(error)")
        }
    }

    /// Codable, then what a schema can't say: at least one shot, no empty action.
    static func decodeScript(_ json: JSONValue) throws(ScriptAgentError) -> ShotScript {
        let plan = try decode(ShotScript.self, json)
        if plan.shots.isEmpty { throw ScriptAgentError(kind: .malformed, message: "the script has no shots") }
        if plan.action.trimmed.isEmpty && plan.shots.allSatisfy({ $0.action.trimmed.isEmpty }) {
            throw ScriptAgentError(kind: .malformed, message: "the script has no action")
        }
        return plan
    }

    // MARK: messages

    static func bibleText(_ bible: SceneBible, version: Int32) -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let json = (try? enc.encode(bible)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return "SCENE BIBLE (version \(version)), JSON: characters, locations, locked style, forbidden terms:\n\(json)"
    }

    static func lockedStyle(_ job: Job, _ bible: SceneBible) -> [(String, String)] {
        // As the template writer: an override shows, and continuity validation puts the bible's locked value back.
        var style = job.config.styleOverrides
        for (k, v) in bible.style { style[k] = style[k] ?? v }
        return style.sorted { $0.key < $1.key }
    }

    static func scriptMessages(_ job: Job, context: SceneContext) -> [(role: String, content: String)] {
        let duration = job.config.targetDurationSeconds > 0 ? job.config.targetDurationSeconds : 5
        let system = """
        You are the script writer of a video generation service. Expand the user's text into a shot script \
        for one video segment of \(duration) seconds that continues the scene. Keep continuity with the scene \
        bible: use its characters and locations by their canonical names, keep its locked style, never show \
        anything its forbidden terms name, and follow on from the latest segments. Answer only with JSON that \
        fits the schema.
        """
        var user = [bibleText(context.bible, version: job.bibleVersion)]
        if context.recentScripts.isEmpty {
            user.append("LATEST SEGMENTS: none (this segment opens the scene).")
        } else {
            let list = context.recentScripts.enumerated().map { "--- segment \($0.offset + 1) ---\n\($0.element)" }
            user.append("LATEST SEGMENTS' SCRIPTS (oldest first):\n" + list.joined(separator: "\n"))
        }
        let style = lockedStyle(job, context.bible)
        if !style.isEmpty { user.append("STYLE:\n" + style.map { "\($0.0): \($0.1)" }.joined(separator: "\n")) }
        user.append("THIS SEGMENT: \(job.type == .sceneCreation ? "opening" : "continuation"), \(duration) s.")
        user.append("USER'S TEXT:\n\(job.inputText)")
        return [("system", system), ("user", user.joined(separator: "\n\n"))]
    }

    static func continuityMessages(_ script: String, job: Job, context: SceneContext) -> [(role: String, content: String)] {
        let system = """
        You check a video segment's shot script for continuity with its scene bible. The script contradicts \
        the bible when it shows something a forbidden term names, names a character or location in a way the \
        bible rules out, changes the locked style, or contradicts what the latest segments established. \
        List each contradiction in violations; consistent is true only when there are none. Answer only with \
        JSON that fits the schema.
        """
        var user = [bibleText(context.bible, version: job.bibleVersion)]
        if !context.recentScripts.isEmpty {
            user.append("LATEST SEGMENTS' SCRIPTS (oldest first):\n" + context.recentScripts.joined(separator: "\n---\n"))
        }
        user.append("SCRIPT TO CHECK:\n\(script)")
        return [("system", system), ("user", user.joined(separator: "\n\n"))]
    }

    // MARK: the provider's prompt

    /// The script as the provider's prompt, at most `limit` characters: the header, the
    /// locked style and the user's text always; location, characters, the summary and the
    /// shots as they fit, in order. The same line shapes as the template writer's, so the
    /// continuity checker and the next segment's script read it alike.
    static func render(_ plan: ShotScript, job: Job, context: SceneContext, limit: Int) -> String {
        let duration = job.config.targetDurationSeconds > 0 ? job.config.targetDurationSeconds : 5
        let head = [
            "SCENE \(job.sceneID) (bible v\(job.bibleVersion)) — \(job.type == .sceneCreation ? "opening" : "continuation")",
            "DURATION: \(duration)s  QUALITY: \(job.config.quality == .unspecified ? "standard" : job.config.quality.name)",
        ]
        let tail = lockedStyle(job, context.bible).map { "STYLE \($0.0): \($0.1)" } + ["ACTION: \(job.inputText)"]
        var optional: [String] = []
        if !plan.location.trimmed.isEmpty { optional.append("LOCATION: \(plan.location.trimmed)") }
        if !plan.characters.isEmpty { optional.append("CHARACTERS: \(plan.characters.joined(separator: ", "))") }
        if !plan.action.trimmed.isEmpty { optional.append("SUMMARY: \(plan.action.trimmed)") }
        for (i, s) in plan.shots.enumerated() {
            let who = s.characters.isEmpty ? "" : " [\(s.characters.joined(separator: ", "))]"
            let secs = s.durationSeconds > 0 ? "\(formatSeconds(s.durationSeconds))s, " : ""
            optional.append("SHOT \(i + 1) (\(secs)\(s.camera.trimmed)): \(s.action.trimmed)\(who)")
        }
        func size(_ lines: [String]) -> Int { lines.reduce(0) { $0 + $1.unicodeScalars.count } + max(0, lines.count - 1) }
        var kept: [String] = []
        var used = size(head + tail)
        for line in optional where used + line.unicodeScalars.count + 1 <= limit {
            kept.append(line)
            used += line.unicodeScalars.count + 1
        }
        let text = (head + kept + tail).joined(separator: "\n")
        // Only a user text near the limit itself is cut (the provider would cut it anyway).
        return text.unicodeScalars.count <= limit ? text : String(String.UnicodeScalarView(text.unicodeScalars.prefix(limit)))
    }

    static func formatSeconds(_ s: Double) -> String {
        s == s.rounded() ? String(Int(s)) : String(format: "%.1f", s)
    }
}
