import Foundation
import Hummingbird
import HummingbirdWebSocket
import ReelCore

/// The dashboard at `/`: plain HTML, CSS and JavaScript (no CDN, works offline) from
/// `Dashboard/` in this module's resource bundle, read once at start. It speaks only the public
/// JSON API, SSE and the `/v1/ws` WebSocket: live updates come from the WebSocket, per-job
/// Server-Sent Events when it can't connect, polling `GET /v1/jobs/{id}` when neither works.
public struct Dashboard: Sendable {
    /// Each file under `Dashboard/`, the routes that serve it and its content type.
    static let files: [(name: String, routes: [String], type: String)] = [
        ("index.html", ["/", "/index.html"], "text/html; charset=utf-8"),
        ("dashboard.css", ["/dashboard.css"], "text/css; charset=utf-8"),
        ("dashboard.js", ["/dashboard.js"], "text/javascript; charset=utf-8"),
        ("favicon.svg", ["/favicon.ico"], "image/svg+xml"),
    ]

    /// The directory SwiftPM builds next to the executable (Bundle.module's first place to look).
    #if canImport(Darwin)
    public static let bundleName = "Reel_ReelWeb.bundle"
    #else
    public static let bundleName = "Reel_ReelWeb.resources"
    #endif

    let bodies: [String: ByteBuffer]

    /// Reads the files. `Bundle.module` traps when its bundle is missing, so the bundle's
    /// place is checked first and a missing bundle or file is an error that says where.
    public static func load() throws(ReelError) -> Dashboard {
        let bundle = Bundle.main.bundleURL.appendingPathComponent(bundleName).path
        guard FileManager.default.fileExists(atPath: bundle) else {
            throw ReelError(.failedPrecondition, "the dashboard's files are missing: no \(bundle) (copy the "
                            + "\(bundleName) directory from the build's bin directory next to the executable)")
        }
        var bodies: [String: ByteBuffer] = [:]
        for file in files {
            guard let url = Bundle.module.url(forResource: file.name, withExtension: nil, subdirectory: "Dashboard"),
                  let data = FileManager.default.contents(atPath: url.path) else {
                throw ReelError(.failedPrecondition, "the dashboard's file Dashboard/\(file.name) is missing from \(bundle)")
            }
            bodies[file.name] = ByteBuffer(bytes: data)
        }
        return Dashboard(bodies: bodies)
    }

    func addRoutes(to router: Router<BasicWebSocketRequestContext>) {
        for file in Self.files {
            let body = bodies[file.name, default: ByteBuffer()]
            let headers: HTTPFields = [.contentType: file.type, .cacheControl: "no-cache"]
            for route in file.routes {
                router.get(RouterPath(route)) { _, _ in
                    Response(status: .ok, headers: headers, body: .init(byteBuffer: body))
                }
            }
        }
    }
}
