import ArgumentParser
import ReelWire

/// The one place errors become stderr text and exit codes (see `reelctl --help`).
enum CallFailure {
    /// Runs a command body; a `GRPCStatus` becomes `reelctl: CODE: message` and exit 10 + code.
    static func reporting<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let status as GRPCStatus {
            Terminal.err("reelctl: \(name(of: status.code)): \(status.message.isEmpty ? "(no message)" : status.message)")
            throw ExitCode(exitCode(for: status.code))
        }
    }

    static func exitCode(for code: GRPCStatus.Code) -> Int32 {
        code == .ok ? 0 : 10 + Int32(clamping: code.rawValue)
    }

    static func name(of code: GRPCStatus.Code) -> String {
        let names = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                     "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                     "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                     "UNAUTHENTICATED"]
        return names.indices.contains(code.rawValue) ? names[code.rawValue] : "CODE_\(code.rawValue)"
    }
}
