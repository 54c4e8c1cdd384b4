import ReelWire

/// The gRPC server's address, loops and limits.
public struct GRPCServerConfig: Sendable {
    public var host: String
    public var port: Int
    public var loops: Int
    public var maxMessageSize: Int = GRPCFraming.defaultMaxMessageSize
    public var maxConcurrentStreams: UInt32 = 4096
    public var idleTimeout: Duration = .seconds(300)
    /// Bytes queued on one stream before `send` waits for the reader.
    public var streamHighWater: Int = 256 * 1024
    /// Serve TLS with ALPN h2 instead of h2c.
    public var tls: TLSContext?

    public init(host: String, port: Int, loops: Int) { self.host = host; self.port = port; self.loops = loops }
}
