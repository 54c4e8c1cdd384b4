import ArgumentParser

/// `--address`: `host:port`, `[v6]:port` or `host` (port 50051); loopback unless allowed.
struct BenchAddress: Sendable, CustomStringConvertible {
    let host: String
    let port: Int

    var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// A load generator pointed at someone else's server by mistake is a denial of service:
    /// only names that are loopback by definition pass without `--allow-remote`.
    var isLoopback: Bool {
        if host == "localhost" || host == "::1" || host == "0:0:0:0:0:0:0:1" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    static func parse(_ raw: String) throws -> BenchAddress {
        var s = Substring(raw)
        if s.hasPrefix("http://") { s = s.dropFirst(7) }
        while s.hasSuffix("/") { s = s.dropLast() }
        var host: Substring
        var portText: Substring?
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else { throw ValidationError("bad address \"\(raw)\"") }
            host = s[s.index(after: s.startIndex)..<close]
            let rest = s[s.index(after: close)...]
            if rest.hasPrefix(":") { portText = rest.dropFirst() } else if !rest.isEmpty {
                throw ValidationError("bad address \"\(raw)\"")
            }
        } else if let colon = s.lastIndex(of: ":"), s.firstIndex(of: ":") == colon {
            host = s[..<colon]
            portText = s[s.index(after: colon)...]
        } else {
            host = s
        }
        guard !host.isEmpty else { throw ValidationError("bad address \"\(raw)\": no host") }
        var port = 50051
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else {
                throw ValidationError("bad address \"\(raw)\": port must be 1-65535")
            }
            port = p
        }
        return BenchAddress(host: String(host), port: port)
    }
}
