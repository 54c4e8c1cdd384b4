internal import CReelProto
import ReelCore
#if canImport(Glibc)
import Glibc
#endif

/// `reel.v1.KeyService` messages.
extension ProtoCodec {
    public static func decodeCreateKeyRequest(_ b: [UInt8]) throws(GRPCStatus) -> (tenantID: String, admin: Bool, rate: Int32) {
        try unpack(b, reel__v1__create_key_request__unpack, reel__v1__create_key_request__free_unpacked) {
            (str($0.tenant_id), $0.admin != 0, $0.rate_limit_per_second)
        }
    }

    public static func decodeListKeysRequest(_ b: [UInt8]) throws(GRPCStatus) -> String {
        try unpack(b, reel__v1__list_keys_request__unpack, reel__v1__list_keys_request__free_unpacked) { str($0.tenant_id) }
    }

    public static func decodeRevokeKeyRequest(_ b: [UInt8]) throws(GRPCStatus) -> String {
        try unpack(b, reel__v1__revoke_key_request__unpack, reel__v1__revoke_key_request__free_unpacked) { str($0.id) }
    }

    public static func encode(_ key: APIKey, secret: String = "", webhookSecret: String = "") -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__ApiKey()
        fillKey(&m, key, secret: secret, arena)
        m.webhook_secret = arena.str(webhookSecret)
        return pack(&m, reel__v1__api_key__get_packed_size, reel__v1__api_key__pack)
    }

    public static func encode(keys: [APIKey]) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__ListKeysResponse()
        reel__v1__list_keys_response__init(&m)
        let items = arena.allocArray(UnsafeMutablePointer<Reel__V1__ApiKey>?.self, count: keys.count)
        for (i, k) in keys.enumerated() {
            let p = arena.alloc(Reel__V1__ApiKey.self)
            fillKey(&p.pointee, k, secret: "", arena)
            items[i] = p
        }
        m.n_keys = keys.count
        m.keys = keys.isEmpty ? nil : items
        return pack(&m, reel__v1__list_keys_response__get_packed_size, reel__v1__list_keys_response__pack)
    }

    public static func encodeCreateKeyRequest(tenantID: String, admin: Bool, rate: Int32) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__CreateKeyRequest()
        reel__v1__create_key_request__init(&m)
        m.tenant_id = arena.str(tenantID)
        m.admin = admin ? 1 : 0
        m.rate_limit_per_second = rate
        return pack(&m, reel__v1__create_key_request__get_packed_size, reel__v1__create_key_request__pack)
    }

    public static func encodeListKeysRequest(tenantID: String) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__ListKeysRequest()
        reel__v1__list_keys_request__init(&m)
        m.tenant_id = arena.str(tenantID)
        return pack(&m, reel__v1__list_keys_request__get_packed_size, reel__v1__list_keys_request__pack)
    }

    public static func encodeRevokeKeyRequest(id: String) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__RevokeKeyRequest()
        reel__v1__revoke_key_request__init(&m)
        m.id = arena.str(id)
        return pack(&m, reel__v1__revoke_key_request__get_packed_size, reel__v1__revoke_key_request__pack)
    }

    /// A key and, on creation only, its secret.
    public static func decodeAPIKey(_ b: [UInt8]) throws(GRPCStatus) -> (key: APIKey, secret: String) {
        try unpack(b, reel__v1__api_key__unpack, reel__v1__api_key__free_unpacked) { (key($0), str($0.secret)) }
    }

    /// The tenant's completion-webhook signing secret in a CreateKey answer ("" unless this key was its first).
    public static func decodeAPIKeyWebhookSecret(_ b: [UInt8]) throws(GRPCStatus) -> String {
        try unpack(b, reel__v1__api_key__unpack, reel__v1__api_key__free_unpacked) { str($0.webhook_secret) }
    }

    public static func decodeListKeysResponse(_ b: [UInt8]) throws(GRPCStatus) -> [APIKey] {
        try unpack(b, reel__v1__list_keys_response__unpack, reel__v1__list_keys_response__free_unpacked) { m in
            (0..<m.n_keys).compactMap { m.keys[$0].map { key($0.pointee) } }
        }
    }

    private static func key(_ m: Reel__V1__ApiKey) -> APIKey {
        APIKey(id: str(m.id), tenantID: str(m.tenant_id), prefix: str(m.prefix), admin: m.admin != 0,
               rateLimitPerSecond: m.rate_limit_per_second, createdAtUnixMs: m.created_at_unix_ms, revoked: m.revoked != 0)
    }

    private static func fillKey(_ m: inout Reel__V1__ApiKey, _ k: APIKey, secret: String, _ arena: CArena) {
        reel__v1__api_key__init(&m)
        m.id = arena.str(k.id)
        m.tenant_id = arena.str(k.tenantID)
        m.prefix = arena.str(k.prefix)
        m.admin = k.admin ? 1 : 0
        m.rate_limit_per_second = k.rateLimitPerSecond
        m.created_at_unix_ms = k.createdAtUnixMs
        m.revoked = k.revoked ? 1 : 0
        m.secret = arena.str(secret)
    }
}
