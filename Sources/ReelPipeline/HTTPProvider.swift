import Foundation
import Logging
import ReelCore

/// A Kling-style REST video provider reached through libcurl (DESIGN §5):
/// `POST /v1/videos/text-to-video`, `GET /v1/videos/{id}`, `POST /v1/videos/{id}/cancel`.
///
/// 429, 5xx and transport errors are retried inside each call with exponential backoff,
/// honouring `Retry-After`; when the attempts run out the call throws a retryable
/// `StageFailure` (`PROVIDER_RATE_LIMITED`, `PROVIDER_UNAVAILABLE`). Other 4xx are final
/// (`PROVIDER_UNAUTHORIZED`, `PROVIDER_REJECTED`); a 2xx that doesn't parse is
/// `PROVIDER_BAD_RESPONSE` (retryable). Submits carry the Reel job id as
/// `external_task_id`, so the provider dedupes a retried submit instead of charging twice.
public struct HTTPProvider: VideoProvider {
    public struct Backoff: Sendable {
        /// The first retry's delay; each later one doubles, up to `cap`.
        public var base: Duration
        public var cap: Duration
        /// The longest `Retry-After` we wait out in one go.
        public var maxRetryAfter: Duration
        public init(base: Duration = .milliseconds(200), cap: Duration = .seconds(5),
                    maxRetryAfter: Duration = .seconds(60)) {
            self.base = base; self.cap = cap; self.maxRetryAfter = maxRetryAfter
        }

        func delay(afterAttempt attempt: Int) -> Duration {
            let factor = 1 << min(max(attempt - 1, 0), 20)
            return min(base * factor, cap)
        }
    }

    public let name = "http"
    public let baseURL: String
    let apiKey: String?
    let client: CurlHTTPClient
    let maxAttempts: Int
    let backoff: Backoff
    let logger: Logger

    public init(baseURL: String, apiKey: String?, client: CurlHTTPClient, maxAttempts: Int = 4,
                backoff: Backoff = Backoff(), logger: Logger) {
        var base = baseURL
        while base.hasSuffix("/") { base.removeLast() }
        self.baseURL = base
        self.apiKey = apiKey.flatMap { $0.isEmpty ? nil : $0 }
        self.client = client
        self.maxAttempts = max(1, maxAttempts)
        self.backoff = backoff
        var log = logger
        log[metadataKey: "reel.provider"] = "http"
        self.logger = log
    }

    public func submit(prompt: String, config: JobConfig, jobID: String) async throws -> String {
        let payload: [String: Any] = [
            "prompt": prompt,
            "duration": config.targetDurationSeconds > 0 ? Int(config.targetDurationSeconds) : 5,
            "quality": config.quality == .unspecified ? Quality.standard.name : config.quality.name,
            "model": config.model,
            "external_task_id": jobID,
        ]
        let body = try JSONSerialization.data(withJSONObject: payload, options: [.sortedKeys])
        // Retrying a POST is safe here: the same external_task_id yields the same task.
        let response = try await call("POST", "/v1/videos/text-to-video", body: [UInt8](body), what: "submit")
        let data = try decode(SubmitData.self, from: response, what: "submit")
        guard !data.taskId.isEmpty else { throw badResponse("submit", "empty task_id") }
        logger.info("submitted video generation", metadata: ["reel.job_id": "\(jobID)",
                                                            "reel.provider_job_id": "\(data.taskId)"])
        return data.taskId
    }

    public func poll(providerJobID: String) async throws -> ProviderStatus {
        let response = try await call("GET", "/v1/videos/\(escape(providerJobID))", what: "poll")
        let task = try decode(TaskData.self, from: response, what: "poll")
        let progress = Int32(min(max((task.progress?.value ?? 0).rounded(), 0), 100))
        switch task.taskStatus {
        case "submitted":
            return ProviderStatus(state: .pending, progress: progress)
        case "processing":
            return ProviderStatus(state: .running, progress: progress)
        case "succeed", "succeeded":
            guard let video = task.taskResult?.videos?.first, !video.url.isEmpty else {
                throw badResponse("poll", "task succeeded without a video url")
            }
            return ProviderStatus(state: .succeeded, progress: 100, videoURL: video.url,
                                  durationSeconds: video.duration?.value ?? 0)
        case "failed":
            let why = task.taskStatusMsg.flatMap { $0.isEmpty ? nil : $0 } ?? "the provider reported a failure"
            return ProviderStatus(state: .failed(why), progress: progress)
        case "cancelled", "canceled":
            let why = task.taskStatusMsg.flatMap { $0.isEmpty ? nil : $0 } ?? "no reason given"
            return ProviderStatus(state: .failed("cancelled at the provider: \(why)"), progress: progress)
        default:
            throw badResponse("poll", "unknown task_status \"\(task.taskStatus)\"")
        }
    }

    /// Best effort: a provider that can't cancel (finished, unknown task, down) is logged.
    public func cancel(providerJobID: String) async {
        var log = logger
        log[metadataKey: "reel.provider_job_id"] = "\(providerJobID)"
        do {
            let response = try await call("POST", "/v1/videos/\(escape(providerJobID))/cancel", what: "cancel",
                                          attempts: min(maxAttempts, 2), accept: [404, 409])
            switch response.status {
            case 409: log.info("provider job already finished; nothing to cancel")
            case 404: log.warning("provider does not know the job it was asked to cancel")
            default: log.info("provider job cancelled")
            }
        } catch {
            log.warning("could not cancel provider job", metadata: ["error": "\(error)"])
        }
    }

    // MARK: - Calls and retries

    /// Sends one API call, retrying 429/5xx/transport errors; returns a 2xx response (or one
    /// whose status is in `accept`), else throws a `Pipeline.StageFailure`.
    func call(_ method: String, _ path: String, body: [UInt8] = [], what: String, attempts: Int? = nil,
              accept: Set<Int> = []) async throws -> HTTPResponse {
        var headers = ["Accept": "application/json"]
        if !body.isEmpty || method == "POST" { headers["Content-Type"] = "application/json" }
        if let apiKey { headers["Authorization"] = "Bearer \(apiKey)" }
        let request = HTTPRequest(method: method, url: baseURL + path, headers: headers, body: body)
        let attempts = attempts ?? maxAttempts

        var failure = Pipeline.StageFailure(code: "PROVIDER_UNAVAILABLE", message: "\(what): no attempt made",
                                            retryable: true)
        for attempt in 1...attempts {
            var wait = backoff.delay(afterAttempt: attempt)
            do {
                let response = try await client.send(request)
                let status = response.status
                if (200..<300).contains(status) || accept.contains(status) { return response }
                let detail = Self.providerMessage(response)
                switch status {
                case 429:
                    failure = .init(code: "PROVIDER_RATE_LIMITED",
                                    message: "\(what): rate limited by the provider after \(attempt) attempt(s) (HTTP 429)",
                                    retryable: true)
                    if let after = retryAfter(response) { wait = after }
                case 408, 500...:
                    failure = .init(code: "PROVIDER_UNAVAILABLE",
                                    message: "\(what): provider error after \(attempt) attempt(s): HTTP \(status)\(detail.suffix)",
                                    retryable: true)
                case 401:
                    throw Pipeline.StageFailure(code: "PROVIDER_UNAUTHORIZED",
                                                message: "\(what): \(detail.text ?? "unauthorized") (HTTP 401; check REEL_PROVIDER_KEY)",
                                                retryable: false)
                default:
                    throw Pipeline.StageFailure(code: "PROVIDER_REJECTED",
                                                message: "\(what): \(detail.text ?? "rejected") (HTTP \(status)\(detail.codeSuffix))",
                                                retryable: false)
                }
            } catch let e as HTTPClientError {
                failure = .init(code: "PROVIDER_UNAVAILABLE",
                                message: "\(what): provider unreachable after \(attempt) attempt(s): \(e.message)",
                                retryable: true)
            }
            guard attempt < attempts else { break }
            logger.notice("provider call failed; retrying", metadata: [
                "reel.provider_call": "\(what)", "error.code": "\(failure.code)", "error": "\(failure.message)",
                "retry.attempt": "\(attempt)", "retry.delay_ms": "\(wait.wholeMilliseconds)",
            ])
            try await Task.sleep(for: wait)
        }
        throw failure
    }

    /// `Retry-After` as delta-seconds or an HTTP date, capped at `backoff.maxRetryAfter`.
    func retryAfter(_ response: HTTPResponse) -> Duration? {
        guard let raw = response.header("retry-after")?.trimmingCharacters(in: .whitespaces), !raw.isEmpty else {
            return nil
        }
        var seconds: Double?
        if let s = Double(raw), s.isFinite {
            seconds = s
        } else {
            let f = DateFormatter()
            f.locale = Locale(identifier: "en_US_POSIX")
            f.timeZone = TimeZone(identifier: "GMT")
            f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
            if let date = f.date(from: raw) { seconds = date.timeIntervalSinceNow }
        }
        guard let s = seconds else { return nil }
        return min(.milliseconds(Int64(max(s, 0) * 1000)), backoff.maxRetryAfter)
    }

    private struct ProviderMessage {
        var text: String?
        var code: Int?
        var suffix: String { text.map { ": \($0)" } ?? "" }
        var codeSuffix: String { code.map { ", provider code \($0)" } ?? "" }
    }

    /// The provider's own words from an error body: its JSON `message`, else the body text.
    private static func providerMessage(_ response: HTTPResponse) -> ProviderMessage {
        if let envelope = try? JSONDecoder().decode(ErrorEnvelope.self, from: Data(response.body)) {
            return ProviderMessage(text: envelope.message, code: envelope.code)
        }
        let text = String(decoding: response.body.prefix(200), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return ProviderMessage(text: text.isEmpty ? nil : text, code: nil)
    }

    private func decode<T: Decodable>(_ type: T.Type, from response: HTTPResponse, what: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let envelope: Envelope<T>
        do {
            envelope = try decoder.decode(Envelope<T>.self, from: Data(response.body))
        } catch {
            let head = String(decoding: response.body.prefix(120), as: UTF8.self)
            throw badResponse(what, "HTTP \(response.status) body does not parse (\(Self.describe(error))): \(head)")
        }
        if let code = envelope.code, code != 0 {
            throw badResponse(what, "provider code \(code): \(envelope.message ?? "no message")")
        }
        guard let data = envelope.data else { throw badResponse(what, "no data in the response") }
        return data
    }

    private func badResponse(_ what: String, _ why: String) -> Pipeline.StageFailure {
        .init(code: "PROVIDER_BAD_RESPONSE", message: "\(what): \(why)", retryable: true)
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "missing \(key.stringValue)"
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            "bad \(c.codingPath.map(\.stringValue).joined(separator: "."))"
        case DecodingError.dataCorrupted: "not JSON"
        default: "\(error)"
        }
    }

    private func escape(_ id: String) -> String {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "/?#")
        return id.addingPercentEncoding(withAllowedCharacters: allowed) ?? id
    }
}

// MARK: - Wire shapes

private struct Envelope<T: Decodable>: Decodable {
    var code: Int?
    var message: String?
    var data: T?
}

private struct ErrorEnvelope: Decodable {
    var code: Int?
    var message: String?
}

private struct SubmitData: Decodable {
    var taskId: String
}

private struct TaskData: Decodable {
    var taskStatus: String
    var taskStatusMsg: String?
    var progress: LenientNumber?
    var taskResult: TaskResult?

    struct TaskResult: Decodable {
        var videos: [Video]?
    }

    struct Video: Decodable {
        var url: String
        var duration: LenientNumber?
    }
}

/// Kling sends some numbers as strings ("duration": "5.0"); accept either.
private struct LenientNumber: Decodable {
    var value: Double
    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let d = try? c.decode(Double.self) {
            value = d
        } else if let s = try? c.decode(String.self), let d = Double(s.trimmingCharacters(in: .whitespaces)) {
            value = d
        } else {
            throw DecodingError.typeMismatch(Double.self, .init(codingPath: c.codingPath,
                                                                debugDescription: "expected a number"))
        }
    }
}
