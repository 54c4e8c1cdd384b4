import ReelCore

/// Enums in protobuf's JSON mapping: written by proto name (`JOB_STATUS_QUEUED`); read by proto
/// name, by short name in any case (`queued`, `scene_creation`) or by number.
public protocol ProtoJSONEnum: NamedEnum where RawValue == Int32 {
    static var protoPrefix: String { get }
}

extension ProtoJSONEnum {
    public var protoName: String { Self.protoPrefix + name.uppercased() }

    /// `raw` as written by a client; an unknown value is `INVALID_ARGUMENT` naming `field`.
    public init(protoJSON raw: String, field: String) throws(ReelError) {
        var s = raw
        if s.hasPrefix(Self.protoPrefix) { s.removeFirst(Self.protoPrefix.count) }
        if let e = Self(name: s.lowercased()) {
            self = e
        } else if let n = Int32(s), let e = Self(rawValue: n) {
            self = e
        } else {
            throw .invalid(field, "unknown value '\(raw.prefix(64))'")
        }
    }
}

extension JobType: ProtoJSONEnum { public static var protoPrefix: String { "JOB_TYPE_" } }
extension Tier: ProtoJSONEnum { public static var protoPrefix: String { "TIER_" } }
extension Quality: ProtoJSONEnum { public static var protoPrefix: String { "QUALITY_" } }
extension JobStatus: ProtoJSONEnum { public static var protoPrefix: String { "JOB_STATUS_" } }
extension Stage: ProtoJSONEnum { public static var protoPrefix: String { "STAGE_" } }
