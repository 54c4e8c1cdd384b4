import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import Synchronization

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
    let stopper: WebServerStopper?

    /// `stopper` lets the owner stop the server gracefully instead of cancelling it.
    public init(host: String, port: Int, registry: PrometheusCollectorRegistry, logger: Logger,
                api: JobAPI? = nil, dashboard: Dashboard? = nil, stopper: WebServerStopper? = nil,
                healthy: @escaping @Sendable () -> Bool) {
        self.host = host; self.port = port; self.registry = registry; self.logger = logger; self.api = api
        self.dashboard = dashboard
        self.stopper = stopper; self.healthy = healthy
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

    /// Runs `app` in a service group that stops gracefully when `stopper` says so (reeld handles
    /// the signals itself), or at once when the task is cancelled.
    private func serve(_ app: some Service, logger: Logger) async throws {
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: [app], logger: logger))
        if let stopper, !stopper.attach(group) { return }
        try await group.run()
    }
}

/// Asks running `WebServer`s to stop gracefully: no new connections, requests in flight finish.
public final class WebServerStopper: Sendable {
    private struct State {
        var groups: [ServiceGroup] = []
        var stopped = false
    }
    private let state = Mutex(State())

    public init() {}

    public func stop() async {
        let groups = state.withLock { s -> [ServiceGroup] in
            s.stopped = true
            return s.groups
        }
        for g in groups { await g.triggerGracefulShutdown() }
    }

    /// False when `stop` came first (then the server doesn't start).
    func attach(_ group: ServiceGroup) -> Bool {
        state.withLock { s in
            if s.stopped { return false }
            s.groups.append(group)
            return true
        }
    }
}
