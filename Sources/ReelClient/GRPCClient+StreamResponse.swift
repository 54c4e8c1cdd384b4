import ReelWire

extension GRPCClient {
    /// What one stream has received so far; nghttp2 callbacks fill it in, the connection drains it.
    final class StreamResponse {
        /// The framed request body and how much of it nghttp2 has taken.
        let body: [UInt8]
        var bodyOffset = 0

        var reader: GRPCMessageReader
        /// Messages received and not yet handed to the caller.
        var messages: [[UInt8]] = []

        /// Response headers (the final, non-1xx block) and trailers, names lowercase.
        var headers: [(String, String)] = []
        var trailers: [(String, String)] = []
        /// True once a final (non-1xx) response header block has ended: later blocks are trailers.
        var sawFinalHeaders = false
        /// The block being received belongs to `trailers`.
        var receivingTrailers = false

        private(set) var isClosed = false
        /// HTTP/2 error code of the stream's end (0 for a clean END_STREAM).
        private(set) var resetCode: UInt32 = 0
        /// A status decided on this side (connection lost, message too large …); it wins.
        private(set) var localStatus: GRPCStatus?

        init(body: [UInt8], maxMessageSize: Int) {
            self.body = body
            self.reader = GRPCMessageReader(maxMessageSize: maxMessageSize)
        }

        func close(resetCode: UInt32) {
            guard !isClosed else { return }
            isClosed = true
            self.resetCode = resetCode
        }

        func close(localStatus: GRPCStatus) {
            if self.localStatus == nil { self.localStatus = localStatus }
            isClosed = true
        }

        /// Records a status decided here while the stream is still open (we reset it next).
        func failLocally(_ status: GRPCStatus) {
            if localStatus == nil { localStatus = status }
        }

        func receive(data: UnsafeRawBufferPointer) {
            guard localStatus == nil else { return }
            do {
                messages.append(contentsOf: try reader.feed(data))
            } catch {
                switch error {
                case .tooLarge(let declared, let limit):
                    failLocally(GRPCStatus(.resourceExhausted,
                                           "response message of \(declared) bytes exceeds the limit of \(limit)"))
                case .compressedUnsupported:
                    failLocally(GRPCStatus(.internal, "compressed response message, but no compression was accepted"))
                case .badFlag(let flag):
                    failLocally(GRPCStatus(.internal, "bad message flag \(flag) in response"))
                }
            }
        }

        func header(_ name: String, _ value: String) {
            if receivingTrailers { trailers.append((name, value)) } else { headers.append((name, value)) }
        }

        /// Called when a header block ends: a 1xx block is dropped, a final one makes later blocks trailers.
        func headerBlockEnded() {
            if receivingTrailers { return }
            if let status = Self.value(":status", in: headers), status.hasPrefix("1"), status.count == 3 {
                headers.removeAll()
                return
            }
            sawFinalHeaders = true
        }

        /// The call's outcome once the stream is closed (gRPC over HTTP/2 rules).
        func finalStatus() -> GRPCStatus {
            if let localStatus { return localStatus }
            // Trailers if any; a trailers-only response carries grpc-status in its one header block.
            let block = trailers.isEmpty ? headers : trailers
            if let raw = Self.value("grpc-status", in: block) {
                let message = PercentEncoding.decode(Self.value("grpc-message", in: block) ?? "")
                guard let code = Int(raw.trimmingSpaces), code >= 0 else {
                    return GRPCStatus(.unknown, "malformed grpc-status \"\(raw)\"" + (message.isEmpty ? "" : ": \(message)"))
                }
                let status = GRPCStatus(GRPCStatus.Code(rawValue: code), message)
                if status.code == .ok && reader.hasPartialMessage {
                    return GRPCStatus(.internal, "response stream ended inside a message (\(reader.pendingBytes) bytes pending)")
                }
                return status
            }
            if resetCode != 0 { return Self.status(forHTTP2Error: resetCode) }
            if let http = Self.value(":status", in: headers), http != "200" {
                return Self.status(forHTTPStatus: http)
            }
            if headers.isEmpty { return GRPCStatus(.unknown, "stream ended without a response") }
            return GRPCStatus(.unknown, "response without grpc-status")
        }

        static func value(_ name: String, in fields: [(String, String)]) -> String? {
            fields.first(where: { $0.0 == name })?.1
        }

        /// gRPC's HTTP → status mapping, for responses that are not gRPC at all.
        static func status(forHTTPStatus http: String) -> GRPCStatus {
            let code: GRPCStatus.Code = switch http {
            case "400": .internal
            case "401": .unauthenticated
            case "403": .permissionDenied
            case "404": .unimplemented
            case "429", "502", "503", "504": .unavailable
            default: .unknown
            }
            return GRPCStatus(code, "HTTP status \(http) without grpc-status")
        }

        /// gRPC's RST_STREAM error code → status mapping.
        static func status(forHTTP2Error code: UInt32) -> GRPCStatus {
            let status: GRPCStatus.Code = switch code {
            case 0x7: .unavailable          // REFUSED_STREAM: not processed, safe to retry
            case 0x8: .cancelled            // CANCEL
            case 0xb: .resourceExhausted    // ENHANCE_YOUR_CALM
            case 0xc: .permissionDenied     // INADEQUATE_SECURITY
            default: .internal
            }
            if code == 0x7 { return GRPCStatus(status, "the server refused the stream (REFUSED_STREAM): not processed") }
            return GRPCStatus(status, "stream reset by the server (HTTP/2 error \(code))")
        }
    }
}

extension String {
    fileprivate var trimmingSpaces: Substring {
        var s = Substring(self)
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return s
    }
}
