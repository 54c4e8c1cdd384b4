/// gRPC length-prefixed messages: 1 byte compressed flag, 4 bytes big-endian length, payload.
public enum GRPCFraming {
    public static let headerSize = 5
    public static let defaultMaxMessageSize = 4 * 1024 * 1024

    public static func frame(_ payload: [UInt8], compressed: Bool = false) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(payload.count + headerSize)
        appendFrame(payload, to: &out, compressed: compressed)
        return out
    }

    public static func appendFrame(_ payload: [UInt8], to out: inout [UInt8], compressed: Bool = false) {
        let n = UInt32(payload.count)
        out.append(compressed ? 1 : 0)
        out.append(UInt8(n >> 24)); out.append(UInt8((n >> 16) & 0xFF))
        out.append(UInt8((n >> 8) & 0xFF)); out.append(UInt8(n & 0xFF))
        out.append(contentsOf: payload)
    }
}

/// Incremental reader of length-prefixed messages. The size limit is decided from the
/// prefix, before any of the payload is buffered.
public struct GRPCMessageReader: Sendable {
    public enum Failure: Error, Equatable, Sendable {
        case tooLarge(declared: Int, limit: Int)
        case compressedUnsupported
        case badFlag(UInt8)
    }

    public let maxMessageSize: Int
    private var buffer: [UInt8] = []
    private var expected: Int? = nil

    public init(maxMessageSize: Int = GRPCFraming.defaultMaxMessageSize) { self.maxMessageSize = maxMessageSize }

    /// Bytes held for an incomplete message: non-zero at end of stream means it was cut short.
    public var pendingBytes: Int { buffer.count }

    /// Feeds bytes; returns the messages completed by them.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer) throws(Failure) -> [[UInt8]] {
        buffer.append(contentsOf: bytes)
        return try drain()
    }

    public mutating func feed(_ bytes: [UInt8]) throws(Failure) -> [[UInt8]] {
        buffer.append(contentsOf: bytes)
        return try drain()
    }

    private mutating func drain() throws(Failure) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var start = 0
        while true {
            if expected == nil {
                guard buffer.count - start >= GRPCFraming.headerSize else { break }
                let flag = buffer[start]
                if flag == 1 { throw .compressedUnsupported }
                if flag > 1 { throw .badFlag(flag) }
                let n = Int(buffer[start + 1]) << 24 | Int(buffer[start + 2]) << 16 | Int(buffer[start + 3]) << 8 | Int(buffer[start + 4])
                if n > maxMessageSize { throw .tooLarge(declared: n, limit: maxMessageSize) }
                expected = n
                start += GRPCFraming.headerSize
            }
            guard let n = expected, buffer.count - start >= n else { break }
            out.append(Array(buffer[start..<start + n]))
            start += n
            expected = nil
        }
        if start > 0 { buffer.removeFirst(start) }
        return out
    }

    /// True while a message header has been read but its payload has not fully arrived,
    /// or a partial header is buffered.
    public var hasPartialMessage: Bool { expected != nil || !buffer.isEmpty }
}
