/// Raw values are the wire enum numbers (DESIGN §2), so the mapping to and from protobuf is
/// total; `name` is the lowercase form stored in Postgres (`NamedEnum`).
public enum Quality: Int32, Sendable, CaseIterable {
    case unspecified = 0, preview = 1, standard = 2, high = 3

    public var name: String {
        switch self {
        case .unspecified: "unspecified"
        case .preview: "preview"
        case .standard: "standard"
        case .high: "high"
        }
    }
}

extension Quality: NamedEnum {}
