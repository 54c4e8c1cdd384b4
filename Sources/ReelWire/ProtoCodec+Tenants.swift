internal import CReelProto
import ReelCore
#if canImport(Glibc)
import Glibc
#endif

/// `reel.v1.TenantService` messages.
extension ProtoCodec {
    public static func decodeSetBudgetRequest(_ b: [UInt8]) throws(GRPCStatus) -> (tenantID: String, limitUnits: Double, periodSeconds: Int64) {
        try unpack(b, reel__v1__set_budget_request__unpack, reel__v1__set_budget_request__free_unpacked) {
            (str($0.tenant_id), $0.limit_units, $0.period_seconds)
        }
    }

    public static func decodeGetBudgetRequest(_ b: [UInt8]) throws(GRPCStatus) -> String {
        try unpack(b, reel__v1__get_budget_request__unpack, reel__v1__get_budget_request__free_unpacked) { str($0.tenant_id) }
    }

    public static func encode(_ budget: TenantBudget) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__Budget()
        reel__v1__budget__init(&m)
        m.tenant_id = arena.str(budget.tenantID)
        m.limit_units = budget.limitUnits
        m.spent_units = budget.spentUnits
        m.reserved_units = budget.reservedUnits
        m.period_start_unix_ms = budget.periodStartUnixMs
        m.period_seconds = budget.periodSeconds
        return pack(&m, reel__v1__budget__get_packed_size, reel__v1__budget__pack)
    }

    public static func encodeSetBudgetRequest(tenantID: String, limitUnits: Double, periodSeconds: Int64) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__SetBudgetRequest()
        reel__v1__set_budget_request__init(&m)
        m.tenant_id = arena.str(tenantID)
        m.limit_units = limitUnits
        m.period_seconds = periodSeconds
        return pack(&m, reel__v1__set_budget_request__get_packed_size, reel__v1__set_budget_request__pack)
    }

    public static func encodeGetBudgetRequest(tenantID: String) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__GetBudgetRequest()
        reel__v1__get_budget_request__init(&m)
        m.tenant_id = arena.str(tenantID)
        return pack(&m, reel__v1__get_budget_request__get_packed_size, reel__v1__get_budget_request__pack)
    }

    public static func decodeSetWeightRequest(_ b: [UInt8]) throws(GRPCStatus) -> (tenantID: String, weight: Double) {
        try unpack(b, reel__v1__set_weight_request__unpack, reel__v1__set_weight_request__free_unpacked) {
            (str($0.tenant_id), $0.weight)
        }
    }

    public static func decodeGetWeightRequest(_ b: [UInt8]) throws(GRPCStatus) -> String {
        try unpack(b, reel__v1__get_weight_request__unpack, reel__v1__get_weight_request__free_unpacked) { str($0.tenant_id) }
    }

    public static func encodeTenantWeight(tenantID: String, weight: Double) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__TenantWeight()
        reel__v1__tenant_weight__init(&m)
        m.tenant_id = arena.str(tenantID)
        m.weight = weight
        return pack(&m, reel__v1__tenant_weight__get_packed_size, reel__v1__tenant_weight__pack)
    }

    public static func decodeTenantWeight(_ b: [UInt8]) throws(GRPCStatus) -> (tenantID: String, weight: Double) {
        try unpack(b, reel__v1__tenant_weight__unpack, reel__v1__tenant_weight__free_unpacked) { (str($0.tenant_id), $0.weight) }
    }

    public static func encodeSetWeightRequest(tenantID: String, weight: Double) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__SetWeightRequest()
        reel__v1__set_weight_request__init(&m)
        m.tenant_id = arena.str(tenantID)
        m.weight = weight
        return pack(&m, reel__v1__set_weight_request__get_packed_size, reel__v1__set_weight_request__pack)
    }

    public static func encodeGetWeightRequest(tenantID: String) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__GetWeightRequest()
        reel__v1__get_weight_request__init(&m)
        m.tenant_id = arena.str(tenantID)
        return pack(&m, reel__v1__get_weight_request__get_packed_size, reel__v1__get_weight_request__pack)
    }

    public static func decodeBudget(_ b: [UInt8]) throws(GRPCStatus) -> TenantBudget {
        try unpack(b, reel__v1__budget__unpack, reel__v1__budget__free_unpacked) {
            TenantBudget(tenantID: str($0.tenant_id), limitUnits: $0.limit_units, spentUnits: $0.spent_units,
                         reservedUnits: $0.reserved_units, periodStartUnixMs: $0.period_start_unix_ms,
                         periodSeconds: $0.period_seconds)
        }
    }
}
