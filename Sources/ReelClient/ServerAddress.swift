/// A server address as people type it: `host:port`, `[v6]:port`, or `host` (default port);
/// an `http://` prefix and trailing slashes are tolerated. Shared by the CLI tools.
public struct ServerAddress: Sendable, Equatable, CustomStringConvertible {
    public let host: String
    public let port: Int

    public init(host: String, port: Int) { self.host = host; self.port = port }

    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Names that are loopback by definition (a load generator must not hit others by mistake).
    public var isLoopback: Bool {
        if host == "localhost" || host == "::1" || host == "0:0:0:0:0:0:0:1" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    public static func parse(_ raw: String, defaultPort: Int = 50051) throws(Invalid) -> ServerAddress {
        var s = Substring(raw)
        if s.hasPrefix("http://") { s = s.dropFirst(7) }
        while s.hasSuffix("/") { s = s.dropLast() }
        var host: Substring
        var portText: Substring?
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else { throw Invalid(description: "bad address \"\(raw)\"") }
            host = s[s.index(after: s.startIndex)..<close]
            let rest = s[s.index(after: close)...]
            if rest.hasPrefix(":") { portText = rest.dropFirst() } else if !rest.isEmpty {
                throw Invalid(description: "bad address \"\(raw)\"")
            }
        } else if let colon = s.lastIndex(of: ":"), s.firstIndex(of: ":") == colon {
            host = s[..<colon]
            portText = s[s.index(after: colon)...]
        } else {
            host = s
        }
        guard !host.isEmpty else { throw Invalid(description: "bad address \"\(raw)\": no host") }
        var port = defaultPort
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else {
                throw Invalid(description: "bad address \"\(raw)\": port must be 1-65535")
            }
            port = p
        }
        return ServerAddress(host: String(host), port: port)
    }
}
