import ReelCore

/// A video-generation provider: submit, then poll until done (DESIGN §5).
public protocol VideoProvider: Sendable {
    var name: String { get }
    /// Submits a generation; returns the provider's job id (saved before polling starts).
    func submit(prompt: String, config: JobConfig, jobID: String) async throws -> String
    func poll(providerJobID: String) async throws -> ProviderStatus
    func cancel(providerJobID: String) async
}

public struct ProviderStatus: Sendable, Equatable {
    public enum State: Sendable, Equatable { case pending, running, succeeded, failed(String) }
    public var state: State
    /// 0–100 as the provider reports it.
    public var progress: Int32
    public var videoURL: String
    public var durationSeconds: Double

    public init(state: State, progress: Int32, videoURL: String = "", durationSeconds: Double = 0) {
        self.state = state; self.progress = progress; self.videoURL = videoURL; self.durationSeconds = durationSeconds
    }
}

/// In-process, deterministic provider for demos and benchmarks: each generation takes
/// `pollsToFinish` polls, each `stepDelay` apart (set by `--sim-stage-ms`).
/// A job whose `config.model` is `simulated-failure` fails at the provider on every attempt,
/// so retries and dead-lettering can be shown without a real provider.
public struct SimulatedProvider: VideoProvider {
    public let name = "simulated"
    public let pollsToFinish: Int32
    public static let failingModel = "simulated-failure"

    public init(pollsToFinish: Int32 = 4) { self.pollsToFinish = max(1, pollsToFinish) }

    public func submit(prompt: String, config: JobConfig, jobID: String) async throws -> String {
        let kind = config.model == Self.failingModel ? "simfail" : "sim"
        return kind + "-" + SHA256.hexDigest(jobID + ":" + prompt).prefix(16) + "-0"
    }

    /// The id carries the poll count so the simulation needs no shared state.
    public func poll(providerJobID: String) async throws -> ProviderStatus {
        if providerJobID.hasPrefix("simfail-") {
            return ProviderStatus(state: .failed("simulated provider failure (model \(Self.failingModel))"), progress: 0)
        }
        let n = (Int32(providerJobID.split(separator: "-").last ?? "0") ?? 0) + 1
        if n >= pollsToFinish {
            return ProviderStatus(state: .succeeded, progress: 100,
                                  videoURL: "sim://videos/\(providerJobID.split(separator: "-")[1]).mp4", durationSeconds: 5)
        }
        return ProviderStatus(state: .running, progress: n * 100 / pollsToFinish)
    }

    public func cancel(providerJobID: String) async {}

    /// The id to poll next time (the simulation's "state").
    public static func advance(_ id: String) -> String {
        var parts = id.split(separator: "-").map(String.init)
        let n = (Int(parts.last ?? "0") ?? 0) + 1
        parts[parts.count - 1] = String(n)
        return parts.joined(separator: "-")
    }
}
