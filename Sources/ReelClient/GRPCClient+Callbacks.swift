internal import CNghttp2

// nghttp2's callbacks: capture-less closures that find the connection through user_data.
// They run inside nghttp2_session_mem_recv/mem_send on the connection's loop thread.
private func connection(_ userData: UnsafeMutableRawPointer) -> GRPCClient.Connection {
    Unmanaged<GRPCClient.Connection>.fromOpaque(userData).takeUnretainedValue()
}

extension GRPCClient.Connection {
    static func makeSession(userData: UnsafeMutableRawPointer) -> OpaquePointer? {
        var callbacks: OpaquePointer?
        guard nghttp2_session_callbacks_new(&callbacks) == 0, let callbacks else { return nil }
        defer { nghttp2_session_callbacks_del(callbacks) }

        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, userData in
            guard let frame, let userData, frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue),
                  let wire = connection(userData).streams[frame.pointee.hd.stream_id]?.wire else { return 0 }
            wire.receivingTrailers = wire.sawFinalHeaders
            return 0
        }

        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, nameLength, value, valueLength, _, userData in
            guard let frame, let name, let value, let userData, nameLength > 0,
                  frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue),
                  let wire = connection(userData).streams[frame.pointee.hd.stream_id]?.wire else { return 0 }
            // Only pseudo-headers and grpc-* decide a call's outcome: skip building the rest.
            let isPseudo = name[0] == UInt8(ascii: ":")
            let isGRPC = nameLength > 5 && name[0] == UInt8(ascii: "g") && name[1] == UInt8(ascii: "r")
                && name[2] == UInt8(ascii: "p") && name[3] == UInt8(ascii: "c") && name[4] == UInt8(ascii: "-")
            guard isPseudo || isGRPC else { return 0 }
            wire.header(String(decoding: UnsafeBufferPointer(start: name, count: nameLength), as: UTF8.self),
                        String(decoding: UnsafeBufferPointer(start: value, count: valueLength), as: UTF8.self))
            return 0
        }

        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { session, frame, userData in
            guard let session, let frame, let userData else { return 0 }
            let owner = connection(userData)
            switch UInt32(frame.pointee.hd.type) {
            case NGHTTP2_HEADERS.rawValue:
                owner.streams[frame.pointee.hd.stream_id]?.wire?.headerBlockEnded()
            case NGHTTP2_SETTINGS.rawValue where frame.pointee.hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) == 0:
                let limit = nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
                owner.serverMaxStreams = Int(clamping: limit)
                owner.scheduleService()
            case NGHTTP2_GOAWAY.rawValue:
                // nghttp2 closes the streams above last_stream_id (REFUSED_STREAM: retried);
                // the rest may finish. New calls wait for a new connection.
                owner.goingAway = true
                owner.scheduleService()
            default:
                break
            }
            return 0
        }

        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, streamID, data, length, userData in
            guard let userData, let data else { return 0 }
            connection(userData).received(UnsafeRawBufferPointer(start: data, count: length), streamID: streamID)
            return 0
        }

        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, streamID, errorCode, userData in
            guard let userData else { return 0 }
            connection(userData).streamClosed(streamID, errorCode: errorCode)
            return 0
        }

        var session: OpaquePointer?
        guard nghttp2_session_client_new(&session, callbacks, userData) == 0 else { return nil }
        return session
    }

    /// Hands nghttp2 the framed request message, then ends the stream (a gRPC request has no trailers).
    static let readRequestBody: nghttp2_data_source_read_callback = { _, streamID, buffer, length, flags, _, userData in
        guard let userData, let buffer, let flags else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
        guard let wire = connection(userData).streams[streamID]?.wire else {
            return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
        }
        let n = min(length, wire.body.count - wire.bodyOffset)
        wire.body.withUnsafeBytes { bytes in
            buffer.update(from: bytes.baseAddress!.assumingMemoryBound(to: UInt8.self) + wire.bodyOffset, count: n)
        }
        wire.bodyOffset += n
        if wire.bodyOffset == wire.body.count { flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue }
        return n
    }
}
