/// Raw values are the wire enum numbers (DESIGN §2), so the mapping to and from protobuf is
/// total; `name` is the lowercase form stored in Postgres (`NamedEnum`).
public enum JobType: Int32, Sendable, CaseIterable {
    case unspecified = 0, sceneCreation = 1, continuation = 2

    public var name: String {
        switch self {
        case .unspecified: "unspecified"
        case .sceneCreation: "scene_creation"
        case .continuation: "continuation"
        }
    }
}

extension JobType: NamedEnum {}
