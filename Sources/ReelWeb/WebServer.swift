import Hummingbird
import Logging
import Prometheus

/// Reel's HTTP/1.1 side (Hummingbird): `/metrics` in Prometheus text format, `/healthz`.
public struct WebServer: Sendable {
    let host: String
    let port: Int
    let registry: PrometheusCollectorRegistry
    let healthy: @Sendable () -> Bool
    let logger: Logger

    public init(host: String, port: Int, registry: PrometheusCollectorRegistry, logger: Logger,
                healthy: @escaping @Sendable () -> Bool) {
        self.host = host; self.port = port; self.registry = registry; self.logger = logger; self.healthy = healthy
    }

    /// Serves until the task is cancelled. `onRunning` gets the bound port.
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let router = Router()
        let registry = self.registry
        router.get("/metrics") { _, _ -> Response in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
        let healthy = self.healthy
        router.get("/healthz") { _, _ -> Response in
            let ok = healthy()
            return Response(status: ok ? .ok : .serviceUnavailable,
                            body: .init(byteBuffer: ByteBuffer(string: ok ? "SERVING\n" : "NOT_SERVING\n")))
        }
        var webLogger = logger
        webLogger.logLevel = max(logger.logLevel, .warning)
        let app = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "reeld"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: webLogger)
        try await app.run()
    }
}
