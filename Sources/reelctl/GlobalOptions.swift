import ArgumentParser
import Foundation
import ReelClient

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
        let grpc = try BlockingGRPCClient(host: host, port: port, maxReceiveMessageSize: 64 * 1024 * 1024)
        return JobServiceClient(grpc: grpc, timeout: unaryTimeout,
                                metadata: resolvedKey.map { [("authorization", "Bearer \($0)")] } ?? [])
    }

    /// `host:port`, `[v6]:port`, or `host` (port 50051); see `ServerAddress`.
    static func parse(address raw: String) throws -> (host: String, port: Int) {
        do {
            let a = try ServerAddress.parse(raw)
            return (a.host, a.port)
        } catch {
            throw ValidationError(error.description)
        }
    }
}
