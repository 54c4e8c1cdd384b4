import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle

/// Reel's HTTP/1.1 side (Hummingbird): `/metrics` in Prometheus text format, `/healthz`, and
/// with a `JobAPI` the JSON API, Server-Sent Events, the `/v1/ws` WebSocket and, given its
/// files, the dashboard.
public struct WebServer: Sendable {
    let host: String
    let port: Int
    let registry: PrometheusCollectorRegistry
    let healthy: @Sendable () -> Bool
    let api: JobAPI?
    let dashboard: Dashboard?
    let logger: Logger
    let onRunning: @Sendable (Int) async -> Void
    /// How long a graceful shutdown may wait for open requests (an SSE or WebSocket client
    /// would hold it open for ever) before they are cut.
    let shutdownGrace: Duration

    /// `onRunning` gets the bound port.
    public init(host: String, port: Int, registry: PrometheusCollectorRegistry, logger: Logger,
                api: JobAPI? = nil, dashboard: Dashboard? = nil, shutdownGrace: Duration = .seconds(2),
                healthy: @escaping @Sendable () -> Bool, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) {
        self.host = host; self.port = port; self.registry = registry; self.logger = logger; self.api = api
        self.dashboard = dashboard
        self.shutdownGrace = shutdownGrace; self.healthy = healthy; self.onRunning = onRunning
    }

    /// Serves until graceful shutdown (of the service group running it) or cancellation.
    public func run() async throws {
        let onRunning = self.onRunning
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
            dashboard?.addRoutes(to: router)
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
            try await serve(Application(
                router: router, server: .http1WebSocketUpgrade(webSocketRouter: wsRouter, configuration: .init(ws: ws)),
                configuration: configuration, onServerRunning: running, logger: webLogger
            ), logger: webLogger)
        } else {
            try await serve(Application(router: router, configuration: configuration, onServerRunning: running, logger: webLogger),
                            logger: webLogger)
        }
    }

    /// Runs `app` in a group of its own, so that a graceful shutdown waits `shutdownGrace` at
    /// most for open requests, then cuts them.
    private func serve(_ app: some Service, logger: Logger) async throws {
        var config = ServiceGroupConfiguration(services: [app], logger: logger)
        config.maximumGracefulShutdownDuration = shutdownGrace
        try await ServiceGroup(configuration: config).run()
    }
}

extension WebServer: Service {}
