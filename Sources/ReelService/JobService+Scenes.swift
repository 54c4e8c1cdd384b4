import ReelCore
import ReelWire
import ReelHTTP2

/// `reel.v1.SceneService`: versioned scene bibles, per tenant.
extension JobService {
    func addSceneRoutes(to r: inout GRPCRouter) {
        let s = self
        r.add("/reel.v1.SceneService/PutSceneBible", GRPCRoute(.unary) { call in await s.authorized(call) { try await s.putSceneBible($0, $1) } })
        r.add("/reel.v1.SceneService/GetScene", GRPCRoute(.unary) { call in await s.authorized(call) { try await s.getScene($0, $1) } })
    }

    func putSceneBible(_ req: [UInt8], _ caller: Caller) async throws -> [UInt8] {
        let (sceneID, bible) = try ProtoCodec.decodePutSceneBibleRequest(req)
        try Validate.identifier(sceneID, field: "scene_id")
        return ProtoCodec.encode(try await store.putSceneBible(tenantID: caller.tenantID, sceneID: sceneID, bible: try bible.validated()))
    }

    func getScene(_ req: [UInt8], _ caller: Caller) async throws -> [UInt8] {
        let sceneID = try ProtoCodec.decodeGetSceneRequest(req)
        try Validate.identifier(sceneID, field: "scene_id")
        guard let scene = try await store.scene(tenantID: caller.tenantID, id: sceneID) else {
            throw ReelError(.notFound, "scene \(sceneID) not found")
        }
        return ProtoCodec.encode(scene)
    }
}
