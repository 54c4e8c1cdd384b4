import ReelCore

/// A gRPC status: the code and message carried in `grpc-status`/`grpc-message` trailers.
public struct GRPCStatus: Sendable, Equatable, Error, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }
        public static let ok = Code(rawValue: 0)
        public static let cancelled = Code(rawValue: 1)
        public static let unknown = Code(rawValue: 2)
        public static let invalidArgument = Code(rawValue: 3)
        public static let deadlineExceeded = Code(rawValue: 4)
        public static let notFound = Code(rawValue: 5)
        public static let alreadyExists = Code(rawValue: 6)
        public static let permissionDenied = Code(rawValue: 7)
        public static let resourceExhausted = Code(rawValue: 8)
        public static let failedPrecondition = Code(rawValue: 9)
        public static let aborted = Code(rawValue: 10)
        public static let outOfRange = Code(rawValue: 11)
        public static let unimplemented = Code(rawValue: 12)
        public static let `internal` = Code(rawValue: 13)
        public static let unavailable = Code(rawValue: 14)
        public static let dataLoss = Code(rawValue: 15)
        public static let unauthenticated = Code(rawValue: 16)

        static let names = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                            "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
                            "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"]

        /// The canonical name (`NOT_FOUND`), for logs and metric labels.
        public var name: String { Self.names.indices.contains(rawValue) ? Self.names[rawValue] : "CODE_\(rawValue)" }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String = "") { self.code = code; self.message = message }

    public static let ok = GRPCStatus(.ok)

    /// The one mapping from domain errors to gRPC statuses.
    public init(_ error: ReelError) {
        let code: Code = switch error.code {
        case .invalidArgument: .invalidArgument
        case .notFound: .notFound
        case .failedPrecondition: .failedPrecondition
        case .resourceExhausted: .resourceExhausted
        case .unavailable: .unavailable
        case .unauthenticated: .unauthenticated
        case .permissionDenied: .permissionDenied
        case .deadlineExceeded: .deadlineExceeded
        case .cancelled: .cancelled
        default: .internal
        }
        self.init(code, error.message)
    }

    /// Any error a handler throws, as a status; unknown errors become INTERNAL without leaking details.
    public static func from(_ error: any Error) -> GRPCStatus {
        if let s = error as? GRPCStatus { return s }
        if let e = error as? ReelError { return GRPCStatus(e) }
        return GRPCStatus(.internal, "internal error")
    }

    public var description: String { "grpc-status \(code.rawValue): \(message)" }
}
