/// Raw values are the wire enum numbers (DESIGN §2), so the mapping to and from protobuf is
/// total; `name` is the lowercase form stored in Postgres (`NamedEnum`).
public enum Stage: Int32, Sendable, CaseIterable {
    case unspecified = 0, pending, scriptExpansion, continuityValidation, videoGeneration, upload, finalization, completed, error

    public var name: String {
        switch self {
        case .unspecified: "unspecified"
        case .pending: "pending"
        case .scriptExpansion: "script_expansion"
        case .continuityValidation: "continuity_validation"
        case .videoGeneration: "video_generation"
        case .upload: "upload"
        case .finalization: "finalization"
        case .completed: "completed"
        case .error: "error"
        }
    }
}

extension Stage: NamedEnum {}
