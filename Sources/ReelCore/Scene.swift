/// A scene's bible (seed 002 §4): who and where the story may show, and its locked style.
/// Versioned: every change makes a new version; a job reads the version it was created with.
public struct SceneBible: Sendable, Equatable, Codable {
    public struct Entity: Sendable, Equatable, Codable {
        public var name: String
        public var aliases: [String]
        public var description: String
        public init(name: String, aliases: [String] = [], description: String = "") {
            self.name = name; self.aliases = aliases; self.description = description
        }

        private enum CodingKeys: String, CodingKey { case name, aliases, description }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decode(String.self, forKey: .name)
            aliases = try c.decodeIfPresent([String].self, forKey: .aliases) ?? []
            description = try c.decodeIfPresent(String.self, forKey: .description) ?? ""
        }
    }

    public var characters: [Entity]
    public var locations: [Entity]
    /// Style keys the bible locks (e.g. "palette": "teal and orange"); overrides may not change them.
    public var style: [String: String]
    /// Terms that break continuity wherever they appear (e.g. a character who died).
    public var forbidden: [String]

    public init(characters: [Entity] = [], locations: [Entity] = [], style: [String: String] = [:], forbidden: [String] = []) {
        self.characters = characters; self.locations = locations; self.style = style; self.forbidden = forbidden
    }

    public static let empty = SceneBible()

    private enum CodingKeys: String, CodingKey { case characters, locations, style, forbidden }

    /// Every key is optional: `{"forbidden": ["dragon"]}` is a whole bible.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        characters = try c.decodeIfPresent([Entity].self, forKey: .characters) ?? []
        locations = try c.decodeIfPresent([Entity].self, forKey: .locations) ?? []
        style = try c.decodeIfPresent([String: String].self, forKey: .style) ?? [:]
        forbidden = try c.decodeIfPresent([String].self, forKey: .forbidden) ?? []
    }

    public func validated() throws(ReelError) -> SceneBible {
        if characters.count > 200 || locations.count > 200 { throw .invalid("bible", "at most 200 characters and 200 locations") }
        for e in characters + locations {
            if e.name.trimmed.isEmpty { throw .invalid("bible", "every character and location needs a name") }
            if e.name.unicodeScalars.count > 128 || e.aliases.count > 20 || e.description.unicodeScalars.count > 2000 {
                throw .invalid("bible", "names are at most 128 characters, 20 aliases, descriptions 2000 characters")
            }
        }
        if style.count > 64 || forbidden.count > 200 { throw .invalid("bible", "at most 64 style keys and 200 forbidden terms") }
        return self
    }
}

public struct Scene: Sendable, Equatable {
    public var id: String
    public var bibleVersion: Int32
    public var bible: SceneBible
    public var segmentCount: Int32
    public var totalDurationSeconds: Double
    public init(id: String, bibleVersion: Int32, bible: SceneBible, segmentCount: Int32, totalDurationSeconds: Double) {
        self.id = id; self.bibleVersion = bibleVersion; self.bible = bible
        self.segmentCount = segmentCount; self.totalDurationSeconds = totalDurationSeconds
    }
}

/// What script expansion reads: the bible at the job's version and the scene's latest segments.
public struct SceneContext: Sendable, Equatable {
    public var bible: SceneBible
    public var recentScripts: [String]
    /// The job that made the scene's latest segment (a continuation starts from its last frame).
    public var latestSegmentJobID: String?
    public init(bible: SceneBible, recentScripts: [String]) { self.bible = bible; self.recentScripts = recentScripts }
}

extension String {
    /// Without leading and trailing whitespace.
    public var trimmed: String {
        var s = Substring(self)
        while s.first?.isWhitespace == true { s.removeFirst() }
        while s.last?.isWhitespace == true { s.removeLast() }
        return String(s)
    }
}
