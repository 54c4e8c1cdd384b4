import Logging
import ServiceLifecycle

/// A part reeld started before the group runs (so that start-up keeps its order), stopped by
/// `stop` when the group shuts down gracefully.
struct StopOnShutdown: Service {
    let stop: @Sendable () async -> Void
    init(_ stop: @escaping @Sendable () async -> Void) { self.stop = stop }

    func run() async throws {
        try? await gracefulShutdown()
        await stop()
    }
}

/// Runs `body` every `interval` (with a tick count from 1) until graceful shutdown.
struct Every: Service {
    let interval: Duration
    let body: @Sendable (Int) async -> Void
    init(_ interval: Duration, _ body: @escaping @Sendable (Int) async -> Void) { self.interval = interval; self.body = body }

    func run() async throws {
        await cancelWhenGracefulShutdown {
            var tick = 0
            while !Task.isCancelled {
                tick += 1
                await body(tick)
                try? await Task.sleep(for: interval)
            }
        }
    }
}

/// A listener whose failure (an address in use) is logged and leaves the rest of reeld running.
struct LoggingFailure<S: Service>: Service {
    let service: S
    let what: String
    let logger: Logger
    init(_ service: S, what: String, logger: Logger) { self.service = service; self.what = what; self.logger = logger }

    func run() async throws {
        do { try await service.run() } catch is CancellationError {} catch {
            logger.error("\(what) stopped", metadata: ["error": "\(error)"])
        }
    }
}
