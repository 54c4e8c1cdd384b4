import CProtobufC

/// protobuf-c hands string fields over NUL-terminated, so a NUL inside one would silently cut
/// the value short (and PostgreSQL's `text` can't hold NUL anyway). This walks the encoded
/// message with its descriptor, nested messages and map entries included, and tells whether
/// any string field holds a NUL byte. Bytes fields are not strings and are left alone.
enum ProtoStringScan {
    // ProtobufCType's PROTOBUF_C_TYPE_STRING and PROTOBUF_C_TYPE_MESSAGE (protobuf-c.h).
    static let stringType: UInt32 = 14
    static let messageType: UInt32 = 16

    static func hasNUL(_ bytes: UnsafeBufferPointer<UInt8>, _ desc: UnsafePointer<ProtobufCMessageDescriptor>,
                       depth: Int = 0) -> Bool {
        guard depth < 64, let base = bytes.baseAddress else { return false }
        var i = 0
        let n = bytes.count
        func varint() -> UInt64? {
            var v: UInt64 = 0
            var shift: UInt64 = 0
            while i < n, shift < 64 {
                let b = base[i]; i += 1
                v |= UInt64(b & 0x7f) << shift
                if b & 0x80 == 0 { return v }
                shift += 7
            }
            return nil
        }
        while i < n {
            guard let key = varint() else { return false }
            switch key & 7 {
            case 0: guard varint() != nil else { return false }
            case 1: i += 8
            case 5: i += 4
            case 2:
                guard let len = varint(), len <= UInt64(n - i) else { return false }
                let start = i
                i += Int(len)
                guard key >> 3 <= UInt64(UInt32.max),
                      let field = protobuf_c_message_descriptor_get_field(desc, UInt32(key >> 3)) else { continue }
                let value = UnsafeBufferPointer(start: base + start, count: Int(len))
                switch field.pointee.type.rawValue {
                case stringType:
                    if value.contains(0) { return true }
                case messageType:
                    if let sub = field.pointee.descriptor?.assumingMemoryBound(to: ProtobufCMessageDescriptor.self),
                       hasNUL(value, sub, depth: depth + 1) { return true }
                default: break
                }
            default: return false  // groups: protobuf-c would not have decoded the message
            }
        }
        return false
    }
}
