import ArgumentParser
import ReelClient

/// `--address`: a `ServerAddress`; loopback unless `--allow-remote`.
typealias BenchAddress = ServerAddress

extension ServerAddress {
    /// As `parse`, with a usage error for ArgumentParser.
    static func parse(_ raw: String) throws -> ServerAddress {
        do { return try ServerAddress.parse(raw, defaultPort: 50051) } catch { throw ValidationError(error.description) }
    }
}
