import Hummingbird
import HummingbirdWebSocket

/// The dashboard at `/`: plain HTML, CSS and JavaScript shipped inside the binary (no CDN,
/// works offline). It speaks only the public JSON API, SSE and the `/v1/ws` WebSocket.
enum Dashboard {
    static func addRoutes(to router: Router<BasicWebSocketRequestContext>) {
        router.get("/") { _, _ in asset(DashboardAssets.html, "text/html; charset=utf-8") }
        router.get("/index.html") { _, _ in asset(DashboardAssets.html, "text/html; charset=utf-8") }
        router.get("/dashboard.css") { _, _ in asset(DashboardAssets.css, "text/css; charset=utf-8") }
        router.get("/dashboard.js") { _, _ in asset(DashboardAssets.js, "text/javascript; charset=utf-8") }
        router.get("/favicon.ico") { _, _ in asset(DashboardAssets.favicon, "image/svg+xml") }
    }

    static func asset(_ text: String, _ type: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.cacheControl] = "no-cache"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}
