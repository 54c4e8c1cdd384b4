import ReelWire
import ReelHTTP2

/// gRPC server reflection (v1 and v1alpha), so grpcurl-style tools can list and call the
/// services without the .proto files. Answers from the descriptors `scripts/regen-proto` embeds.
struct ReflectionService: Sendable {
    static let paths = ["/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"]

    func add(to router: inout GRPCRouter) {
        for p in Self.paths { router.add(p, GRPCRoute(.bidiStreaming) { call in await self.serve(call) }) }
    }

    func serve(_ call: GRPCCall) async -> GRPCStatus {
        guard let requests = call.requests else { return GRPCStatus(.internal, "reflection needs a bidi stream") }
        do {
            for await raw in requests {
                let (host, request) = try ProtoCodec.decodeReflectionRequest(raw)
                try await call.send(ProtoCodec.encodeReflectionResponse(host: host, originalRequest: raw, answer(request)))
            }
            return .ok
        } catch {
            return GRPCStatus.from(error)
        }
    }

    func answer(_ request: ReflectionRequest) -> ReflectionResponse {
        switch request {
        case .listServices:
            return .services(ReflectionDescriptors.services)
        case .fileByFilename(let name):
            guard let f = ReflectionDescriptors.files.first(where: { $0.name == name }) else {
                return .error(code: Int32(GRPCStatus.Code.notFound.rawValue), message: "file \(name) not found")
            }
            return .fileDescriptors(withDependencies(f))
        case .fileContainingSymbol(let symbol):
            guard let f = ReflectionDescriptors.files.first(where: { $0.symbols.contains(symbol) }) else {
                return .error(code: Int32(GRPCStatus.Code.notFound.rawValue), message: "symbol \(symbol) not found")
            }
            return .fileDescriptors(withDependencies(f))
        case .allExtensionNumbersOfType(let type):
            guard ReflectionDescriptors.files.contains(where: { $0.symbols.contains(type) }) else {
                return .error(code: Int32(GRPCStatus.Code.notFound.rawValue), message: "type \(type) not found")
            }
            return .extensionNumbers(type: type, numbers: [])
        case .fileContainingExtension(let type, let number):
            return .error(code: Int32(GRPCStatus.Code.notFound.rawValue), message: "no extension \(number) of \(type)")
        case .unset:
            return .error(code: Int32(GRPCStatus.Code.invalidArgument.rawValue), message: "empty reflection request")
        }
    }

    /// The file and, transitively, the files it imports.
    private func withDependencies(_ file: ReflectionDescriptors.File) -> [[UInt8]] {
        var seen: [String] = []
        var out: [[UInt8]] = []
        func visit(_ f: ReflectionDescriptors.File) {
            guard !seen.contains(f.name) else { return }
            seen.append(f.name)
            out.append(f.bytes)
            for d in f.dependencies {
                if let dep = ReflectionDescriptors.files.first(where: { $0.name == d }) { visit(dep) }
            }
        }
        visit(file)
        return out
    }
}
