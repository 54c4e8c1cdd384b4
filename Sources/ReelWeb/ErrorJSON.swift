import Hummingbird
import Logging
import NIOCore
import ReelCore
import ReelJSON
import ReelWire

/// Errors as HTTP statuses with a JSON body `{"code": "NOT_FOUND", "message": "…"}`: domain
/// errors take their gRPC code (ReelWire's one mapping) and that code's HTTP status, as
/// grpc-gateway maps them; the router's own (404, 405, 413) keep theirs.
enum ErrorJSON {
    static func httpStatus(_ code: GRPCStatus.Code) -> HTTPResponse.Status {
        switch code {
        case .invalidArgument, .outOfRange: .badRequest
        case .notFound: .notFound
        case .alreadyExists, .aborted: .conflict
        case .failedPrecondition: .conflict
        case .unauthenticated: .unauthorized
        case .permissionDenied: .forbidden
        case .resourceExhausted: .tooManyRequests
        case .unavailable: .serviceUnavailable
        case .deadlineExceeded: .gatewayTimeout
        case .unimplemented: .notImplemented
        case .cancelled: HTTPResponse.Status(code: 499, reasonPhrase: "Client Closed Request")
        default: .internalServerError
        }
    }

    static func code(forHTTP status: HTTPResponse.Status) -> String {
        switch status.code {
        case 400: "INVALID_ARGUMENT"
        case 401: "UNAUTHENTICATED"
        case 403: "PERMISSION_DENIED"
        case 404: "NOT_FOUND"
        case 405: "METHOD_NOT_ALLOWED"
        case 409: "FAILED_PRECONDITION"
        case 413: "PAYLOAD_TOO_LARGE"
        case 429: "RESOURCE_EXHAUSTED"
        case 503: "UNAVAILABLE"
        default: status.code >= 500 ? "INTERNAL" : "HTTP_\(status.code)"
        }
    }

    static func body(code: String, message: String) -> String {
        JSONCoding.encode(ErrorBodyJSON(code: code, message: message))
    }

    static func body(for error: ReelError) -> String {
        let s = GRPCStatus(error)
        return body(code: s.code.name, message: s.message)
    }

    static func response(status: HTTPResponse.Status, code: String, message: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.cacheControl] = "no-store"
        return Response(status: status, headers: headers,
                        body: .init(byteBuffer: ByteBuffer(string: body(code: code, message: message))))
    }

    static func response(for error: any Error, request: Request, logger: Logger) -> Response {
        switch error {
        case let e as HTTPError:
            let message = e.body ?? defaultMessage(e.status, request)
            var r = response(status: e.status, code: code(forHTTP: e.status), message: message)
            for field in e.headers { r.headers.append(field) }
            return r
        case is NIOTooManyBytesError:
            return response(status: .contentTooLarge, code: "PAYLOAD_TOO_LARGE", message: "request body too large")
        case let e as any HTTPResponseError:
            return response(status: e.status, code: code(forHTTP: e.status), message: defaultMessage(e.status, request))
        default:
            let s = GRPCStatus.from(error)
            if s.code == .internal || s.code == .unavailable {
                logger.warning("HTTP call failed", metadata: ["http.path": "\(request.uri.path)", "error": "\(error)"])
            }
            return response(status: httpStatus(s.code), code: s.code.name, message: s.message)
        }
    }

    static func defaultMessage(_ status: HTTPResponse.Status, _ request: Request) -> String {
        switch status.code {
        case 404: "no route for \(request.method) \(request.uri.path)"
        case 405: "method \(request.method) not allowed on \(request.uri.path)"
        default: status.reasonPhrase
        }
    }
}

/// Turns every error, the router's 404 included, into `ErrorJSON`.
struct ErrorJSONMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            return ErrorJSON.response(for: error, request: request, logger: logger)
        }
    }
}
