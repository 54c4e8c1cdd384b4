import Foundation
import ReelCore

/// Script expansion (seed 002 §4): the user's text becomes a shot script built from the
/// scene's bible (who and where, locked style) and the scene's latest segments.
enum ScriptWriter {
    static func expand(_ job: Job, context: SceneContext) -> String {
        let bible = context.bible
        let duration = job.config.targetDurationSeconds > 0 ? job.config.targetDurationSeconds : 5
        var lines = [
            "SCENE \(job.sceneID) (bible v\(job.bibleVersion)) — \(job.type == .sceneCreation ? "opening" : "continuation")",
            "DURATION: \(duration)s  QUALITY: \(job.config.quality == .unspecified ? "standard" : job.config.quality.name)",
        ]
        if let last = context.recentScripts.last, let action = last.split(separator: "\n").first(where: { $0.hasPrefix("ACTION: ") }) {
            lines.append("PREVIOUSLY: \(action.dropFirst("ACTION: ".count))")
        }
        let text = job.inputText
        for c in bible.characters where mentions(text, c) {
            lines.append("CHARACTER \(c.name)" + (c.description.isEmpty ? "" : ": \(c.description)"))
        }
        for l in bible.locations where mentions(text, l) {
            lines.append("LOCATION \(l.name)" + (l.description.isEmpty ? "" : ": \(l.description)"))
        }
        var style = job.config.styleOverrides
        for (k, v) in bible.style { style[k] = style[k] ?? v }
        for (k, v) in style.sorted(by: { $0.key < $1.key }) { lines.append("STYLE \(k): \(v)") }
        lines.append("ACTION: \(text)")
        return lines.joined(separator: "\n")
    }

    static func mentions(_ text: String, _ e: SceneBible.Entity) -> Bool {
        ([e.name] + e.aliases).contains { !$0.isEmpty && text.localizedStandardContains($0) }
    }
}

/// Continuity validation: checks a script against the bible, corrects what it can
/// (aliases to canonical names, style keys the bible locks) and reports what it can't.
struct ContinuityChecker {
    struct Outcome: Equatable {
        var script: String
        var corrections: [String]
        var violations: [String]
        var valid: Bool { violations.isEmpty }

        /// The `validation_result` artifact (JSON text).
        func json(bibleVersion: Int32) -> String {
            struct ValidationResult: Encodable {
                var valid: Bool
                var bibleVersion: Int32
                var autoCorrected: [String]
                var violations: [String]
                enum CodingKeys: String, CodingKey {
                    case valid, bibleVersion = "bible_version", autoCorrected = "auto_corrected", violations
                }
            }
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let result = ValidationResult(valid: valid, bibleVersion: bibleVersion, autoCorrected: corrections, violations: violations)
            return (try? enc.encode(result)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        }
    }

    let bible: SceneBible

    func check(_ script: String, overrides: [String: String]) -> Outcome {
        var out = script
        var corrections: [String] = []
        for e in bible.characters + bible.locations {
            for alias in e.aliases where !alias.isEmpty && alias != e.name && out.contains(alias) {
                out = out.replacingAll(alias, with: e.name)
                corrections.append("\"\(alias)\" → \"\(e.name)\"")
            }
        }
        for (k, v) in overrides.sorted(by: { $0.key < $1.key }) {
            if let locked = bible.style[k], locked != v {
                out = out.replacingAll("STYLE \(k): \(v)", with: "STYLE \(k): \(locked)")
                corrections.append("style \(k) kept as the bible's \"\(locked)\" (not \"\(v)\")")
            }
        }
        var violations: [String] = []
        let lower = out.lowercased()
        for term in bible.forbidden where !term.isEmpty && lower.contains(term.lowercased()) {
            violations.append("\"\(term)\" contradicts the scene bible")
        }
        return Outcome(script: out, corrections: corrections, violations: violations)
    }
}


extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = self[...]
        while let r = rest.range(of: target) {
            result += rest[..<r.lowerBound]
            result += replacement
            rest = rest[r.upperBound...]
        }
        return result + rest
    }
}
