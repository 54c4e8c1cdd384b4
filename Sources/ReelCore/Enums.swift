/// Domain enums. Raw values are the wire enum numbers (DESIGN §2), so the mapping to
/// and from protobuf is total; `name` is the lowercase form stored in Postgres.
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

/// Lookup by stored name, shared by every enum above.
public protocol NamedEnum: CaseIterable, RawRepresentable {
    var name: String { get }
}

extension NamedEnum {
    public init?(name: String) {
        guard let match = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = match
    }
}

extension JobType: NamedEnum {}
extension Tier: NamedEnum {}
extension Quality: NamedEnum {}
extension JobStatus: NamedEnum {}
extension Stage: NamedEnum {}
