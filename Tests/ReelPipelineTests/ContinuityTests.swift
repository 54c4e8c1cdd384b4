import Foundation
import Testing
import ReelCore
@testable import ReelPipeline

@Suite struct ContinuityTests {
    let bible = SceneBible(
        characters: [.init(name: "Mara", aliases: ["the keeper"], description: "lighthouse keeper")],
        locations: [.init(name: "North Light", aliases: ["the lighthouse"])],
        style: ["palette": "cold blue"], forbidden: ["Dragon"])

    func job(_ text: String, overrides: [String: String] = [:]) -> Job {
        Job(id: "j", userID: "u", sceneID: "s", type: .continuation, inputText: text, bibleVersion: 2,
            config: JobConfig(styleOverrides: overrides))
    }

    @Test func expansionUsesTheBibleAndTheLatestSegment() {
        let ctx = SceneContext(bible: bible, recentScripts: ["SCENE s\nACTION: the storm breaks"])
        let script = ScriptWriter.expand(job("the keeper lights the lamp"), context: ctx)
        #expect(script.contains("PREVIOUSLY: the storm breaks"))
        #expect(script.contains("CHARACTER Mara: lighthouse keeper"))
        #expect(!script.contains("LOCATION North Light"), "the location is not mentioned")
        #expect(script.contains("STYLE palette: cold blue"))
        #expect(script.hasSuffix("ACTION: the keeper lights the lamp"))
    }

    @Test func aliasesAndLockedStyleAreAutoCorrected() throws {
        let script = ScriptWriter.expand(job("the keeper walks to the lighthouse", overrides: ["palette": "red", "lens": "35mm"]),
                                         context: SceneContext(bible: bible, recentScripts: []))
        let out = ContinuityChecker(bible: bible).check(script, overrides: ["palette": "red", "lens": "35mm"])
        #expect(out.valid)
        #expect(out.script.contains("ACTION: Mara walks to North Light"))
        #expect(out.script.contains("STYLE palette: cold blue") && out.script.contains("STYLE lens: 35mm"))
        #expect(out.corrections.count == 3)
        struct ValidationResult: Decodable, Equatable {
            var valid: Bool
            var bible_version: Int32
            var auto_corrected: [String]
            var violations: [String]
        }
        let result = try JSONDecoder().decode(ValidationResult.self, from: Data(out.json(bibleVersion: 2).utf8))
        #expect(result == ValidationResult(valid: true, bible_version: 2, auto_corrected: out.corrections, violations: []))
    }

    @Test func forbiddenTermsAreViolationsWhateverTheirCase() {
        let out = ContinuityChecker(bible: bible).check("ACTION: a dragon circles", overrides: [:])
        #expect(!out.valid)
        #expect(out.violations == ["\"Dragon\" contradicts the scene bible"])
        #expect(out.json(bibleVersion: 1).contains("\"violations\":[\"\\\"Dragon\\\" contradicts the scene bible\"]"))
    }

    @Test func emptyBibleChangesNothing() {
        let out = ContinuityChecker(bible: .empty).check("ACTION: anything", overrides: ["x": "y"])
        #expect(out == .init(script: "ACTION: anything", corrections: [], violations: []))
    }
}
