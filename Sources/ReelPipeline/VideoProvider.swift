import ReelCore
import ReelObservability
import Synchronization

/// One attempt's request to a video provider (DESIGN §5).
public struct GenerationRequest: Sendable, Equatable {
    public var prompt: String
    public var negativePrompt: String
    public var config: JobConfig
    /// `reel-<job id>-<attempt>`: the provider dedupes on it, and a lost answer is found by it.
    public var externalTaskID: String
    /// Where the provider POSTs status changes (nil: no callbacks, polling only).
    public var callbackURL: String?
    /// The picture a continuation starts from (the previous segment's last frame).
    public var image: SourceImage?

    public init(prompt: String, negativePrompt: String = "", config: JobConfig, externalTaskID: String,
                callbackURL: String? = nil, image: SourceImage? = nil) {
        self.prompt = prompt; self.negativePrompt = negativePrompt; self.config = config
        self.externalTaskID = externalTaskID; self.callbackURL = callbackURL; self.image = image
    }
}

/// An image for image-to-video: a URL the provider can fetch, or the bytes as plain base64.
public enum SourceImage: Sendable, Equatable {
    case url(String)
    case base64(String)
}

/// A provider's task as it last answered (a submit, a query or a callback).
public struct ProviderTask: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        case submitted, processing, succeeded
        case failed(String)

        public var hasEnded: Bool {
            switch self {
            case .succeeded, .failed: true
            case .submitted, .processing: false
            }
        }
    }
    public var taskID: String
    public var externalTaskID: String
    /// The endpoint family the task lives under (Kling: `text2video` or `image2video`).
    public var kind: String
    public var state: State
    /// 0–100 when the provider reports progress (Kling does not; the simulation does).
    public var progress: Int32?
    public var videoURL: String
    public var durationSeconds: Double
    /// The provider's charge in its own unit, once it says (Kling: `final_unit_deduction`).
    public var costUnits: Double?
    /// The provider's id of the answer this came in (empty for callbacks).
    public var requestID: String
    /// When the provider created the task (0: unknown).
    public var createdAtUnixMs: Int64
    /// A failed task the provider refused for good (Runway's `SAFETY.*` failure codes): the
    /// error code the job fails with at once, not retried. Nil: an ordinary failed task.
    public var rejectionCode: String?

    public init(taskID: String, externalTaskID: String = "", kind: String = "", state: State, progress: Int32? = nil,
                videoURL: String = "", durationSeconds: Double = 0, costUnits: Double? = nil, requestID: String = "",
                createdAtUnixMs: Int64 = 0, rejectionCode: String? = nil) {
        self.taskID = taskID; self.externalTaskID = externalTaskID; self.kind = kind; self.state = state
        self.progress = progress
        self.videoURL = videoURL; self.durationSeconds = durationSeconds; self.costUnits = costUnits
        self.requestID = requestID; self.createdAtUnixMs = createdAtUnixMs; self.rejectionCode = rejectionCode
    }
}

/// What a provider's answer means for Reel, classified by the provider's own error code
/// (DESIGN §5: never by the HTTP status alone).
public struct ProviderError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Kind: Sendable, Equatable {
        /// Account-level trouble (out of credit, arrears, IP not allowed): jobs wait, nothing fails.
        case parked
        /// Rate limit: wait and resubmit, no attempt burned.
        case rateLimited
        /// The account's concurrent-task limit: wait and resubmit, no attempt burned.
        case concurrency
        /// Refused for good: the job fails at once with this error code, not retried.
        case rejected(code: String)
        /// The credentials are refused (after one token renewal).
        case auth
        /// A server error: retry with backoff.
        case unavailable
        /// The answer was lost or cut short after the request went out: the task may exist.
        case inDoubt
        /// A submit carrying an external id was refused as a bad request: the id may be taken
        /// by a task this attempt made earlier.
        case externalIDTaken
    }
    public var kind: Kind
    public var message: String
    public var providerCode: Int?
    public var requestID: String
    public var retryAfter: Duration?

    public init(_ kind: Kind, _ message: String, providerCode: Int? = nil, requestID: String = "",
                retryAfter: Duration? = nil) {
        self.kind = kind; self.message = message; self.providerCode = providerCode; self.requestID = requestID
        self.retryAfter = retryAfter
    }

    public var description: String {
        "\(message)" + (providerCode.map { " (code \($0))" } ?? "") + (requestID.isEmpty ? "" : " [request_id \(requestID)]")
    }
}

/// A video-generation provider (DESIGN §5): submit, then follow the task by callback and/or
/// polling until it ends. Every error is a `ProviderError`.
public protocol VideoProvider: Sendable {
    var name: String { get }
    /// A paid service with an account (slots, external ids, callbacks); false for the simulation.
    var isRemote: Bool { get }
    func submit(_ request: GenerationRequest) async throws -> ProviderTask
    func query(taskID: String, kind: String) async throws -> ProviderTask
    /// The task this external id made, or nil when the provider has none.
    func find(externalTaskID: String, kind: String) async throws -> ProviderTask?
    /// The endpoint family a request goes to.
    func kind(of request: GenerationRequest) -> String
    /// Best effort; a provider without a cancel call does nothing.
    func cancel(taskID: String, kind: String) async
    /// A callback's body as a task (the provider's own shape), or nil when it is not one.
    func parseCallback(_ body: [UInt8]) -> ProviderTask?
    /// How long a generation of this config is expected to take before anything is measured.
    func expectedGenerationTime(for config: JobConfig) -> Duration
    /// Whether `find` can look a task up by the attempt's external id. Without it (Runway has
    /// no external id) an answer lost after a submit went out cannot be resolved: the attempt
    /// fails as in doubt instead of submitting again (a task is never paid for twice).
    var findsByExternalID: Bool { get }
    /// What a task of this config costs in the provider's own unit, for a provider whose tasks
    /// do not report their charge (Runway: credits per second of output); nil when they do.
    func charge(for config: JobConfig) -> Double?
}

/// What a provider without the capability answers: no lookup by external id, one endpoint
/// family named after it, no cancel call, no callbacks, no expected time.
extension VideoProvider {
    public func find(externalTaskID: String, kind: String) async throws -> ProviderTask? { nil }
    public func kind(of request: GenerationRequest) -> String { name }
    public func cancel(taskID: String, kind: String) async {}
    public func parseCallback(_ body: [UInt8]) -> ProviderTask? { nil }
    public func expectedGenerationTime(for config: JobConfig) -> Duration { .zero }
    public var findsByExternalID: Bool { false }
    public func charge(for config: JobConfig) -> Double? { nil }
}

/// In-process, deterministic provider for demos and benchmarks: each generation takes
/// `pollsToFinish` polls, each `--sim-stage-ms` apart.
/// A job whose `config.model` is `simulated-failure` fails at the provider on every attempt,
/// so retries and dead-lettering can be shown without a real provider.
public final class SimulatedProvider: VideoProvider {
    public let name = "simulated"
    public let isRemote = false
    public let pollsToFinish: Int
    public static let failingModel = "simulated-failure"
    /// Polls seen per task (dropped when the task ends; a restart just counts again).
    private let polls = Mutex<[String: Int]>([:])

    public init(pollsToFinish: Int = 4) { self.pollsToFinish = max(1, pollsToFinish) }

    public func submit(_ request: GenerationRequest) async throws -> ProviderTask {
        let kind = request.config.model == Self.failingModel ? "simfail" : "sim"
        let id = kind + "-" + Hashing.sha256Hex(request.externalTaskID + ":" + request.prompt).prefix(16)
        return ProviderTask(taskID: id, externalTaskID: request.externalTaskID, kind: name, state: .submitted)
    }

    public func query(taskID: String, kind: String) async throws -> ProviderTask {
        if taskID.hasPrefix("simfail-") {
            polls.withLock { _ = $0.removeValue(forKey: taskID) }
            return ProviderTask(taskID: taskID, kind: kind,
                                state: .failed("simulated provider failure (model \(Self.failingModel))"))
        }
        let n = polls.withLock { p -> Int in
            let n = (p[taskID] ?? 0) + 1
            if n >= pollsToFinish { p.removeValue(forKey: taskID) } else { p[taskID] = n }
            return n
        }
        if n >= pollsToFinish {
            let name = taskID.split(separator: "-").dropFirst().first.map(String.init) ?? taskID
            return ProviderTask(taskID: taskID, kind: kind, state: .succeeded, progress: 100, videoURL: "sim://videos/\(name).mp4",
                                durationSeconds: 5)
        }
        return ProviderTask(taskID: taskID, kind: kind, state: .processing, progress: Int32(n * 100 / pollsToFinish))
    }

    public func cancel(taskID: String, kind: String) async { polls.withLock { _ = $0.removeValue(forKey: taskID) } }

    /// Polls seen for `taskID` so far (tests).
    func pollCount(_ taskID: String) -> Int { polls.withLock { $0[taskID] ?? 0 } }
}

extension ProviderError {
    /// A call to `provider` (shown as `display`) that got no answer: a submit (a POST) that may
    /// have reached it is in doubt; one that was never sent, and any other call, is
    /// unavailable. Counted as a `transport` outcome.
    static func noAnswer(_ e: HTTPClientError, method: String, what: String, provider: String, display: String) -> ProviderError {
        ReelMetrics.providerCall(provider: provider, call: what, outcome: "transport")
        let neverSent = e.code == .couldNotConnect || e.code == .couldNotResolve || e.code == .unsupportedURL
        return ProviderError(method == "POST" && !neverSent ? .inDoubt : .unavailable, "\(what): no answer from \(display): \(e.message)")
    }
}
