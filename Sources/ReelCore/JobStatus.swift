/// Raw values are the wire enum numbers (DESIGN §2), so the mapping to and from protobuf is
/// total; `name` is the lowercase form stored in Postgres (`NamedEnum`).
public enum JobStatus: Int32, Sendable, CaseIterable {
    case unspecified = 0, queued, processing, scriptReady, continuityChecked, previewReady, finalReady, failed, cancelled

    public var name: String {
        switch self {
        case .unspecified: "unspecified"
        case .queued: "queued"
        case .processing: "processing"
        case .scriptReady: "script_ready"
        case .continuityChecked: "continuity_checked"
        case .previewReady: "preview_ready"
        case .finalReady: "final_ready"
        case .failed: "failed"
        case .cancelled: "cancelled"
        }
    }
}

extension JobStatus: NamedEnum {}
