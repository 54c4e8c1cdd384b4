import ReelCore

/// `Scene`, its bible as stored.
public struct SceneJSON: Codable, Sendable, Equatable {
    public var id: String
    public var bibleVersion: Int32
    public var segmentCount: Int32
    public var totalDurationSeconds: Double
    public var bible: SceneBible

    public init(_ s: Scene) {
        id = s.id; bibleVersion = s.bibleVersion; segmentCount = s.segmentCount
        totalDurationSeconds = s.totalDurationSeconds; bible = s.bible
    }
}
