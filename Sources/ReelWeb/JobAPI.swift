import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import ReelCore
import ReelJSON
import ReelService
import ReelWire

/// DESIGN §2 as JSON over HTTP/1.1: decode JSON → `JobOperations` → encode JSON. The gRPC
/// routes call the same operations, so validation, errors and tenancy are the same on both.
public struct JobAPI: Sendable {
    let operations: JobOperations
    let auth: Authenticator
    let logger: Logger
    /// Largest request body accepted (larger: 413).
    public var maxBodyBytes = 256 * 1024
    /// WebSocket: subscriptions per connection, and how long one write may wait for a client
    /// that does not read before the connection is dropped.
    public var maxSubscriptionsPerSocket = 100
    public var socketWriteTimeout: Duration = .seconds(10)
    /// Where `file://` artifacts live (`--artifacts-dir`), served by `/v1/media`.
    public var artifactsDir: String?
    /// Reads artifacts of a shared store (`s3://…` URLs) for `/v1/media`: given a URL, the job
    /// it belongs to and a reader of its bytes (nil: no such artifact), or nil when the URL
    /// is not the store's.
    public var artifactReader: ArtifactReader?
    public typealias ArtifactReader = @Sendable (_ url: String) -> (jobID: String, read: @Sendable () async throws -> [UInt8]?)?
    /// An SSE stream with nothing to say sends a comment this often, so proxies keep it open
    /// and a client that vanished is noticed.
    public var sseKeepAlive: Duration = .seconds(15)
    /// Event lines an SSE client may be behind before its stream ends (it resumes with Last-Event-ID).
    public var sseBuffer = 256
    /// A provider's callback POST (`/v1/providers/{provider}/callback/{token}`, DESIGN §5):
    /// provider name, token and body in, HTTP status and a short message out. Nil: 404.
    public var providerCallback: (@Sendable (_ provider: String, _ token: String, _ body: [UInt8]) async -> (Int, String))?

    /// A job's completion-webhook deliveries (`GET /v1/jobs/{id}/webhooks`), once the caller
    /// may see the job. Nil: an empty list.
    public var webhookDeliveries: (@Sendable (_ jobID: String) async throws -> [WebhookDelivery])?
    /// The real providers' states in order of preference (`GET /v1/providers`); nil: none.
    public var providers: (@Sendable () async -> [ProviderStatus])?

    public init(operations: JobOperations, auth: Authenticator, logger: Logger) {
        self.operations = operations; self.auth = auth; self.logger = logger
    }

    typealias Context = BasicWebSocketRequestContext

    func addRoutes(to router: Router<Context>) {
        let api = self
        router.post("/v1/jobs") { req, ctx in try await api.create(req, ctx) }
        router.get("/v1/jobs") { req, ctx in try await api.list(req, ctx) }
        router.get("/v1/jobs/{id}") { req, ctx in try await api.get(req, ctx) }
        router.get("/v1/jobs/{id}/events") { req, ctx in try await api.events(req, ctx) }
        router.get("/v1/jobs/{id}/webhooks") { req, ctx in try await api.webhooks(req, ctx) }
        router.get("/v1/providers") { req, ctx in try await api.providerStates(req, ctx) }
        // `POST /v1/jobs/{id}:cancel`, `…:retry`: the verb rides in the last path segment.
        router.post("/v1/jobs/{id}") { req, ctx in try await api.action(req, ctx) }
        // Providers call back with the attempt's unguessable token in the path, not an API key.
        let callback = providerCallback
        router.post("/v1/providers/{provider}/callback/{token}") { req, ctx -> Response in
            let provider = ctx.parameters.get("provider") ?? ""
            let token = ctx.parameters.get("token") ?? ""
            guard let callback else {
                return ErrorJSON.response(status: .notFound, code: "NOT_FOUND", message: "no provider takes callbacks here")
            }
            let body: ByteBuffer
            var req = req
            do { body = try await req.collectBody(upTo: 1 << 20) } catch {
                return ErrorJSON.response(status: .contentTooLarge, code: "PAYLOAD_TOO_LARGE", message: "callback body over 1 MiB")
            }
            let (status, message) = await callback(provider, token, Array(buffer: body))
            if status == 200 {
                return Response(status: .ok, headers: [.contentType: "application/json"],
                                body: .init(byteBuffer: ByteBuffer(string: JSONCoding.encode(["ok": true]))))
            }
            let code = switch status {
            case 404: "NOT_FOUND"
            case 409: "FAILED_PRECONDITION"
            case 400: "INVALID_ARGUMENT"
            default: "UNAVAILABLE"
            }
            return ErrorJSON.response(status: HTTPResponse.Status(code: status), code: code, message: message)
        }
        let media = MediaRoute(api: self, artifactsDir: artifactsDir, artifactReader: artifactReader)
        router.get("/v1/media") { req, ctx in try await media.handle(req, ctx) }
    }

    // MARK: callers

    /// The caller, from `Authorization: Bearer <key>`; where browsers can't set headers
    /// (EventSource, WebSocket) also from `?access_token=<key>`.
    func caller(_ req: Request, allowQueryToken: Bool = false) async throws -> Caller {
        var metadata: [String: String] = [:]
        if let h = req.headers[.authorization] {
            metadata["authorization"] = h
        } else if allowQueryToken, let t = req.uri.queryParameters["access_token"], !t.isEmpty {
            metadata["authorization"] = "Bearer \(t)"
        }
        return try await auth.caller(metadata)
    }

    // MARK: routes

    func create(_ req: Request, _ ctx: Context) async throws -> Response {
        let caller = try await caller(req)
        guard let request = try await jsonBody(req, as: CreateJobRequestJSON.self) else {
            throw ReelError(.invalidArgument, "request body must be a JSON object")
        }
        let job = try await operations.create(request.input, caller: caller)
        return json(JobJSON(job))
    }

    func get(_ req: Request, _ ctx: Context) async throws -> Response {
        let caller = try await caller(req)
        let (job, fromMemory) = try await operations.getTellingSource(id: ctx.parameters.get("id") ?? "", caller: caller)
        let body = JSONCoding.encode(JobJSON(job))
        let etag = Self.etag(body)
        var headers = HTTPFields()
        headers[.eTag] = etag
        headers[.cacheControl] = "no-cache"
        // Whether this answer came from the in-memory copy (observability, and the tests).
        headers[.init("X-Reel-Cache")!] = fromMemory ? "hit" : "miss"
        if let inm = req.headers[.ifNoneMatch], Self.matches(ifNoneMatch: inm, etag: etag) {
            return Response(status: .notModified, headers: headers)
        }
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    func list(_ req: Request, _ ctx: Context) async throws -> Response {
        let caller = try await caller(req)
        let q = req.uri.queryParameters
        func param(_ snake: String, _ camel: String) -> String? { (q[camel[...]] ?? q[snake[...]]).map(String.init) }
        var filter = ListJobsInput()
        filter.userID = param("user_id", "userId") ?? ""
        filter.sceneID = param("scene_id", "sceneId") ?? ""
        filter.pageToken = param("page_token", "pageToken") ?? ""
        if let s = param("status", "status"), !s.isEmpty {
            filter.status = try JobStatus(protoJSON: s, field: "status")
        }
        if let d = param("dead_lettered_only", "deadLetteredOnly"), !d.isEmpty {
            guard let b = ["true": true, "1": true, "false": false, "0": false][d] else {
                throw ReelError.invalid("dead_lettered_only", "must be true or false")
            }
            filter.deadLetteredOnly = b
        }
        if let p = param("page_size", "pageSize"), !p.isEmpty {
            guard let n = Int32(p) else { throw ReelError.invalid("page_size", "must be an integer") }
            filter.pageSize = n
        }
        return json(JobPageJSON(try await operations.list(filter, caller: caller)))
    }

    func action(_ req: Request, _ ctx: Context) async throws -> Response {
        var segment = ctx.parameters.get("id") ?? ""
        segment = segment.replacingOccurrences(of: "%3A", with: ":").replacingOccurrences(of: "%3a", with: ":")
        guard let colon = segment.lastIndex(of: ":") else {
            throw HTTPError(.notFound, message: "no route for POST \(req.uri.path)")
        }
        let id = String(segment[..<colon])
        let verb = segment[segment.index(after: colon)...]
        switch verb {
        case "cancel":
            let caller = try await caller(req)
            let reason = try await jsonBody(req, as: CancelJobRequestJSON.self)?.reason ?? ""
            return json(JobJSON(try await operations.cancel(id: id, reason: reason, caller: caller)))
        case "retry":
            let caller = try await caller(req)
            _ = try await jsonBody(req, as: RetryJobRequestJSON.self)
            return json(JobJSON(try await operations.retry(id: id, caller: caller)))
        default:
            throw HTTPError(.notFound, message: "no route for POST \(req.uri.path): the verb is :cancel or :retry")
        }
    }

    /// The job's completion-webhook deliveries and their attempts (DESIGN §8).
    /// The real providers' states (any caller with a key when auth is on: no tenant's data).
    func providerStates(_ req: Request, _ ctx: Context) async throws -> Response {
        _ = try await caller(req)
        return json(ProvidersJSON(await providers?() ?? []))
    }

    func webhooks(_ req: Request, _ ctx: Context) async throws -> Response {
        let caller = try await caller(req)
        let job = try await operations.get(id: ctx.parameters.get("id") ?? "", caller: caller)
        return json(WebhookDeliveriesJSON(try await webhookDeliveries?(job.id) ?? []))
    }

    /// Server-Sent Events: `id: <seq>` per event, resuming after `Last-Event-ID` (or
    /// `?after_seq=`) exactly like WatchJob's `after_seq`; the stream ends after the terminal event.
    func events(_ req: Request, _ ctx: Context) async throws -> Response {
        let id = try Validate.jobID(ctx.parameters.get("id") ?? "")
        let lastEventID = req.headers.first { $0.name.canonicalName == "last-event-id" }?.value
        let resume = lastEventID ?? req.uri.queryParameters["after_seq"].map(String.init)
        var seq: Int64 = 0
        if let resume, !resume.isEmpty {
            guard let n = Int64(resume.trimmingCharacters(in: .whitespaces)) else {
                throw ReelError.invalid("after_seq", "Last-Event-ID must be an event seq")
            }
            seq = n
        }
        let afterSeq = seq
        try Validate.afterSeq(afterSeq)
        let caller = try await caller(req, allowQueryToken: true)
        if Self.wantsJSON(req) {
            // The stored history as one JSON document (`{"events": […]}`), for timelines.
            return json(JobHistoryJSON(try await operations.history(id: id, afterSeq: afterSeq, caller: caller)))
        }
        // Errors must be HTTP statuses, so the job is looked up before the stream starts.
        let job = try await operations.get(id: id, caller: caller)
        var headers = HTTPFields()
        headers[.cacheControl] = "no-cache"
        if afterSeq > 0 && job.isFinished && afterSeq >= job.lastEventSeq {
            // Nothing left to send: 204 tells EventSource to stop reconnecting.
            return Response(status: .noContent, headers: headers)
        }
        headers[.contentType] = "text/event-stream"
        let operations = self.operations
        let logger = self.logger
        let keepAlive = sseKeepAlive
        // The watch and a keep-alive ticker feed one stream of SSE text; the response writes it.
        // A client too slow to take `sseBuffer` lines ends its stream (it resumes with
        // Last-Event-ID and misses nothing).
        let (lines, out) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingOldest(sseBuffer))
        struct TooSlow: Error {}
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            let watch = Task {
                do {
                    let end = try await operations.watch(id: id, afterSeq: afterSeq, caller: caller) { event in
                        if case .dropped = out.yield("id: \(event.seq)\ndata: \(JSONCoding.encode(JobEventJSON(event)))\n\n") { throw TooSlow() }
                    }
                    if case .fellBehind(let last) = end {
                        logger.debug("SSE watcher fell behind", metadata: ["reel.job_id": "\(id)", "reel.seq": "\(last)"])
                    }
                } catch let error as ReelError {
                    out.yield("event: error\ndata: \(ErrorJSON.body(for: error))\n\n")
                } catch {
                    logger.debug("SSE watcher ended", metadata: ["reel.job_id": "\(id)", "error": "\(error)"])
                }
                out.finish()
            }
            let ticker = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: keepAlive)
                    if Task.isCancelled { break }
                    out.yield(": keep-alive\n\n")
                }
            }
            defer {
                watch.cancel()
                ticker.cancel()
            }
            try await writer.write(ByteBuffer(string: "retry: 2000\n\n"))
            for await line in lines {
                try await writer.write(ByteBuffer(string: line))
            }
            try await writer.finish(nil)
        })
    }

    // MARK: helpers

    /// The request body decoded as `type`, or nil when there is none. Over `maxBodyBytes`: 413.
    func jsonBody<T: Decodable>(_ req: Request, as type: T.Type) async throws -> T? {
        if let len = req.headers[.contentLength].flatMap({ Int($0) }), len > maxBodyBytes {
            throw HTTPError(.contentTooLarge, message: "request body over \(maxBodyBytes) bytes")
        }
        var req = req
        let buffer: ByteBuffer
        do {
            buffer = try await req.collectBody(upTo: maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw HTTPError(.contentTooLarge, message: "request body over \(maxBodyBytes) bytes")
        }
        if buffer.readableBytes == 0 { return nil }
        do {
            return try JSONCoding.decode(T.self, from: Array(buffer.readableBytesView))
        } catch let error as JSONSyntax.Violation {
            throw ReelError(.invalidArgument, "request body is not valid JSON: \(error)")
        } catch let error as ReelError {
            throw error
        } catch {
            // The syntax was checked first, so this is Foundation's decoder refusing the text.
            throw ReelError(.invalidArgument, "request body is not valid JSON: \(error)")
        }
    }

    func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.cacheControl] = "no-store"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: JSONCoding.encode(value))))
    }

    /// `?format=json`, or an `Accept` naming JSON but not `text/event-stream`.
    static func wantsJSON(_ req: Request) -> Bool {
        if let f = req.uri.queryParameters["format"] { return f == "json" }
        let accept = req.headers[.accept] ?? ""
        return accept.contains("application/json") && !accept.contains("text/event-stream")
    }

    /// A strong validator over the representation: FNV-1a 64 of the JSON text.
    static func etag(_ body: String) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in body.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        let hex = String(h, radix: 16)
        return "\"" + String(repeating: "0", count: 16 - hex.count) + hex + "\""
    }

    static func matches(ifNoneMatch: String, etag: String) -> Bool {
        ifNoneMatch.split(separator: ",").contains { tag in
            var t = tag.trimmingCharacters(in: .whitespaces)
            if t == "*" { return true }
            if t.hasPrefix("W/") { t.removeFirst(2) }
            return t == etag
        }
    }
}
