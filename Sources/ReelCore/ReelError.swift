/// An error with a small code, a human message and where it happened.
/// Mapped to a gRPC status in exactly one place (ReelWire's `GRPCStatus(_:)`).
public struct ReelError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        public static let invalidArgument = Code(raw: "invalid_argument")
        public static let notFound = Code(raw: "not_found")
        public static let failedPrecondition = Code(raw: "failed_precondition")
        public static let resourceExhausted = Code(raw: "resource_exhausted")
        public static let unavailable = Code(raw: "unavailable")
        public static let unauthenticated = Code(raw: "unauthenticated")
        public static let permissionDenied = Code(raw: "permission_denied")
        public static let deadlineExceeded = Code(raw: "deadline_exceeded")
        public static let cancelled = Code(raw: "cancelled")
        public static let `internal` = Code(raw: "internal")
        public var description: String { raw }
    }

    public var code: Code
    public var message: String
    public var field: String?
    public var jobID: String?

    public init(_ code: Code, _ message: String, field: String? = nil, jobID: String? = nil) {
        self.code = code; self.message = message; self.field = field; self.jobID = jobID
    }

    public static func invalid(_ field: String, _ message: String) -> ReelError {
        ReelError(.invalidArgument, "\(field): \(message)", field: field)
    }

    public static func notFound(jobID: String) -> ReelError {
        ReelError(.notFound, "job \(jobID) not found", jobID: jobID)
    }

    public var description: String { "\(code): \(message)" }
}
