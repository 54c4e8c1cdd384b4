import ArgumentParser
import Foundation
import ReelHTTP2

/// Options every subcommand takes (before or after the subcommand's name).
struct GlobalOptions: ParsableArguments {
    static let defaultAddress = "127.0.0.1:50051"

    @Option(name: .long, help: ArgumentHelp(
        "Server address host:port ($REEL_ADDRESS; default \(GlobalOptions.defaultAddress)).",
        valueName: "host:port"))
    var address: String?

    @Flag(name: .long, help: "Print JSON instead of text.")
    var json = false

    @Option(name: .long, help: ArgumentHelp(
        "Deadline in seconds for each unary call (sent as grpc-timeout; watch has none).",
        valueName: "seconds"))
    var timeout: Double = 10

    @Option(name: .long, help: ArgumentHelp(
        "API key, sent as `authorization: Bearer <key>` ($REEL_API_KEY).", valueName: "key"))
    var key: String?

    var resolvedKey: String? {
        key ?? ProcessInfo.processInfo.environment["REEL_API_KEY"].flatMap { $0.isEmpty ? nil : $0 }
    }

    var resolvedAddress: String {
        address ?? ProcessInfo.processInfo.environment["REEL_ADDRESS"].flatMap { $0.isEmpty ? nil : $0 }
            ?? Self.defaultAddress
    }

    var unaryTimeout: Duration? { timeout > 0 ? .milliseconds(Int64((timeout * 1000).rounded(.up))) : nil }

    mutating func validate() throws {
        _ = try Self.parse(address: resolvedAddress)
        if !timeout.isFinite || timeout < 0 { throw ValidationError("--timeout must be a number of seconds >= 0") }
    }

    /// Connects to the server; a failure is the call's failure (UNAVAILABLE).
    func connect() throws -> JobServiceClient {
        let (host, port) = try Self.parse(address: resolvedAddress)
        let grpc = try GRPCClient(host: host, port: port, maxReceiveMessageSize: 64 * 1024 * 1024)
        return JobServiceClient(grpc: grpc, timeout: unaryTimeout,
                                metadata: resolvedKey.map { [("authorization", "Bearer \($0)")] } ?? [])
    }

    /// `host:port`, `[v6]:port`, or `host` (port 50051); an `http://` prefix is tolerated.
    static func parse(address raw: String) throws -> (host: String, port: Int) {
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
        return (String(host), port)
    }
}
