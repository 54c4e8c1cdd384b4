import Foundation
import Logging
import ReelCore
import ReelObservability

/// Kling's published video API (DESIGN §5), over libcurl: `POST /v1/videos/text2video` for a
/// new scene, `/image2video` for a continuation (from the previous segment's last frame),
/// `GET /v1/videos/{kind}/{task_id | external_task_id}`. Answers are classified by Kling's
/// own code in the `{code, message, request_id, data}` envelope, never by the HTTP status alone.
public struct KlingProvider: VideoProvider {
    public static let defaultURL = "https://api-singapore.klingai.com"
    public static let defaultModel = "kling-v2-5-turbo"
    /// Kling's prompt limit, in characters.
    public static let maxPromptCharacters = 2500

    public let name = "kling"
    public let isRemote = true
    /// `GET /v1/videos/{kind}/{external_task_id}` finds the task an attempt made.
    public let findsByExternalID = true
    public let baseURL: String
    let jwt: KlingJWT
    let client: CurlHTTPClient
    let logger: Logger

    public init(baseURL: String, accessKey: String, secretKey: String, client: CurlHTTPClient, logger: Logger) {
        var base = baseURL
        while base.hasSuffix("/") { base.removeLast() }
        self.baseURL = base
        self.jwt = KlingJWT(accessKey: accessKey, secretKey: secretKey)
        self.client = client
        var log = logger
        log[metadataKey: "reel.provider"] = "kling"
        self.logger = log
    }

    public func kind(of request: GenerationRequest) -> String { request.image == nil ? "text2video" : "image2video" }

    /// The body Kling is sent for `request` (DESIGN §5's field rules).
    func body(for request: GenerationRequest) -> KlingWire.CreateBody {
        let c = request.config
        let image: String? = switch request.image {
        case .url(let u): u
        case .base64(let b): b
        case nil: nil
        }
        let negative = request.negativePrompt.isEmpty ? nil : String(request.negativePrompt.prefix(Self.maxPromptCharacters))
        return KlingWire.CreateBody(
            modelName: c.model.isEmpty ? Self.defaultModel : c.model,
            prompt: String(request.prompt.prefix(Self.maxPromptCharacters)),
            negativePrompt: negative,
            duration: c.targetDurationSeconds <= 5 ? "5" : "10",
            aspectRatio: image == nil ? "16:9" : nil,
            mode: c.quality == .high ? "pro" : "std",
            image: image, callbackUrl: request.callbackURL, externalTaskId: request.externalTaskID)
    }

    public func submit(_ request: GenerationRequest) async throws -> ProviderTask {
        let kind = kind(of: request)
        let payload: [UInt8]
        let body = body(for: request)
        do { payload = try KlingWire.encode(body) } catch {
            throw ProviderError(.rejected(code: "PROVIDER_BAD_REQUEST"), "cannot encode the request: \(error)")
        }
        let (env, status) = try await call("POST", "/v1/videos/\(kind)", body: payload, what: "submit", model: body.modelName)
        guard let data = env.data else {
            throw ProviderError(.inDoubt, "submit answered without a task (HTTP \(status))", requestID: env.requestId ?? "")
        }
        var task = try Self.task(data, kind: kind, requestID: env.requestId ?? "")
        if task.externalTaskID.isEmpty { task.externalTaskID = request.externalTaskID }
        return task
    }

    public func query(taskID: String, kind: String) async throws -> ProviderTask {
        let (env, status) = try await call("GET", "/v1/videos/\(kind)/\(HTTPResponse.pathSegment(taskID))", what: "query")
        guard let data = env.data else {
            throw ProviderError(.unavailable, "query answered without a task (HTTP \(status))", requestID: env.requestId ?? "")
        }
        return try Self.task(data, kind: kind, requestID: env.requestId ?? "")
    }

    public func find(externalTaskID: String, kind: String) async throws -> ProviderTask? {
        do {
            return try await query(taskID: externalTaskID, kind: kind)
        } catch let e as ProviderError where e.providerCode == 1203 || e.providerCode == 1202 {
            return nil
        }
    }

    /// Kling has no cancel call: the task runs on (and holds its slot) until Kling ends it.
    public func cancel(taskID: String, kind: String) async {}

    public func parseCallback(_ body: [UInt8]) -> ProviderTask? {
        // Kling POSTs the bare task object; accept the envelope too.
        if let t = try? KlingWire.decode(KlingWire.Task.self, from: body) { return try? Self.task(t, kind: "", requestID: "") }
        if let e = try? KlingWire.decode(KlingWire.Envelope<KlingWire.Task>.self, from: body), let t = e.data {
            return try? Self.task(t, kind: "", requestID: e.requestId ?? "")
        }
        return nil
    }

    /// 90 s for `std` and 180 s for `pro` at 5 s, doubled at 10 s (DESIGN §5).
    public func expectedGenerationTime(for config: JobConfig) -> Duration {
        let base: Int64 = config.quality == .high ? 180 : 90
        return .seconds(config.targetDurationSeconds <= 5 ? base : base * 2)
    }

    // MARK: - Calls

    /// One API call with a fresh or reused token; an auth refusal renews the token once.
    /// Returns an answer with code 0, else throws the `ProviderError` its code means.
    func call(_ method: String, _ path: String, body: [UInt8] = [], what: String, model: String = "")
        async throws -> (KlingWire.Envelope<KlingWire.Task>, Int)
    {
        var renewed = false
        while true {
            let request = HTTPRequest(method: method, url: baseURL + path, headers: [
                "Authorization": "Bearer \(jwt.token())", "Content-Type": "application/json", "Accept": "application/json",
            ], body: body)
            let response: HTTPResponse
            do {
                response = try await client.send(request)
            } catch let e as HTTPClientError {
                // A submit that may have reached Kling is in doubt: look it up by its external id.
                throw ProviderError.noAnswer(e, method: method, what: what, provider: name, display: "Kling")
            }
            let envelope: KlingWire.Envelope<KlingWire.Task>
            do {
                envelope = try KlingWire.decode(KlingWire.Envelope<KlingWire.Task>.self, from: response.body)
            } catch {
                ReelMetrics.providerCall(provider: name, call: what, outcome: "unparseable")
                let head = String(decoding: response.body.prefix(120), as: UTF8.self)
                // A submit's 2xx that does not parse may have made the task (a cut-short answer).
                let kind: ProviderError.Kind = method == "POST" && (200..<300).contains(response.status) ? .inDoubt : .unavailable
                throw ProviderError(kind, "\(what): Kling's answer (HTTP \(response.status)) does not parse: \(head)")
            }
            ReelMetrics.providerCall(provider: name, call: what, outcome: String(envelope.code))
            if envelope.code == 0 { return (envelope, response.status) }
            let error = Self.classify(code: envelope.code, message: envelope.message ?? "", status: response.status,
                                      requestID: envelope.requestId ?? "", what: what, isSubmit: method == "POST",
                                      model: model, retryAfter: response.retryAfter())
            if error.kind == .auth && !renewed {
                renewed = true
                jwt.invalidate()
                logger.notice("Kling refused the token; renewing it once", metadata: ["error.code": "\(envelope.code)"])
                continue
            }
            throw error
        }
    }

    /// DESIGN §5's table of Kling's codes.
    static func classify(code: Int, message: String, status: Int, requestID: String, what: String, isSubmit: Bool,
                         model: String, retryAfter: Duration?) -> ProviderError {
        let said = message.isEmpty ? "no message" : message
        func e(_ kind: ProviderError.Kind, _ text: String) -> ProviderError {
            ProviderError(kind, text, providerCode: code, requestID: requestID, retryAfter: retryAfter)
        }
        switch code {
        case 1000...1004:
            return e(.auth, "Kling refused the credentials: \(said) (check KLING_ACCESS_KEY and KLING_SECRET_KEY)")
        case 1100, 1101, 1102, 1304:
            return e(.parked, "Kling account unavailable: \(said)")
        case 1103:
            return e(.rejected(code: "PROVIDER_PERMISSION"), "no access to model \(model.isEmpty ? "(unnamed)" : model) or this API at Kling: \(said)")
        case 1201 where isSubmit:
            return e(.externalIDTaken, "\(what): Kling refused the request: \(said)")
        case 1200...1203:
            return e(.rejected(code: "PROVIDER_BAD_REQUEST"), "\(what): Kling refused the request: \(said)")
        case 1300, 1301:
            return e(.rejected(code: "CONTENT_POLICY"), said)
        case 1302:
            return e(.rateLimited, "Kling rate limit: \(said)")
        case 1303:
            return e(.concurrency, "Kling account's concurrent task limit: \(said)")
        case 5000...5002:
            return e(.unavailable, "\(what): Kling server error: \(said)")
        default:
            switch status {
            case 401: return e(.auth, "Kling refused the credentials: \(said)")
            case 429: return e(.rateLimited, "Kling: \(said)")
            case 500...: return e(.unavailable, "\(what): Kling error: \(said)")
            default: return e(.rejected(code: "PROVIDER_BAD_REQUEST"), "\(what): Kling refused the request: \(said)")
            }
        }
    }

    static func task(_ t: KlingWire.Task, kind: String, requestID: String) throws -> ProviderTask {
        let state: ProviderTask.State
        var url = "", duration = 0.0
        switch t.taskStatus {
        case "submitted": state = .submitted
        case "processing": state = .processing
        case "succeed":
            guard let video = t.taskResult?.videos?.first, !video.url.isEmpty else {
                throw ProviderError(.unavailable, "Kling says task \(t.taskId) succeeded but gives no video")
            }
            state = .succeeded
            url = video.url
            duration = video.duration.flatMap { Double($0) } ?? 0
        case "failed":
            let msg = t.taskStatusMsg.flatMap { $0.isEmpty ? nil : $0 } ?? "Kling failed the task"
            state = .failed(msg)
        default:
            throw ProviderError(.unavailable, "Kling task \(t.taskId) has an unknown status \"\(t.taskStatus)\"")
        }
        return ProviderTask(taskID: t.taskId, externalTaskID: t.taskInfo?.externalTaskId ?? "", kind: kind, state: state,
                            videoURL: url, durationSeconds: duration, costUnits: t.finalUnitDeduction.flatMap { Double($0) },
                            requestID: requestID, createdAtUnixMs: t.createdAt ?? 0)
    }

}
