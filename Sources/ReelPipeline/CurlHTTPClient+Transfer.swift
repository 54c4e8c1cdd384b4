import Foundation
import Synchronization
internal import CCurl

struct TransferOptions: Sendable {
    var connectTimeout: Duration
    var totalTimeout: Duration
    var limit: Int
    var followRedirects: Bool
}

/// Set from a task's cancellation handler, read by curl's progress callback.
final class CancelFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func cancel() { flag.store(true, ordering: .relaxed) }
    var isCancelled: Bool { flag.load(ordering: .relaxed) }
}

/// One transfer's state, reached from curl's callbacks through `user_data`; it lives on the
/// pool thread that performs the transfer and nowhere else.
final class Transfer {
    enum Sink { case memory, file(Int32) }
    let sink: Sink
    let limit: Int
    let cancel: CancelFlag
    var body: [UInt8] = []
    var headers: [String: String] = [:]
    var received = 0
    var overflowed = false
    var badStatus: Int?
    var fileErrno: Int32?
    /// An upload's body: a file descriptor and the file's size.
    var source: (fd: Int32, size: Int64)?
    /// Downloads refuse to write an error page into the file.
    var requireSuccess = false
    var handle: UnsafeMutableRawPointer?
    var refusePeer: (@Sendable (String) -> Bool)?
    /// The address `refusePeer` refused.
    var refusedPeer: String?

    init(sink: Sink, limit: Int, cancel: CancelFlag) {
        self.sink = sink; self.limit = limit; self.cancel = cancel
    }

    /// Returns the number of bytes taken; anything else makes curl stop with CURLE_WRITE_ERROR.
    func accept(_ bytes: UnsafeRawBufferPointer) -> Int {
        if received == 0, requireSuccess, let h = handle {
            var code = 0
            _ = reel_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &code)
            if !(200..<300).contains(code) { badStatus = code; return 0 }
        }
        if received + bytes.count > limit { overflowed = true; return 0 }
        received += bytes.count
        switch sink {
        case .memory:
            body.append(contentsOf: bytes)
        case .file(let fd):
            var off = 0
            while off < bytes.count {
                let n = write(fd, bytes.baseAddress! + off, bytes.count - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    fileErrno = errno
                    return 0
                }
                off += n
            }
        }
        return bytes.count
    }

    /// Fills curl's upload buffer from `source`; 0 at the end, CURL_READFUNC_ABORT on error.
    func provide(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let fd = source?.fd else { return 0 }
        while true {
            let n = read(fd, buffer.baseAddress!, buffer.count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            fileErrno = errno
            return Int(CURL_READFUNC_ABORT)
        }
    }

    func header(_ line: String) {
        let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
        // A new status line starts a new response (after a redirect or a 100 Continue).
        if trimmed.hasPrefix("HTTP/") { headers = [:]; return }
        guard let colon = trimmed.firstIndex(of: ":") else { return }
        let name = trimmed[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
        let value = trimmed[trimmed.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        if let old = headers[name] { headers[name] = old + ", " + value } else { headers[name] = value }
    }
}

/// One libcurl easy handle, owned by one pool thread for its whole life.
final class CurlHandle {
    let raw: UnsafeMutableRawPointer
    let errorBuffer: UnsafeMutablePointer<CChar>

    init() {
        // Only fails when out of memory.
        guard let h = curl_easy_init() else { fatalError("curl_easy_init failed") }
        raw = h
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE))
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE))
    }

    deinit {
        curl_easy_cleanup(raw)
        errorBuffer.deallocate()
    }

    /// Runs one transfer to completion on the calling (pool) thread; returns the HTTP status.
    func perform(_ request: HTTPRequest, _ options: TransferOptions, _ t: Transfer) throws -> Int {
        if t.cancel.isCancelled { throw CancellationError() }
        let h = raw
        curl_easy_reset(h)
        errorBuffer[0] = 0
        t.handle = h
        var headerList: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headerList) }

        _ = reel_curl_setopt_pointer(h, CURLOPT_ERRORBUFFER, errorBuffer)
        guard reel_curl_setopt_string(h, CURLOPT_URL, request.url) == CURLE_OK else {
            throw HTTPClientError(code: .unsupportedURL, message: "malformed URL", url: request.url)
        }
        // Signals and multi-threaded programs don't mix; the threaded resolver needs none.
        _ = reel_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1)
        _ = reel_curl_setopt_string(h, CURLOPT_PROTOCOLS_STR, "http,https")
        _ = reel_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, max(1, options.connectTimeout.wholeMilliseconds))
        _ = reel_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, max(1, options.totalTimeout.wholeMilliseconds))
        if options.followRedirects {
            _ = reel_curl_setopt_long(h, CURLOPT_FOLLOWLOCATION, 1)
            _ = reel_curl_setopt_long(h, CURLOPT_MAXREDIRS, 5)
            _ = reel_curl_setopt_string(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https")
            _ = reel_curl_setopt_off(h, CURLOPT_MAXFILESIZE_LARGE, curl_off_t(options.limit))
        } else {
            // Let curl decode any content-encoding it supports.
            _ = reel_curl_setopt_string(h, CURLOPT_ACCEPT_ENCODING, "")
        }

        let ud = Unmanaged.passUnretained(t).toOpaque()
        _ = reel_curl_setopt_writefn(h) { ptr, size, n, ud in
            let t = Unmanaged<Transfer>.fromOpaque(ud!).takeUnretainedValue()
            return t.accept(UnsafeRawBufferPointer(start: ptr, count: size * n))
        }
        _ = reel_curl_setopt_pointer(h, CURLOPT_WRITEDATA, ud)
        _ = reel_curl_setopt_headerfn(h) { ptr, size, n, ud in
            let t = Unmanaged<Transfer>.fromOpaque(ud!).takeUnretainedValue()
            let count = size * n
            if let ptr {
                let bytes = UnsafeRawBufferPointer(start: ptr, count: count)
                t.header(String(decoding: bytes, as: UTF8.self))
            }
            return count
        }
        _ = reel_curl_setopt_pointer(h, CURLOPT_HEADERDATA, ud)
        _ = reel_curl_setopt_long(h, CURLOPT_NOPROGRESS, 0)
        _ = reel_curl_setopt_xferinfofn(h) { ud, _, _, _, _ in
            Unmanaged<Transfer>.fromOpaque(ud!).takeUnretainedValue().cancel.isCancelled ? 1 : 0
        }
        _ = reel_curl_setopt_pointer(h, CURLOPT_XFERINFODATA, ud)

        if let refuse = request.refusePeer {
            t.refusePeer = refuse
            _ = reel_curl_setopt_prereqfn(h) { ud, primaryIP, _, _, _ in
                let t = Unmanaged<Transfer>.fromOpaque(ud!).takeUnretainedValue()
                let ip = primaryIP.map { String(cString: $0) } ?? ""
                guard let refuse = t.refusePeer, refuse(ip) else { return Int32(CURL_PREREQFUNC_OK) }
                t.refusedPeer = ip
                return Int32(CURL_PREREQFUNC_ABORT)
            }
            _ = reel_curl_setopt_pointer(h, CURLOPT_PREREQDATA, ud)
        }
        var resolveList: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(resolveList) }
        if !request.resolve.isEmpty {
            for entry in request.resolve { resolveList = curl_slist_append(resolveList, entry) }
            _ = reel_curl_setopt_slist(h, CURLOPT_RESOLVE, resolveList)
        }
        if request.freshConnection {
            _ = reel_curl_setopt_long(h, CURLOPT_FRESH_CONNECT, 1)
            _ = reel_curl_setopt_long(h, CURLOPT_FORBID_REUSE, 1)
        }
        if let sig = request.sigV4 {
            _ = reel_curl_setopt_string(h, CURLOPT_AWS_SIGV4, sig.provider)
            _ = reel_curl_setopt_string(h, CURLOPT_USERPWD, sig.accessKey + ":" + sig.secretKey)
        }
        let method = request.method.uppercased()
        switch method {
        case _ where t.source != nil:
            _ = reel_curl_setopt_long(h, CURLOPT_UPLOAD, 1)
            _ = reel_curl_setopt_off(h, CURLOPT_INFILESIZE_LARGE, curl_off_t(t.source!.size))
            _ = reel_curl_setopt_readfn(h) { ptr, size, n, ud in
                let t = Unmanaged<Transfer>.fromOpaque(ud!).takeUnretainedValue()
                return t.provide(UnsafeMutableRawBufferPointer(start: ptr, count: size * n))
            }
            _ = reel_curl_setopt_pointer(h, CURLOPT_READDATA, ud)
            if method != "PUT" { _ = reel_curl_setopt_string(h, CURLOPT_CUSTOMREQUEST, method) }
        case "GET":
            _ = reel_curl_setopt_long(h, CURLOPT_HTTPGET, 1)
        case "HEAD":
            _ = reel_curl_setopt_long(h, CURLOPT_NOBODY, 1)
        default:
            _ = reel_curl_setopt_long(h, CURLOPT_POST, 1)
            _ = reel_curl_setopt_off(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(request.body.count))
            // COPYPOSTFIELDS copies, so the Swift array need not outlive this call.
            if request.body.isEmpty {
                _ = reel_curl_setopt_string(h, CURLOPT_COPYPOSTFIELDS, "")
            } else {
                request.body.withUnsafeBytes { raw in
                    _ = reel_curl_setopt_pointer(h, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: raw.baseAddress!))
                }
            }
            if method != "POST" { _ = reel_curl_setopt_string(h, CURLOPT_CUSTOMREQUEST, method) }
        }
        // An empty "Expect:" stops curl from waiting on 100-continue for larger bodies. Not when
        // signing: curl 7.88's SigV4 signs such a removal line as an empty header, and S3 refuses it.
        let expect = request.sigV4 == nil ? ["Expect:"] : []
        for line in request.headers.map({ "\($0.key): \($0.value)" }) + expect {
            headerList = curl_slist_append(headerList, line)
        }
        _ = reel_curl_setopt_slist(h, CURLOPT_HTTPHEADER, headerList)

        let rc = curl_easy_perform(h)
        t.handle = nil
        if rc != CURLE_OK { throw error(rc, t, request.url) }
        var status = 0
        _ = reel_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &status)
        return status
    }

    private func error(_ rc: CURLcode, _ t: Transfer, _ url: String) -> any Error {
        if rc == CURLE_ABORTED_BY_CALLBACK && t.cancel.isCancelled { return CancellationError() }
        let what = String(cString: curl_easy_strerror(rc))
        let detail = String(cString: errorBuffer)
        let message = detail.isEmpty || detail == what ? what : "\(what): \(detail)"
        if let ip = t.refusedPeer {
            return HTTPClientError(code: .refusedAddress, message: "refused to send to \(ip): not a public address", url: url)
        }
        if let s = t.badStatus { return HTTPClientError(code: .badStatus, message: "HTTP status \(s)", url: url) }
        if t.overflowed || rc == CURLE_FILESIZE_EXCEEDED {
            return HTTPClientError(code: .tooLarge, message: "response larger than \(t.limit) bytes", url: url)
        }
        if let e = t.fileErrno {
            return HTTPClientError(code: .fileError, message: "file I/O failed: \(String(cString: strerror(e)))", url: url)
        }
        let code: HTTPClientError.Code
        switch rc {
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY: code = .couldNotResolve
        case CURLE_COULDNT_CONNECT: code = .couldNotConnect
        case CURLE_OPERATION_TIMEDOUT: code = .timedOut
        case CURLE_UNSUPPORTED_PROTOCOL, CURLE_URL_MALFORMAT: code = .unsupportedURL
        default: code = .transport
        }
        return HTTPClientError(code: code, message: "\(message) (curl \(rc.rawValue))", url: url)
    }
}

extension Duration {
    /// Whole milliseconds, for curl options and log fields.
    var wholeMilliseconds: Int {
        let c = components
        return Int(c.seconds) * 1000 + Int(c.attoseconds / 1_000_000_000_000_000)
    }
}
