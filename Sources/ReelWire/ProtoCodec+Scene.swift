internal import CReelProto
import ReelCore
#if canImport(Glibc)
import Glibc
#endif

/// `SceneService` messages.
extension ProtoCodec {
    public static func decodePutSceneBibleRequest(_ b: [UInt8]) throws(GRPCStatus) -> (sceneID: String, bible: SceneBible) {
        try unpack(b, reel__v1__put_scene_bible_request__unpack, reel__v1__put_scene_bible_request__free_unpacked) { m in
            (str(m.scene_id), m.bible.map { bible($0.pointee) } ?? .empty)
        }
    }

    public static func decodeGetSceneRequest(_ b: [UInt8]) throws(GRPCStatus) -> String {
        try unpack(b, reel__v1__get_scene_request__unpack, reel__v1__get_scene_request__free_unpacked) { str($0.scene_id) }
    }

    public static func decodeScene(_ b: [UInt8]) throws(GRPCStatus) -> Scene {
        try unpack(b, reel__v1__scene__unpack, reel__v1__scene__free_unpacked) { m in
            Scene(id: str(m.id), bibleVersion: m.bible_version, bible: m.bible.map { bible($0.pointee) } ?? .empty,
                  segmentCount: m.segment_count, totalDurationSeconds: m.total_duration_seconds)
        }
    }

    public static func encode(_ s: Scene) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__Scene()
        reel__v1__scene__init(&m)
        m.id = arena.str(s.id)
        m.bible_version = s.bibleVersion
        m.bible = fillBible(s.bible, arena)
        m.segment_count = s.segmentCount
        m.total_duration_seconds = s.totalDurationSeconds
        return pack(&m, reel__v1__scene__get_packed_size, reel__v1__scene__pack)
    }

    public static func encodePutSceneBibleRequest(sceneID: String, bible: SceneBible) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__PutSceneBibleRequest()
        reel__v1__put_scene_bible_request__init(&m)
        m.scene_id = arena.str(sceneID)
        m.bible = fillBible(bible, arena)
        return pack(&m, reel__v1__put_scene_bible_request__get_packed_size, reel__v1__put_scene_bible_request__pack)
    }

    public static func encodeGetSceneRequest(sceneID: String) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__GetSceneRequest()
        reel__v1__get_scene_request__init(&m)
        m.scene_id = arena.str(sceneID)
        return pack(&m, reel__v1__get_scene_request__get_packed_size, reel__v1__get_scene_request__pack)
    }

    private static func strings(_ n: Int, _ p: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> [String] {
        (0..<n).map { str(p?[$0]) }
    }

    private static func entities(_ n: Int, _ p: UnsafeMutablePointer<UnsafeMutablePointer<Reel__V1__BibleEntity>?>?) -> [SceneBible.Entity] {
        (0..<n).compactMap { i in
            p?[i].map { e in
                SceneBible.Entity(name: str(e.pointee.name), aliases: strings(e.pointee.n_aliases, e.pointee.aliases),
                                  description: str(e.pointee.description))
            }
        }
    }

    private static func bible(_ m: Reel__V1__SceneBible) -> SceneBible {
        var style: [String: String] = [:]
        for i in 0..<m.n_style { if let e = m.style[i] { style[str(e.pointee.key)] = str(e.pointee.value) } }
        return SceneBible(characters: entities(m.n_characters, m.characters), locations: entities(m.n_locations, m.locations),
                          style: style, forbidden: strings(m.n_forbidden, m.forbidden))
    }

    private static func fillStrings(_ xs: [String], _ arena: CArena) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? {
        guard !xs.isEmpty else { return nil }
        let p = arena.allocArray(UnsafeMutablePointer<CChar>?.self, count: xs.count)
        for (i, x) in xs.enumerated() { p[i] = arena.str(x) }
        return p
    }

    private static func fillEntities(_ xs: [SceneBible.Entity], _ arena: CArena)
        -> UnsafeMutablePointer<UnsafeMutablePointer<Reel__V1__BibleEntity>?>? {
        guard !xs.isEmpty else { return nil }
        let p = arena.allocArray(UnsafeMutablePointer<Reel__V1__BibleEntity>?.self, count: xs.count)
        for (i, x) in xs.enumerated() {
            let e = arena.alloc(Reel__V1__BibleEntity.self)
            reel__v1__bible_entity__init(e)
            e.pointee.name = arena.str(x.name)
            e.pointee.n_aliases = x.aliases.count
            e.pointee.aliases = fillStrings(x.aliases, arena)
            e.pointee.description = arena.str(x.description)
            p[i] = e
        }
        return p
    }

    private static func fillBible(_ b: SceneBible, _ arena: CArena) -> UnsafeMutablePointer<Reel__V1__SceneBible> {
        let m = arena.alloc(Reel__V1__SceneBible.self)
        reel__v1__scene_bible__init(m)
        m.pointee.n_characters = b.characters.count
        m.pointee.characters = fillEntities(b.characters, arena)
        m.pointee.n_locations = b.locations.count
        m.pointee.locations = fillEntities(b.locations, arena)
        if !b.style.isEmpty {
            let entries = arena.allocArray(UnsafeMutablePointer<Reel__V1__SceneBible__StyleEntry>?.self, count: b.style.count)
            for (i, (k, v)) in b.style.sorted(by: { $0.key < $1.key }).enumerated() {
                let e = arena.alloc(Reel__V1__SceneBible__StyleEntry.self)
                reel__v1__scene_bible__style_entry__init(e)
                e.pointee.key = arena.str(k)
                e.pointee.value = arena.str(v)
                entries[i] = e
            }
            m.pointee.n_style = b.style.count
            m.pointee.style = entries
        }
        m.pointee.n_forbidden = b.forbidden.count
        m.pointee.forbidden = fillStrings(b.forbidden, arena)
        return m
    }
}
