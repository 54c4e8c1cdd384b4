internal import CNghttp2

// nghttp2's callbacks: capture-less closures that find the client through user_data.
// They run inside nghttp2_session_mem_recv/mem_send on the client's own thread.
extension GRPCClient {
    static func makeSession(userData: UnsafeMutableRawPointer) -> OpaquePointer? {
        var callbacks: OpaquePointer?
        guard nghttp2_session_callbacks_new(&callbacks) == 0, let callbacks else { return nil }
        defer { nghttp2_session_callbacks_del(callbacks) }

        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, userData in
            guard let frame, let userData else { return 0 }
            let client = Unmanaged<GRPCClient>.fromOpaque(userData).takeUnretainedValue()
            guard frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue),
                  let call = client.calls[frame.pointee.hd.stream_id] else { return 0 }
            call.receivingTrailers = call.sawFinalHeaders
            return 0
        }

        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, nameLength, value, valueLength, _, userData in
            guard let frame, let name, let value, let userData else { return 0 }
            let client = Unmanaged<GRPCClient>.fromOpaque(userData).takeUnretainedValue()
            guard frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue),
                  let call = client.calls[frame.pointee.hd.stream_id] else { return 0 }
            call.header(String(decoding: UnsafeBufferPointer(start: name, count: nameLength), as: UTF8.self),
                        String(decoding: UnsafeBufferPointer(start: value, count: valueLength), as: UTF8.self))
            return 0
        }

        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, userData in
            guard let frame, let userData else { return 0 }
            let client = Unmanaged<GRPCClient>.fromOpaque(userData).takeUnretainedValue()
            switch UInt32(frame.pointee.hd.type) {
            case NGHTTP2_HEADERS.rawValue:
                client.calls[frame.pointee.hd.stream_id]?.headerBlockEnded()
            case NGHTTP2_GOAWAY.rawValue:
                // Streams above last_stream_id are closed by nghttp2 (REFUSED_STREAM); the rest
                // may finish. New calls go to a new connection.
                client.goawayReceived = true
            default:
                break
            }
            return 0
        }

        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, streamID, data, length, userData in
            guard let userData else { return 0 }
            let client = Unmanaged<GRPCClient>.fromOpaque(userData).takeUnretainedValue()
            guard let call = client.calls[streamID], let data else { return 0 }
            call.receive(data: UnsafeRawBufferPointer(start: data, count: length))
            return 0
        }

        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, streamID, errorCode, userData in
            guard let userData else { return 0 }
            let client = Unmanaged<GRPCClient>.fromOpaque(userData).takeUnretainedValue()
            client.calls[streamID]?.close(resetCode: errorCode)
            return 0
        }

        var session: OpaquePointer?
        guard nghttp2_session_client_new(&session, callbacks, userData) == 0 else { return nil }
        return session
    }

    /// Hands nghttp2 the framed request message, then ends the stream (a gRPC request has no trailers).
    static let readRequestBody: nghttp2_data_source_read_callback = { _, streamID, buffer, length, flags, _, userData in
        guard let userData, let buffer, let flags else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
        let client = Unmanaged<GRPCClient>.fromOpaque(userData).takeUnretainedValue()
        guard let call = client.calls[streamID] else {
            return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
        }
        let n = min(length, call.body.count - call.bodyOffset)
        call.body.withUnsafeBytes { bytes in
            buffer.update(from: bytes.baseAddress!.assumingMemoryBound(to: UInt8.self) + call.bodyOffset, count: n)
        }
        call.bodyOffset += n
        if call.bodyOffset == call.body.count { flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue }
        return n
    }
}
