import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import Prometheus

/// Reel's HTTP/1.1 side (Hummingbird): `/metrics` in Prometheus text format, `/healthz`, and
/// with a `JobAPI` the JSON API, Server-Sent Events, the `/v1/ws` WebSocket and the dashboard.
public struct WebServer: Sendable {
    let host: String
    let port: Int
    let registry: PrometheusCollectorRegistry
    let healthy: @Sendable () -> Bool
    let api: JobAPI?
    let logger: Logger

    public init(host: String, port: Int, registry: PrometheusCollectorRegistry, logger: Logger,
                api: JobAPI? = nil, healthy: @escaping @Sendable () -> Bool) {
        self.host = host; self.port = port; self.registry = registry; self.logger = logger; self.api = api
        self.healthy = healthy
    }

    /// Serves until the task is cancelled. `onRunning` gets the bound port.
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let router = Router(context: BasicWebSocketRequestContext.self)
        router.middlewares.add(ErrorJSONMiddleware(logger: logger))
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
        let configuration = ApplicationConfiguration(address: .hostname(host, port: port), serverName: "reeld")
        let running: @Sendable (any Channel) async -> Void = { channel in await onRunning(channel.localAddress?.port ?? 0) }
        if let api {
            api.addRoutes(to: router)
            Dashboard.addRoutes(to: router)
            router.get("/v1/ws") { _, _ -> Response in
                ErrorJSON.response(status: .upgradeRequired, code: "UPGRADE_REQUIRED",
                                   message: "/v1/ws is a WebSocket: send Upgrade: websocket")
            }
            let socket = JobUpdatesSocket(api: api)
            let wsRouter = Router(context: BasicWebSocketRequestContext.self)
            wsRouter.ws("/v1/ws") { inbound, outbound, context in
                try await socket.handle(inbound, outbound, context)
            }
            let ws = WebSocketServerConfiguration(maxFrameSize: JobUpdatesSocket.maxMessageBytes,
                                                  autoPing: .enabled(timePeriod: .seconds(30)), closeTimeout: .seconds(5))
            try await Application(
                router: router, server: .http1WebSocketUpgrade(webSocketRouter: wsRouter, configuration: .init(ws: ws)),
                configuration: configuration, onServerRunning: running, logger: webLogger
            ).run()
        } else {
            try await Application(router: router, configuration: configuration, onServerRunning: running, logger: webLogger).run()
        }
    }
}
