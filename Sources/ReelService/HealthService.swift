import ReelWire
import ReelHTTP2
import Synchronization

/// `grpc.health.v1.Health` (`Check`, and `Watch` streaming each change): SERVING once migrations ran, NOT_SERVING while the database
/// does not answer (reeld's monitor sets it).
extension JobService {
    func addHealthRoutes(to r: inout GRPCRouter, health: HealthState) {
        let s = self
        r.add("/grpc.health.v1.Health/Check", GRPCRoute(.unary) { call in
            await s.unary(call) { req in
                let service = try ProtoCodec.decodeHealthCheckRequest(req)
                guard service.isEmpty || service == "reel.v1.JobService" else {
                    throw GRPCStatus(.notFound, "unknown service \(service)")
                }
                return ProtoCodec.encodeHealthCheckResponse(status: health.status)
            }
        })
        r.add("/grpc.health.v1.Health/Watch", GRPCRoute(.serverStreaming) { call in
            do {
                _ = try ProtoCodec.decodeHealthCheckRequest(call.request)
                var last: Int32 = -1
                while !Task.isCancelled {
                    let now = health.status
                    if now != last {
                        try await call.send(ProtoCodec.encodeHealthCheckResponse(status: now))
                        last = now
                    }
                    try await Task.sleep(for: .milliseconds(250))
                }
                return GRPCStatus(.cancelled, "watch ended")
            } catch {
                return GRPCStatus.from(error)
            }
        })
    }
}

/// What the health service reports; reeld flips it to SERVING once migrations ran.
public final class HealthState: Sendable {
    private let value = Mutex<Int32>(0)
    public init() {}
    public static let serving: Int32 = 1
    public static let notServing: Int32 = 2
    public var status: Int32 { value.withLock { $0 } }
    public func set(_ s: Int32) { value.withLock { $0 = s } }
}
