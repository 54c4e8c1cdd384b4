internal import CReelProto
#if canImport(Glibc)
import Glibc
#endif

/// gRPC server reflection messages. v1 and v1alpha share one wire format, so v1alpha's
/// generated code serves both.
public enum ReflectionRequest: Sendable, Equatable {
    case fileByFilename(String)
    case fileContainingSymbol(String)
    case fileContainingExtension(type: String, number: Int32)
    case allExtensionNumbersOfType(String)
    case listServices
    case unset
}

public enum ReflectionResponse: Sendable, Equatable {
    case fileDescriptors([[UInt8]])
    case services([String])
    case extensionNumbers(type: String, numbers: [Int32])
    case error(code: Int32, message: String)
}

extension ProtoCodec {
    /// The request and its raw bytes (echoed back as `original_request`).
    public static func decodeReflectionRequest(_ b: [UInt8]) throws(GRPCStatus) -> (host: String, request: ReflectionRequest) {
        try unpack(b, grpc__reflection__v1alpha__server_reflection_request__unpack,
                   grpc__reflection__v1alpha__server_reflection_request__free_unpacked) { m in
            let r: ReflectionRequest
            switch m.message_request_case.rawValue {
            case 3: r = .fileByFilename(str(m.file_by_filename))
            case 4: r = .fileContainingSymbol(str(m.file_containing_symbol))
            case 5: r = .fileContainingExtension(type: str(m.file_containing_extension?.pointee.containing_type),
                                                  number: m.file_containing_extension?.pointee.extension_number ?? 0)
            case 6: r = .allExtensionNumbersOfType(str(m.all_extension_numbers_of_type))
            case 7: r = .listServices
            default: r = .unset
            }
            return (str(m.host), r)
        }
    }

    public static func encodeReflectionResponse(host: String, originalRequest: [UInt8], _ response: ReflectionResponse) -> [UInt8] {
        let arena = CArena()
        var m = Grpc__Reflection__V1alpha__ServerReflectionResponse()
        grpc__reflection__v1alpha__server_reflection_response__init(&m)
        m.valid_host = arena.str(host)
        let original = originalRequest.withUnsafeBufferPointer {
            grpc__reflection__v1alpha__server_reflection_request__unpack(nil, $0.count, $0.baseAddress)
        }
        defer { if let original { grpc__reflection__v1alpha__server_reflection_request__free_unpacked(original, nil) } }
        m.original_request = original
        switch response {
        case .fileDescriptors(let files):
            let fdr = arena.alloc(Grpc__Reflection__V1alpha__FileDescriptorResponse.self)
            grpc__reflection__v1alpha__file_descriptor_response__init(fdr)
            let items = arena.allocArray(ProtobufCBinaryData.self, count: files.count)
            for (i, f) in files.enumerated() {
                let bytes = arena.allocArray(UInt8.self, count: f.count)
                bytes.initialize(from: f, count: f.count)
                items[i] = ProtobufCBinaryData(len: f.count, data: bytes)
            }
            fdr.pointee.n_file_descriptor_proto = files.count
            fdr.pointee.file_descriptor_proto = items
            m.message_response_case = .init(rawValue: 4)
            m.file_descriptor_response = fdr
        case .services(let names):
            let list = arena.alloc(Grpc__Reflection__V1alpha__ListServiceResponse.self)
            grpc__reflection__v1alpha__list_service_response__init(list)
            let items = arena.allocArray(UnsafeMutablePointer<Grpc__Reflection__V1alpha__ServiceResponse>?.self, count: names.count)
            for (i, n) in names.enumerated() {
                let sr = arena.alloc(Grpc__Reflection__V1alpha__ServiceResponse.self)
                grpc__reflection__v1alpha__service_response__init(sr)
                sr.pointee.name = arena.str(n)
                items[i] = sr
            }
            list.pointee.n_service = names.count
            list.pointee.service = items
            m.message_response_case = .init(rawValue: 6)
            m.list_services_response = list
        case .extensionNumbers(let type, let numbers):
            let en = arena.alloc(Grpc__Reflection__V1alpha__ExtensionNumberResponse.self)
            grpc__reflection__v1alpha__extension_number_response__init(en)
            en.pointee.base_type_name = arena.str(type)
            let items = arena.allocArray(Int32.self, count: numbers.count)
            for (i, n) in numbers.enumerated() { items[i] = n }
            en.pointee.n_extension_number = numbers.count
            en.pointee.extension_number = numbers.isEmpty ? nil : items
            m.message_response_case = .init(rawValue: 5)
            m.all_extension_numbers_response = en
        case .error(let code, let message):
            let er = arena.alloc(Grpc__Reflection__V1alpha__ErrorResponse.self)
            grpc__reflection__v1alpha__error_response__init(er)
            er.pointee.error_code = code
            er.pointee.error_message = arena.str(message)
            m.message_response_case = .init(rawValue: 7)
            m.error_response = er
        }
        return pack(&m, grpc__reflection__v1alpha__server_reflection_response__get_packed_size,
                    grpc__reflection__v1alpha__server_reflection_response__pack)
    }
}
