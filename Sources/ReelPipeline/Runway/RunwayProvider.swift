import Foundation
import Logging
import ReelCore
import ReelObservability

/// Runway's published task API (DESIGN §5, `X-Runway-Version: 2024-11-06`), over libcurl:
/// `POST /v1/image_to_video` for a continuation (from the previous segment's last frame, a
/// PNG sent as a data URI), `POST /v1/text_to_video` for a new scene (or, with an image-only
/// model such as `gen4_turbo`, `image_to_video` from an ffmpeg title card of the script's
/// first shot), `GET /v1/tasks/{id}` to follow it, `DELETE /v1/tasks/{id}` to cancel it.
///
/// Runway has no external id, so a task cannot be looked up by the attempt: a submit whose
/// answer was lost after the request went out (a dropped connection, a timeout, a 2xx that
/// does not parse) is **in doubt**. Reel never submits it again on its own — the pipeline
/// fails the attempt with `PROVIDER_IN_DOUBT` (dead-lettered; `RetryJob` submits a new task
/// when an operator decides to) — because a second submit could pay twice. What is checked
/// first: a request that never reached Runway (no connection, no name) is not in doubt and is
/// simply retried; a 502/503/504 is Runway's "retry" answer (no task made) and is retried with
/// backoff; a task id saved before a crash is queried by that id and followed.
///
/// Runway reports no charge: the cost is its published credits per second of output for the
/// model (`creditsPerSecond`, configurable with `--runway-credits-per-second`) times the
/// requested duration, weighted by `--provider-cost-weight` like every provider's.
public struct RunwayProvider: VideoProvider {
    public static let defaultURL = "https://api.dev.runwayml.com"
    public static let apiVersion = "2024-11-06"
    /// Served by both endpoints.
    public static let defaultModel = "gen4.5"
    /// Models Runway serves only from an image (`image_to_video`).
    public static let imageOnlyModels: Set<String> = ["gen4_turbo"]
    /// Runway's published prices, in credits per second of output.
    public static let defaultCreditsPerSecond: [String: Double] = ["gen4_turbo": 5, "gen4.5": 12]
    /// Runway's `promptText` limit, in characters.
    public static let maxPromptCharacters = 1000
    /// Runway's limit for a `data:` URI promptImage.
    public static let maxDataURIBytes = 5 * 1024 * 1024
    /// Output ratios in pixels; `text_to_video` accepts only the first two.
    public static let ratios = ["1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672"]
    public static let textRatios: Set<String> = ["1280:720", "720:1280"]

    public let name = "runway"
    public let isRemote = true
    public let findsByExternalID = false
    public let baseURL: String
    let apiKey: String
    let client: CurlHTTPClient
    let logger: Logger
    public let creditsPerSecond: [String: Double]
    /// Makes the still a new scene starts from with an image-only model (the script's first
    /// shot in, PNG bytes out); nil: such a job is refused.
    let stillMaker: (@Sendable (String) async throws -> [UInt8])?

    public init(baseURL: String, apiKey: String, client: CurlHTTPClient, logger: Logger,
                creditsPerSecond: [String: Double] = RunwayProvider.defaultCreditsPerSecond,
                stillMaker: (@Sendable (String) async throws -> [UInt8])? = nil) {
        var base = baseURL
        while base.hasSuffix("/") { base.removeLast() }
        self.baseURL = base
        self.apiKey = apiKey
        self.client = client
        var log = logger
        log[metadataKey: "reel.provider"] = "runway"
        self.logger = log
        self.creditsPerSecond = creditsPerSecond
        self.stillMaker = stillMaker
    }

    // MARK: - Request shape

    public static func model(for config: JobConfig) -> String { config.model.isEmpty ? defaultModel : config.model }

    /// An integer 2–10: the target duration (0 means 5 s), clamped.
    public static func duration(for config: JobConfig) -> Int {
        let t = config.targetDurationSeconds <= 0 ? 5 : Int(config.targetDurationSeconds)
        return min(max(t, 2), 10)
    }

    public func kind(of request: GenerationRequest) -> String {
        request.image != nil || Self.imageOnlyModels.contains(Self.model(for: request.config)) ? "image_to_video" : "text_to_video"
    }

    /// The script's first shot: a `SHOT …` line when the writer made shots, else its `ACTION:`
    /// line (what the user wrote), else its first line.
    static func firstShot(_ script: String) -> String {
        let lines = script.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        if let shot = lines.first(where: { $0.uppercased().hasPrefix("SHOT") }) { return shot }
        if let action = lines.first(where: { $0.hasPrefix("ACTION: ") }) { return String(action.dropFirst("ACTION: ".count)) }
        return lines.first ?? ""
    }

    /// The nearest of Runway's ratios to a PNG's own (read from its IHDR); 1280:720 otherwise.
    static func ratio(ofPNGBase64 b64: String) -> String {
        guard let head = Data(base64Encoded: String(b64.prefix(44)) + String(repeating: "=", count: (4 - min(b64.count, 44) % 4) % 4)),
              head.count >= 24, head.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) else { return "1280:720" }
        let b = [UInt8](head)
        let w = Double(UInt32(b[16]) << 24 | UInt32(b[17]) << 16 | UInt32(b[18]) << 8 | UInt32(b[19]))
        let h = Double(UInt32(b[20]) << 24 | UInt32(b[21]) << 16 | UInt32(b[22]) << 8 | UInt32(b[23]))
        guard w > 0, h > 0 else { return "1280:720" }
        let aspect = log(w / h)
        return ratios.min { r1, r2 in
            func a(_ r: String) -> Double { let p = r.split(separator: ":").compactMap { Double($0) }; return log(p[0] / p[1]) }
            return abs(a(r1) - aspect) < abs(a(r2) - aspect)
        } ?? "1280:720"
    }

    /// The body and path Runway is sent for `request` (DESIGN §5's field rules).
    func body(for request: GenerationRequest) async throws -> (path: String, body: [UInt8], model: String) {
        let model = Self.model(for: request.config)
        let duration = Self.duration(for: request.config)
        let prompt = String(request.prompt.prefix(Self.maxPromptCharacters))
        func encode(_ v: some Encodable) throws -> [UInt8] {
            do { return try RunwayWire.encode(v) } catch {
                throw ProviderError(.rejected(code: "PROVIDER_BAD_REQUEST"), "cannot encode the request: \(error)")
            }
        }
        guard kind(of: request) == "image_to_video" else {
            return ("/v1/text_to_video", try encode(RunwayWire.TextToVideoBody(model: model, promptText: prompt, ratio: "1280:720",
                                                                                 duration: duration)), model)
        }
        let image: String, ratio: String
        switch request.image {
        case .url(let u):
            image = u
            ratio = "1280:720"
        case .base64(let b):
            image = "data:image/png;base64," + b
            ratio = Self.ratio(ofPNGBase64: b)
        case nil:
            // A new scene with an image-only model starts from a title card of its first shot.
            guard let stillMaker else {
                throw ProviderError(.rejected(code: "PROVIDER_BAD_REQUEST"),
                                    "model \(model) needs an image and no still maker is configured")
            }
            let png: [UInt8]
            do { png = try await stillMaker(Self.firstShot(request.prompt)) } catch {
                throw ProviderError(.unavailable, "cannot make the title card for a new scene: \(error)")
            }
            let b64 = Data(png).base64EncodedString()
            image = "data:image/png;base64," + b64
            ratio = Self.ratio(ofPNGBase64: b64)
        }
        guard image.utf8.count <= Self.maxDataURIBytes || !image.hasPrefix("data:") else {
            throw ProviderError(.rejected(code: "PROVIDER_BAD_REQUEST"),
                                "the start image is \(image.utf8.count) bytes as a data URI, over Runway's 5 MB limit")
        }
        return ("/v1/image_to_video", try encode(RunwayWire.ImageToVideoBody(
            model: model, promptImage: image, promptText: prompt.isEmpty ? nil : prompt, ratio: ratio, duration: duration)), model)
    }

    // MARK: - VideoProvider

    public func submit(_ request: GenerationRequest) async throws -> ProviderTask {
        let kind = kind(of: request)
        let (path, body, model) = try await body(for: request)
        let response = try await call("POST", path, body: body, what: "submit", model: model)
        guard let created = try? RunwayWire.decode(RunwayWire.Created.self, from: response.body), !created.id.isEmpty else {
            let head = String(decoding: response.body.prefix(120), as: UTF8.self)
            // A 2xx that does not parse may have made the task (a cut-short answer).
            throw ProviderError(.inDoubt, "submit: Runway's answer (HTTP \(response.status)) does not parse: \(head)")
        }
        return ProviderTask(taskID: created.id, externalTaskID: request.externalTaskID, kind: kind, state: .submitted,
                            requestID: response.header("x-request-id") ?? "")
    }

    public func query(taskID: String, kind: String) async throws -> ProviderTask {
        let response: HTTPResponse
        do {
            response = try await call("GET", "/v1/tasks/\(HTTPResponse.pathSegment(taskID))", what: "query")
        } catch let e as ProviderError where e.providerCode == 404 {
            // Runway deleted it (outputs expire; a DELETE removes a finished task): it will not end well.
            return ProviderTask(taskID: taskID, kind: kind, state: .failed("Runway has no task \(taskID) (deleted or expired)"))
        }
        let t: RunwayWire.Task
        do { t = try RunwayWire.decode(RunwayWire.Task.self, from: response.body) } catch {
            let head = String(decoding: response.body.prefix(120), as: UTF8.self)
            throw ProviderError(.unavailable, "query: Runway's answer (HTTP \(response.status)) does not parse: \(head)")
        }
        return try Self.task(t, kind: kind, requestID: response.header("x-request-id") ?? "")
    }

    /// `DELETE /v1/tasks/{id}`: cancels a running task (and deletes a finished one). Best effort.
    public func cancel(taskID: String, kind: String) async {
        do {
            _ = try await call("DELETE", "/v1/tasks/\(HTTPResponse.pathSegment(taskID))", what: "cancel")
            logger.info("cancelled the task at Runway", metadata: ["reel.provider_job_id": "\(taskID)"])
        } catch {
            logger.notice("Runway did not cancel the task", metadata: ["reel.provider_job_id": "\(taskID)", "error": "\(error)"])
        }
    }

    /// No published figure; ~1 min for 5 s of output, 2 min above, until measured.
    public func expectedGenerationTime(for config: JobConfig) -> Duration {
        .seconds(Self.duration(for: config) <= 5 ? 60 : 120)
    }

    /// Credits per second of output for the model times the requested duration.
    public func charge(for config: JobConfig) -> Double? {
        let model = Self.model(for: config)
        guard let rate = creditsPerSecond[model] else { return nil }
        return rate * Double(Self.duration(for: config))
    }

    // MARK: - Calls

    /// One API call. Returns a 2xx answer, else throws the `ProviderError` it means.
    func call(_ method: String, _ path: String, body: [UInt8] = [], what: String, model: String = "") async throws -> HTTPResponse {
        var headers = ["Authorization": "Bearer \(apiKey)", "X-Runway-Version": Self.apiVersion, "Accept": "application/json"]
        if !body.isEmpty { headers["Content-Type"] = "application/json" }
        var request = HTTPRequest(method: method, url: baseURL + path, headers: headers, body: body)
        // A submit goes on a connection of its own: libcurl would silently resend it after a
        // reused connection died unanswered, and Runway cannot deduplicate (see above).
        request.freshConnection = method == "POST"
        let response: HTTPResponse
        do {
            response = try await client.send(request)
        } catch let e as HTTPClientError {
            // A submit that may have reached Runway is in doubt (there is no lookup: see above).
            throw ProviderError.noAnswer(e, method: method, what: what, provider: name, display: "Runway")
        }
        ReelMetrics.providerCall(provider: name, call: what, outcome: String(response.status))
        if (200..<300).contains(response.status) { return response }
        let said = (try? RunwayWire.decode(RunwayWire.ErrorBody.self, from: response.body))?.error
            ?? String(decoding: response.body.prefix(200), as: UTF8.self)
        throw Self.classify(status: response.status, message: said, what: what, model: model,
                            requestID: response.header("x-request-id") ?? "", retryAfter: response.retryAfter())
    }

    /// DESIGN §5's rules for Runway's answers: an answer about missing credits parks the
    /// provider, whatever its status; 401 auth; 400/404/405 rejected; 429 throttled;
    /// 5xx retried with backoff.
    static func classify(status: Int, message: String, what: String, model: String, requestID: String,
                         retryAfter: Duration?) -> ProviderError {
        let said = message.isEmpty ? "no message" : message
        func e(_ kind: ProviderError.Kind, _ text: String) -> ProviderError {
            ProviderError(kind, text, providerCode: status, requestID: requestID, retryAfter: retryAfter)
        }
        let lower = said.lowercased()
        if (400..<500).contains(status) && lower.contains("credit") {
            return e(.parked, "Runway account out of credits: \(said)")
        }
        switch status {
        case 401: return e(.auth, "Runway refused the key: \(said) (check RUNWAYML_API_SECRET)")
        case 403: return e(.rejected(code: "PROVIDER_PERMISSION"),
                           "no access to model \(model.isEmpty ? "(unnamed)" : model) or this API at Runway: \(said)")
        case 429: return e(.rateLimited, "Runway rate or daily limit: \(said)")
        case 500...: return e(.unavailable, "\(what): Runway server error: \(said)")
        default: return e(.rejected(code: "PROVIDER_BAD_REQUEST"), "\(what): Runway refused the request: \(said)")
        }
    }

    static func task(_ t: RunwayWire.Task, kind: String, requestID: String) throws -> ProviderTask {
        var state: ProviderTask.State
        var url = "", progress: Int32? = nil, rejection: String? = nil
        switch t.status {
        case "PENDING", "THROTTLED":
            // THROTTLED: accepted, waiting for one of Runway's own slots; not an error.
            state = .submitted
        case "RUNNING":
            state = .processing
            progress = t.progress.map { Int32((min(max($0, 0), 1) * 100).rounded(.down)) }
        case "SUCCEEDED":
            guard let first = t.output?.first, !first.isEmpty else {
                throw ProviderError(.unavailable, "Runway says task \(t.id) succeeded but gives no output")
            }
            state = .succeeded
            url = first
        case "FAILED":
            let code = t.failureCode ?? ""
            let msg = (t.failure.flatMap { $0.isEmpty ? nil : $0 } ?? "Runway failed the task") + (code.isEmpty ? "" : " (failureCode \(code))")
            state = .failed(msg)
            if code.hasPrefix("SAFETY") { rejection = "CONTENT_POLICY" }
        case "CANCELLED":
            state = .failed("the task was cancelled at Runway")
        default:
            throw ProviderError(.unavailable, "Runway task \(t.id) has an unknown status \"\(t.status)\"")
        }
        return ProviderTask(taskID: t.id, kind: kind, state: state, progress: progress, videoURL: url,
                            requestID: requestID, createdAtUnixMs: RunwayWire.unixMs(t.createdAt), rejectionCode: rejection)
    }


    /// `--runway-credits-per-second MODEL=C,…` over Runway's published table. Throws a readable message.
    public static func parseCredits(_ text: String) throws(ReelError) -> [String: Double] {
        try CostModel.namedNumbers(text, flag: "runway-credits-per-second", shape: "MODEL=CREDITS with CREDITS >= 0",
                                   defaults: defaultCreditsPerSecond) { $0 >= 0 }
    }
}
