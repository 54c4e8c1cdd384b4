internal import CReelTLS

/// A certificate and key for the gRPC listener: TLS 1.2+, ALPN `h2` only.
public final class TLSContext: @unchecked Sendable {
    // Safety: the OpenSSL SSL_CTX is only read after creation (SSL_new is thread-safe on it).
    let ctx: OpaquePointer

    public init(certificateFile: String, keyFile: String) throws {
        var err = [CChar](repeating: 0, count: 512)
        guard let c = reel_tls_ctx_new(certificateFile, keyFile, &err, err.count) else {
            throw GRPCServerError(message: "TLS: " + String(cString: err))
        }
        ctx = c
    }

    deinit { reel_tls_ctx_free(ctx) }
}

/// One connection's TLS state. Loop-confined, like its connection.
final class TLSSession {
    private let tls: OpaquePointer
    private(set) var established = false

    init?(context: TLSContext, fd: Int32) {
        guard let t = reel_tls_new(context.ctx, fd) else { return nil }
        tls = t
    }

    deinit { reel_tls_free(tls) }

    enum Step { case done, wantRead, wantWrite, failed }

    /// Advances the handshake; `.done` once it finished with ALPN h2.
    func handshake() -> Step {
        if established { return .done }
        switch reel_tls_handshake(tls) {
        case Int32(REEL_TLS_OK):
            guard reel_tls_alpn_is_h2(tls) == 1 else { return .failed }
            established = true
            return .done
        case Int32(REEL_TLS_WANT_READ): return .wantRead
        case Int32(REEL_TLS_WANT_WRITE): return .wantWrite
        default: return .failed
        }
    }

    /// > 0: bytes; 0: would block; < 0: closed or failed.
    func read(_ buf: UnsafeMutableRawPointer, _ len: Int) -> Int {
        let n = reel_tls_read(tls, buf, len)
        if n > 0 { return n }
        return n == Int(REEL_TLS_WANT_READ) || n == Int(REEL_TLS_WANT_WRITE) ? 0 : -1
    }

    /// ≥ 0: bytes written (0: would block); < 0: failed.
    func write(_ buf: UnsafeRawPointer, _ len: Int) -> Int {
        let n = reel_tls_write(tls, buf, len)
        if n > 0 { return n }
        return n == Int(REEL_TLS_WANT_READ) || n == Int(REEL_TLS_WANT_WRITE) ? 0 : -1
    }
}
