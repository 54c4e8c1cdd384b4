import Foundation
import ReelObservability

/// Token usage as OpenAI reports it (`usage`), summed over the requests of one job step.
public struct TokenUsage: Sendable, Equatable, Codable {
    public var promptTokens: Int
    public var completionTokens: Int
    public var totalTokens: Int
    public init(promptTokens: Int = 0, completionTokens: Int = 0, totalTokens: Int = 0) {
        self.promptTokens = promptTokens; self.completionTokens = completionTokens; self.totalTokens = totalTokens
    }
    enum CodingKeys: String, CodingKey {
        case promptTokens = "prompt_tokens", completionTokens = "completion_tokens", totalTokens = "total_tokens"
    }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        promptTokens = try c.decodeIfPresent(Int.self, forKey: .promptTokens) ?? 0
        completionTokens = try c.decodeIfPresent(Int.self, forKey: .completionTokens) ?? 0
        totalTokens = try c.decodeIfPresent(Int.self, forKey: .totalTokens) ?? (promptTokens + completionTokens)
    }
    public static func + (a: TokenUsage, b: TokenUsage) -> TokenUsage {
        TokenUsage(promptTokens: a.promptTokens + b.promptTokens, completionTokens: a.completionTokens + b.completionTokens,
                   totalTokens: a.totalTokens + b.totalTokens)
    }
    /// "N tokens (P prompt + C completion)", for job events.
    public var summary: String { "\(totalTokens) tokens (\(promptTokens) prompt + \(completionTokens) completion)" }
}

/// Why a script-agent call gave no usable answer.
public struct ScriptAgentError: Error, Sendable, CustomStringConvertible {
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public var description: String { name }
        /// 429 `rate_limit_exceeded` (or a 429 without a known code): retried.
        public static let rateLimited = Kind(name: "rate_limited")
        /// 429 `insufficient_quota`: the account is out of credit; never retried.
        public static let insufficientQuota = Kind(name: "insufficient_quota")
        /// 5xx: retried.
        public static let serverError = Kind(name: "server_error")
        /// No answer in time, or no connection: retried.
        public static let unreachable = Kind(name: "unreachable")
        /// An answer that isn't the structured one asked for (not JSON, off-schema, cut off, refused): retried.
        public static let malformed = Kind(name: "malformed")
        /// 401/403: the key is wrong; not retried.
        public static let unauthorized = Kind(name: "unauthorized")
        /// Another 4xx: the request itself is refused; not retried.
        public static let rejected = Kind(name: "rejected")
    }

    public var kind: Kind
    public var message: String
    /// Tokens the failed calls consumed (a malformed answer is still billed).
    public var usage = TokenUsage()
    /// How long the server asked to wait (`Retry-After`).
    var retryAfter: Duration?

    public init(kind: Kind, message: String) { self.kind = kind; self.message = message }

    /// Worth another request now (after a wait).
    public var retryable: Bool { [.rateLimited, .serverError, .unreachable, .malformed].contains(kind) }
    /// Worth another attempt of the job later (the quota, the key and a refused request won't change by themselves).
    public var jobRetryable: Bool { retryable }
    public var description: String { "\(kind): \(message)" }
}

/// One structured answer: the value, its raw JSON, the tokens the whole exchange used.
public struct StructuredAnswer<Value: Sendable>: Sendable {
    public var value: Value
    public var json: JSONValue
    public var usage: TokenUsage
    public var model: String
    public var attempts: Int
}

/// OpenAI's Chat Completions API (`POST <base>/chat/completions`) with a strict JSON-schema
/// `response_format`, over libcurl. Any OpenAI-compatible server answers it (vLLM, Ollama,
/// llama.cpp); the answer is checked against the schema here, whatever the server enforced.
public struct ChatCompletionsClient: Sendable {
    public struct Settings: Sendable {
        /// The API base including `/v1` (`https://api.openai.com/v1`).
        public var baseURL: String
        public var model: String
        /// `OPENAI_API_KEY`; nil sends no `Authorization` (local servers).
        public var apiKey: String?
        /// Requests per call at most (the first and the retries).
        public var maxAttempts = 4
        /// First backoff without `Retry-After`; doubles per retry, with jitter.
        public var backoffBase: Duration = .milliseconds(500)
        /// A `Retry-After` longer than this is cut to it.
        public var maxWait: Duration = .seconds(30)
        /// One request's time limit.
        public var requestTimeout: Duration = .seconds(60)
        /// All the requests of one call, retries and waits included, end within this (the
        /// stage's own limit less a margin, so the call fails as `SCRIPT_AGENT`, not as a
        /// stage timeout); nil: no limit besides the attempts.
        public var callBudget: Duration?
        public init(baseURL: String, model: String, apiKey: String? = nil) {
            self.baseURL = baseURL; self.model = model; self.apiKey = apiKey
        }
        public static let defaultURL = "https://api.openai.com/v1"
        public static let defaultModel = "gpt-4o-mini"
    }

    public let settings: Settings
    let client: CurlHTTPClient

    public init(settings: Settings, client: CurlHTTPClient) { self.settings = settings; self.client = client }

    var endpoint: String {
        var base = settings.baseURL
        while base.hasSuffix("/") { base.removeLast() }
        return base + "/chat/completions"
    }

    /// The request body (Chat Completions with `response_format: json_schema`, strict).
    func body(messages: [(role: String, content: String)], schemaName: String, schema: JSONSchema) -> [UInt8] {
        let request: JSONValue = .object([
            "model": .string(settings.model),
            "messages": .array(messages.map { .object(["role": .string($0.role), "content": .string($0.content)]) }),
            "response_format": .object([
                "type": .string("json_schema"),
                "json_schema": .object(["name": .string(schemaName), "schema": schema.json, "strict": .bool(true)]),
            ]),
        ])
        return Array(request.text.utf8)
    }

    /// Asks until an answer fits `schema` and `decode` accepts it, retrying what is worth it
    /// (429 rate limits after `Retry-After`, 5xx, timeouts, malformed answers) up to
    /// `maxAttempts`; throws the last `ScriptAgentError` otherwise. `purpose` labels metrics.
    public func ask<Value: Sendable>(purpose: String, messages: [(role: String, content: String)], schemaName: String,
                                     schema: JSONSchema, decode: (JSONValue) throws(ScriptAgentError) -> Value)
        async throws -> StructuredAnswer<Value> {
        let payload = body(messages: messages, schemaName: schemaName, schema: schema)
        var usage = TokenUsage()
        var attempt = 0
        let started = ContinuousClock.now
        func left() -> Duration? { settings.callBudget.map { $0 - (ContinuousClock.now - started) } }
        while true {
            attempt += 1
            try Task.checkCancellation()
            do {
                let timeout = min(settings.requestTimeout, left() ?? settings.requestTimeout)
                let (json, model) = try await once(payload, schema: schema, usage: &usage, timeout: timeout)
                let value = try decode(json)
                ReelMetrics.scriptAgentRequest(purpose: purpose, outcome: "ok")
                ReelMetrics.scriptAgentQuotaExhausted(false)
                return StructuredAnswer(value: value, json: json, usage: usage, model: model, attempts: attempt)
            } catch var e as ScriptAgentError {
                ReelMetrics.scriptAgentRequest(purpose: purpose, outcome: e.kind.name)
                if e.kind == .insufficientQuota { ReelMetrics.scriptAgentQuotaExhausted(true) }
                e.usage = usage
                guard e.retryable, attempt < settings.maxAttempts else {
                    if attempt > 1 { e.message = "after \(attempt) requests: \(e.message)" }
                    throw e
                }
                let backoff = settings.backoffBase * (1 << min(attempt - 1, 10))
                let jittered = backoff * Double.random(in: 0.8...1.2)
                let wait = min(e.retryAfter ?? jittered, settings.maxWait)
                // No time left in the call for the wait and a useful request: fail now, clearly.
                if let rest = left(), rest - wait < .seconds(1) {
                    e.message = "after \(attempt) requests, with no time left for another: \(e.message)"
                    throw e
                }
                try await Task.sleep(for: wait)
            }
        }
    }

    /// One request: the answer's JSON (checked against `schema`), or a classified error.
    private func once(_ payload: [UInt8], schema: JSONSchema, usage: inout TokenUsage, timeout: Duration)
        async throws -> (JSONValue, String) {
        var headers = ["Content-Type": "application/json", "Accept": "application/json"]
        if let key = settings.apiKey, !key.isEmpty { headers["Authorization"] = "Bearer \(key)" }
        let response: HTTPResponse
        do {
            response = try await client.send(HTTPRequest(method: "POST", url: endpoint, headers: headers, body: payload,
                                                         timeout: max(timeout, .seconds(1))))
        } catch let e as HTTPClientError {
            let what = e.code == .timedOut ? "no answer within \(max(timeout, .seconds(1)))" : "\(e.code): \(e.message)"
            throw ScriptAgentError(kind: .unreachable, message: "\(endpoint): \(what)")
        }
        let text = String(decoding: response.body, as: UTF8.self)
        let json = JSONValue.parse(text)
        guard (200..<300).contains(response.status) else {
            throw Self.classify(status: response.status, body: json, headers: response)
        }
        guard let json else { throw ScriptAgentError(kind: .malformed, message: "the response is not JSON") }
        if let u = json["usage"], let used = try? JSONDecoder().decode(TokenUsage.self, from: Data(u.text.utf8)) {
            usage = usage + used
            ReelMetrics.scriptAgentTokens(prompt: used.promptTokens, completion: used.completionTokens, total: used.totalTokens)
        }
        let content = try Self.content(of: json)
        guard let answer = JSONValue.parse(content) else {
            throw ScriptAgentError(kind: .malformed, message: "the answer is not JSON: \(content.prefix(120))")
        }
        if let v = schema.violation(of: answer) {
            throw ScriptAgentError(kind: .malformed, message: "the answer does not fit the schema: \(v)")
        }
        let model = json["model"]?.stringValue ?? settings.model
        return (answer, model)
    }

    /// The message content of the first choice, refused or cut-off answers thrown as malformed.
    static func content(of response: JSONValue) throws(ScriptAgentError) -> String {
        guard case .array(let choices)? = response["choices"], let first = choices.first else {
            throw ScriptAgentError(kind: .malformed, message: "the response has no choices")
        }
        let finish = first["finish_reason"]?.stringValue ?? ""
        if finish == "length" {
            throw ScriptAgentError(kind: .malformed, message: "the answer was cut off (finish_reason length)")
        }
        if finish == "content_filter" {
            throw ScriptAgentError(kind: .malformed, message: "the answer was withheld (finish_reason content_filter)")
        }
        guard let message = first["message"] else {
            throw ScriptAgentError(kind: .malformed, message: "the first choice has no message")
        }
        if let refusal = message["refusal"]?.stringValue, !refusal.isEmpty {
            throw ScriptAgentError(kind: .malformed, message: "the model refused: \(refusal.prefix(200))")
        }
        guard let content = message["content"]?.stringValue else {
            throw ScriptAgentError(kind: .malformed, message: "the answer has no content")
        }
        return content
    }

    /// An error status, classified by OpenAI's error code in the body, then by the status.
    static func classify(status: Int, body: JSONValue?, headers: HTTPResponse) -> ScriptAgentError {
        let error = body?["error"]
        let code: String = {
            switch error?["code"] {
            case .string(let s)?: return s
            case .number(let n)?: return String(Int(n))
            default: return error?["type"]?.stringValue ?? ""
            }
        }()
        let message = error?["message"]?.stringValue ?? (error?.stringValue ?? "")
        let detail = "HTTP \(status)" + (code.isEmpty ? "" : " \(code)") + (message.isEmpty ? "" : ": \(message.prefix(300))")
        var e: ScriptAgentError
        switch status {
        case 429 where code == "insufficient_quota" || error?["type"]?.stringValue == "insufficient_quota":
            e = ScriptAgentError(kind: .insufficientQuota, message: detail)
        case 429: e = ScriptAgentError(kind: .rateLimited, message: detail)
        case 401, 403: e = ScriptAgentError(kind: .unauthorized, message: detail)
        case 408, 500...599: e = ScriptAgentError(kind: .serverError, message: detail)
        default: e = ScriptAgentError(kind: .rejected, message: detail)
        }
        e.retryAfter = headers.retryAfter(cap: .seconds(3600))
        return e
    }
}
