import Foundation
import Testing
import ReelCore
@testable import ReelPipeline

@Suite struct ScriptAgentTests {
    let bible = SceneBible(
        characters: [.init(name: "Mara", aliases: ["the keeper"], description: "lighthouse keeper")],
        locations: [.init(name: "North Light")], style: ["palette": "cold blue"], forbidden: ["Dragon"])

    func job(_ text: String = "Mara lights the lamp") -> Job {
        Job(id: "j", userID: "u", sceneID: "s", type: .continuation, inputText: text, bibleVersion: 3)
    }

    func completion(content: String?, refusal: String? = nil, finish: String = "stop") -> JSONValue {
        .object([
            "id": .string("chatcmpl-1"), "object": .string("chat.completion"), "model": .string("m"),
            "choices": .array([.object([
                "index": .number(0), "finish_reason": .string(finish),
                "message": .object(["role": .string("assistant"), "content": content.map { .string($0) } ?? .null,
                                    "refusal": refusal.map { .string($0) } ?? .null]),
            ])]),
        ])
    }

    let goodScript = #"{"action":"Mara climbs","location":"North Light","characters":["Mara"],"shots":[{"camera":"wide","action":"Mara climbs the stairs","characters":["Mara"],"duration_seconds":2.5}]}"#

    @Test func aBooleanIsNeverANumber() throws {
        #expect(JSONValue.parse("true") == .bool(true))
        #expect(JSONValue.parse("1") == .number(1))
        #expect(JSONValue.parse(#"{"a":[null,"x"]}"#) == .object(["a": .array([.null, .string("x")])]))
        #expect(JSONValue.parse("{nope") == nil)
    }

    @Test func theSchemaIsStrict() throws {
        let s = ShotScript.schema.json
        #expect(s["additionalProperties"] == .bool(false))
        #expect(s["required"] == .array(["action", "location", "characters", "shots"].map { .string($0) }))
        let shot = s["properties"]?["shots"]?["items"]
        #expect(shot?["additionalProperties"] == .bool(false))
        #expect(shot?["properties"]?["duration_seconds"]?["type"] == .string("number"))
    }

    @Test func answersThatDoNotFitTheSchemaAreNamed() throws {
        let schema = ShotScript.schema
        #expect(schema.violation(of: JSONValue.parse(goodScript)!) == nil)
        let missing = #"{"action":"x","location":"y","characters":[]}"#
        #expect(schema.violation(of: JSONValue.parse(missing)!)?.contains("\"shots\" is missing") == true)
        let extra = #"{"action":"x","location":"y","characters":[],"shots":[],"mood":"dark"}"#
        #expect(schema.violation(of: JSONValue.parse(extra)!)?.contains("\"mood\" is not allowed") == true)
        let wrongType = #"{"action":"x","location":"y","characters":["a", 3],"shots":[]}"#
        #expect(schema.violation(of: JSONValue.parse(wrongType)!) == "$.characters[1]: expected a string, got a number")
        let boolForNumber = #"{"action":"x","location":"y","characters":[],"shots":[{"camera":"c","action":"a","characters":[],"duration_seconds":true}]}"#
        #expect(schema.violation(of: JSONValue.parse(boolForNumber)!)?.hasPrefix("$.shots[0].duration_seconds") == true)
        #expect(ContinuityVerdict.schema.violation(of: .array([])) == "$: expected an object, got an array")
    }

    @Test func refusalsCutOffAnswersAndMissingChoicesAreMalformed() throws {
        #expect(try ChatCompletionsClient.content(of: completion(content: goodScript)) == goodScript)
        for bad in [completion(content: nil, refusal: "no"), completion(content: "{\"a", finish: "length"),
                    completion(content: nil), .object(["choices": .array([])])] {
            #expect(throws: ScriptAgentError.self) { try ChatCompletionsClient.content(of: bad) }
            do { _ = try ChatCompletionsClient.content(of: bad) } catch { #expect(error.kind == .malformed) }
        }
    }

    @Test func scriptsDecodeAndAnEmptyOneIsMalformed() throws {
        let plan = try ScriptAgent.decodeScript(JSONValue.parse(goodScript)!)
        #expect(plan.shots.first?.durationSeconds == 2.5 && plan.location == "North Light")
        let empty = #"{"action":"x","location":"y","characters":[],"shots":[]}"#
        do {
            _ = try ScriptAgent.decodeScript(JSONValue.parse(empty)!)
            Issue.record("an empty script was taken")
        } catch { #expect(error.kind == .malformed) }
    }

    @Test func errorsAreClassifiedByOpenAIsCodeNotTheStatusAlone() {
        func err(_ status: Int, _ code: String?, type: String = "x", headers: [String: String] = [:]) -> ScriptAgentError {
            let body: JSONValue = .object(["error": .object(["message": .string("m"), "type": .string(type),
                                                             "param": .null, "code": code.map { .string($0) } ?? .null])])
            return ChatCompletionsClient.classify(status: status, body: body, headers: HTTPResponse(status: status, headers: headers))
        }
        let limited = err(429, "rate_limit_exceeded", headers: ["retry-after": "2"])
        #expect(limited.kind == .rateLimited && limited.retryable && limited.retryAfter == .seconds(2))
        let quota = err(429, "insufficient_quota", type: "insufficient_quota")
        #expect(quota.kind == .insufficientQuota && !quota.retryable && !quota.jobRetryable)
        #expect(err(503, nil, type: "server_error").kind == .serverError)
        #expect(err(500, nil).retryable)
        #expect(err(401, "invalid_api_key").kind == .unauthorized && !err(401, "invalid_api_key").retryable)
        #expect(err(400, nil).kind == .rejected)
        #expect(HTTPResponse(status: 429, headers: ["retry-after-ms": "250"]).retryAfter() == .milliseconds(250))
        #expect(HTTPResponse(status: 429, headers: ["retry-after": "2"]).retryAfter() == .seconds(2))
        #expect(HTTPResponse(status: 429, headers: ["retry-after": "9999"]).retryAfter() == .seconds(300), "capped")
        #expect(HTTPResponse(status: 429, headers: ["retry-after": "soon"]).retryAfter() == nil)
        let inTenSeconds = Date().addingTimeInterval(10)
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX"); f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        let wait = HTTPResponse(status: 503, headers: ["retry-after": f.string(from: inTenSeconds)]).retryAfter()
        #expect(wait.map { $0 > .seconds(8) && $0 <= .seconds(10) } == true, "an HTTP date: \(String(describing: wait))")
    }

    @Test func theRequestAsksForStrictStructuredOutput() throws {
        let chat = ChatCompletionsClient(settings: .init(baseURL: "http://127.0.0.1:1/v1/", model: "m"), client: CurlHTTPClient(threads: 1))
        #expect(chat.endpoint == "http://127.0.0.1:1/v1/chat/completions")
        let body = JSONValue.parse(String(decoding: chat.body(messages: [("user", "hi")], schemaName: "s", schema: ContinuityVerdict.schema),
                                          as: UTF8.self))
        #expect(body?["model"] == .string("m"))
        #expect(body?["response_format"]?["type"] == .string("json_schema"))
        #expect(body?["response_format"]?["json_schema"]?["strict"] == .bool(true))
        #expect(body?["response_format"]?["json_schema"]?["name"] == .string("s"))
    }

    @Test func messagesCarryTheBibleTheLatestScriptsAndTheUsersText() {
        let ctx = SceneContext(bible: bible, recentScripts: ["SCENE s\nACTION: the storm breaks"])
        let msgs = ScriptAgent.scriptMessages(job(), context: ctx)
        #expect(msgs.map(\.role) == ["system", "user"])
        let user = msgs[1].content
        for part in ["Mara", "lighthouse keeper", "North Light", "cold blue", "Dragon", "the storm breaks", "Mara lights the lamp"] {
            #expect(user.contains(part), "missing \(part)")
        }
    }

    @Test func thePromptKeepsTheUsersTextAndFitsTheLimit() throws {
        var plan = try ScriptAgent.decodeScript(JSONValue.parse(goodScript)!)
        let ctx = SceneContext(bible: bible, recentScripts: [])
        let short = ScriptAgent.render(plan, job: job(), context: ctx, limit: 2500)
        #expect(short.contains("ACTION: Mara lights the lamp") && short.contains("SHOT 1 (2.5s, wide): Mara climbs the stairs [Mara]"))
        #expect(short.contains("STYLE palette: cold blue") && short.contains("LOCATION: North Light"))
        plan.shots = Array(repeating: plan.shots[0], count: 200)
        let text = String(repeating: "waves ", count: 300)
        let long = ScriptAgent.render(plan, job: job(text), context: ctx, limit: 2500)
        #expect(long.unicodeScalars.count <= 2500)
        #expect(long.hasSuffix("ACTION: \(text)"))
        #expect(long.contains("SHOT 1 "))
        let huge = ScriptAgent.render(plan, job: job(String(repeating: "x", count: 5000)), context: ctx, limit: 2500)
        #expect(huge.unicodeScalars.count == 2500)
    }

    @Test func theVerdictJoinsTheValidationResult() throws {
        let rules = ContinuityChecker.Outcome(script: "", corrections: [], violations: []).json(bibleVersion: 3)
        let bad = ContinuityVerdict(consistent: false, violations: ["Mara is dead in the bible"], reasons: "she died in segment 2")
        let merged = try #require(JSONValue.parse(Pipeline.withVerdict(rules, bad, model: "m", usage: TokenUsage(promptTokens: 5, completionTokens: 2, totalTokens: 7))))
        #expect(merged["valid"] == .bool(false))
        #expect(merged["violations"] == .array([.string("Mara is dead in the bible")]))
        #expect(merged["agent"]?["reasons"] == .string("she died in segment 2"))
        #expect(merged["agent"]?["tokens"]?["total"] == .number(7))
        #expect(Pipeline.withVerdict(rules, bad, model: "m", usage: TokenUsage()).contains("\"valid\":false"))
        let good = ContinuityVerdict(consistent: true, violations: [], reasons: "fine")
        #expect(JSONValue.parse(Pipeline.withVerdict(rules, good, model: "m", usage: TokenUsage()))?["valid"] == .bool(true))
    }
}
