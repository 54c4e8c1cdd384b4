import Foundation
import ReelBlocking
internal import CCurl

/// An HTTP/1.1 request for `CurlHTTPClient`.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [String: String]
    public var body: [UInt8]
    /// Overrides the client's total timeout for this request.
    public var timeout: Duration?
    /// Signs the request with libcurl's own AWS Signature V4 (`CURLOPT_AWS_SIGV4`).
    public var sigV4: SigV4?
    /// Given the IP address actually connected to (after DNS, before the request is sent),
    /// true refuses it: the transfer fails with `.refusedAddress` and nothing is sent.
    public var refusePeer: (@Sendable (String) -> Bool)?
    /// libcurl's `CURLOPT_RESOLVE` entries (`HOST:PORT:ADDRESS`): fixed answers for names.
    public var resolve: [String] = []
    /// A new connection, closed after this request. libcurl silently resends a request whose
    /// reused connection died before any answer byte came back; for a submit that cannot be
    /// deduplicated (Runway has no external id) that resend could pay twice, so such a submit
    /// never rides a reused connection and its lost answer surfaces as an error instead.
    public var freshConnection = false

    public init(method: String = "GET", url: String, headers: [String: String] = [:], body: [UInt8] = [],
                timeout: Duration? = nil) {
        self.method = method; self.url = url; self.headers = headers; self.body = body; self.timeout = timeout
    }
}

/// What libcurl needs to sign a request with AWS Signature V4: `provider` is curl's
/// `CURLOPT_AWS_SIGV4` string (`aws:amz:REGION:SERVICE`), the keys go in `CURLOPT_USERPWD`.
public struct SigV4: Sendable {
    public var provider: String
    public var accessKey: String
    public var secretKey: String

    public init(region: String, service: String, accessKey: String, secretKey: String) {
        provider = "aws:amz:\(region):\(service)"
        self.accessKey = accessKey; self.secretKey = secretKey
    }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    /// Header names lowercased; repeated headers joined with ", ".
    public var headers: [String: String]
    public var body: [UInt8]

    public init(status: Int, headers: [String: String] = [:], body: [UInt8] = []) {
        self.status = status; self.headers = headers; self.body = body
    }

    public func header(_ name: String) -> String? { headers[name.lowercased()] }

    /// How long the server asks to wait before the next try: `retry-after-ms` (OpenAI's), else
    /// `Retry-After` in seconds or as an HTTP date; nil when it says nothing usable. At most `cap`.
    public func retryAfter(cap: Duration = .seconds(300)) -> Duration? {
        if let ms = header("retry-after-ms").flatMap({ Double($0.trimmingCharacters(in: .whitespaces)) }), ms >= 0, ms.isFinite {
            return min(.milliseconds(Int64(min(ms, 1e12))), cap)
        }
        guard let v = header("retry-after")?.trimmingCharacters(in: .whitespaces) else { return nil }
        if let s = Double(v), s >= 0, s.isFinite { return min(.milliseconds(Int64(min(s, 1e9) * 1000)), cap) }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let d = f.date(from: v) else { return nil }
        return min(.milliseconds(Int64(min(max(0, d.timeIntervalSinceNow), 1e9) * 1000)), cap)
    }

    /// `id` as one path segment of a URL (a provider's task id).
    public static func pathSegment(_ id: String) -> String {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "/?#")
        return id.addingPercentEncoding(withAllowedCharacters: allowed) ?? id
    }
}

/// A transport failure: the request got no complete HTTP response (or, for a download,
/// no usable one). HTTP error statuses from `send` are responses, not errors.
public struct HTTPClientError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public init(_ name: String) { self.name = name }
        public var description: String { name }

        public static let couldNotResolve = Code("COULD_NOT_RESOLVE")
        public static let couldNotConnect = Code("COULD_NOT_CONNECT")
        public static let timedOut = Code("TIMED_OUT")
        public static let tooLarge = Code("TOO_LARGE")
        public static let badStatus = Code("BAD_STATUS")
        public static let unsupportedURL = Code("UNSUPPORTED_URL")
        public static let fileError = Code("FILE_ERROR")
        public static let transport = Code("TRANSPORT")
        /// `HTTPRequest.refusePeer` refused the address connected to.
        public static let refusedAddress = Code("REFUSED_ADDRESS")
    }

    public var code: Code
    public var message: String
    public var url: String

    public init(code: Code, message: String, url: String) {
        self.code = code; self.message = message; self.url = url
    }

    public var description: String { "\(code) \(url): \(message)" }
}

/// HTTP over libcurl's easy interface. Every `curl_easy_perform` runs on a `BlockingPool`
/// thread that owns one easy handle (reset between requests, so connections are reused);
/// Swift's cooperative pool only awaits. A cancelled task aborts its transfer within ~1 s.
public final class CurlHTTPClient: Sendable {
    private let pool: BlockingPool<CurlHandle>
    let connectTimeout: Duration
    let totalTimeout: Duration
    let maxResponseBytes: Int

    private static let globalInit: Int32 = Int32(bitPattern: reel_curl_global_init().rawValue)

    public init(threads: Int = 4, connectTimeout: Duration = .seconds(5), totalTimeout: Duration = .seconds(30),
                maxResponseBytes: Int = 16 << 20) {
        // curl_global_init is not thread-safe: a Swift static runs it exactly once.
        precondition(Self.globalInit == 0, "curl_global_init failed (\(Self.globalInit))")
        self.connectTimeout = connectTimeout
        self.totalTimeout = totalTimeout
        self.maxResponseBytes = maxResponseBytes
        pool = BlockingPool(name: "reel-curl", resources: (0..<max(1, threads)).map { _ in CurlHandle() })
    }

    deinit { pool.close() }

    /// Lets queued requests finish, then ends the client's threads.
    public func shutdown() { pool.close() }

    /// Sends `request` and returns whatever HTTP response came back, whatever its status.
    /// Throws `HTTPClientError` when no response arrived (DNS, connect, timeout, reset…).
    public func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        let options = TransferOptions(connectTimeout: connectTimeout, totalTimeout: request.timeout ?? totalTimeout,
                                      limit: maxResponseBytes, followRedirects: false)
        let flag = CancelFlag()
        return try await withTaskCancellationHandler {
            try await pool.run { handle in
                let t = Transfer(sink: .memory, limit: options.limit, cancel: flag)
                let status = try handle.perform(request, options, t)
                return HTTPResponse(status: status, headers: t.headers, body: t.body)
            }
        } onCancel: { flag.cancel() }
    }

    /// Sends `request` (a PUT, typically) with the file at `path` as its body, streamed from
    /// disk (`CURLOPT_UPLOAD`), so a large video never sits in memory.
    public func upload(_ request: HTTPRequest, fromFile path: String) async throws -> HTTPResponse {
        let options = TransferOptions(connectTimeout: connectTimeout, totalTimeout: request.timeout ?? totalTimeout,
                                      limit: maxResponseBytes, followRedirects: false)
        let flag = CancelFlag()
        return try await withTaskCancellationHandler {
            try await pool.run { handle in
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else {
                    throw HTTPClientError(code: .fileError, message: "cannot open \(path): \(String(cString: strerror(errno)))",
                                          url: request.url)
                }
                defer { close(fd) }
                var st = stat()
                guard fstat(fd, &st) == 0 else {
                    throw HTTPClientError(code: .fileError, message: "cannot stat \(path)", url: request.url)
                }
                let t = Transfer(sink: .memory, limit: options.limit, cancel: flag)
                t.source = (fd, Int64(st.st_size))
                let status = try handle.perform(request, options, t)
                return HTTPResponse(status: status, headers: t.headers, body: t.body)
            }
        } onCancel: { flag.cancel() }
    }

    /// Streams `url` into the file at `path` (created or truncated), following redirects.
    /// Returns the number of bytes written. Throws `HTTPClientError` on a transport error,
    /// a non-2xx status (`.badStatus`) or a body over `maxBytes` (`.tooLarge`); on any
    /// error the file is removed.
    @discardableResult
    public func download(url: String, to path: String, maxBytes: Int, timeout: Duration? = nil) async throws -> Int {
        try await download(HTTPRequest(url: url), to: path, maxBytes: maxBytes, timeout: timeout)
    }

    /// `download(url:to:maxBytes:timeout:)` for a request with headers or a signature.
    @discardableResult
    public func download(_ request: HTTPRequest, to path: String, maxBytes: Int, timeout: Duration? = nil) async throws -> Int {
        let url = request.url
        let options = TransferOptions(connectTimeout: connectTimeout, totalTimeout: timeout ?? totalTimeout,
                                      limit: maxBytes, followRedirects: true)
        let flag = CancelFlag()
        return try await withTaskCancellationHandler {
            try await pool.run { handle in
                let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
                guard fd >= 0 else {
                    throw HTTPClientError(code: .fileError, message: "cannot open \(path): \(String(cString: strerror(errno)))",
                                          url: url)
                }
                let t = Transfer(sink: .file(fd), limit: maxBytes, cancel: flag)
                t.requireSuccess = true
                do {
                    let status = try handle.perform(request, options, t)
                    if !(200..<300).contains(status) {
                        throw HTTPClientError(code: .badStatus, message: "HTTP status \(status)", url: url)
                    }
                    if close(fd) != 0 {
                        throw HTTPClientError(code: .fileError, message: "close \(path): \(String(cString: strerror(errno)))",
                                              url: url)
                    }
                    return t.received
                } catch {
                    close(fd)
                    unlink(path)
                    throw error
                }
            }
        } onCancel: { flag.cancel() }
    }
}
