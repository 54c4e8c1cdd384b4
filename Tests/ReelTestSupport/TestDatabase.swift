import Foundation
import Logging
import ReelStore

/// A fresh, migrated database on the PostgreSQL that `scripts/test` starts.
public enum TestDatabase {
    public static let baseURL = ProcessInfo.processInfo.environment["REEL_TEST_DATABASE_URL"]

    public struct Missing: Error, CustomStringConvertible {
        public var description: String { "REEL_TEST_DATABASE_URL must point at a test PostgreSQL (scripts/test sets it)" }
    }

    public static func freshStore(poolSize: Int = 4) async throws -> PostgresJobStore {
        try await freshStoreAndURL(poolSize: poolSize).store
    }

    public static func freshStoreAndURL(poolSize: Int = 4) async throws -> (store: PostgresJobStore, url: String) {
        guard let base = baseURL else { throw Missing() }
        let url = try await PostgresJobStore.createDatabase(
            adminURL: base, name: "reel_swift_\(UInt64.random(in: 0..<UInt64.max))")
        let store = try PostgresJobStore(url: url, poolSize: poolSize, logger: Logger(label: "test"))
        _ = try await store.migrate()
        return (store, url)
    }
}
