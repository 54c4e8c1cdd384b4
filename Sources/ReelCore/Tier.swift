/// Raw values are the wire enum numbers (DESIGN §2), so the mapping to and from protobuf is
/// total; `name` is the lowercase form stored in Postgres (`NamedEnum`).
public enum Tier: Int32, Sendable, CaseIterable {
    case unspecified = 0, standard = 1, premium = 2

    public var name: String {
        switch self {
        case .unspecified: "unspecified"
        case .standard: "standard"
        case .premium: "premium"
        }
    }
}

extension Tier: NamedEnum {}
