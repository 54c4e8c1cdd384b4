import ArgumentParser
import Foundation
import ReelCore
import ReelJSON

/// `reelctl scene put|get`: a scene's versioned bible.
struct SceneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scene", abstract: "Show or set a scene's bible (characters, locations, style, forbidden terms).",
        subcommands: [Put.self, Get.self])

    struct Put: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "put", abstract: "Store a new bible version from a JSON file.",
            discussion: """
            The file: {"characters":[{"name":"Mara","aliases":["the keeper"],"description":"…"}],
                       "locations":[{"name":"North Light","aliases":["the lighthouse"]}],
                       "style":{"palette":"cold blue"},"forbidden":["dragon"]}
            """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The scene id.") var sceneID: String
        @Option(name: .long, help: "Path of the bible JSON (- for standard input).") var file: String

        func run() throws {
            let data = file == "-" ? FileHandle.standardInput.readDataToEndOfFile()
                : try Data(contentsOf: URL(fileURLWithPath: file))
            let bible: SceneBible
            do { bible = try JSONDecoder().decode(SceneBible.self, from: data) } catch {
                throw ValidationError("\(file) is not a bible: \(error)")
            }
            try CallFailure.reporting {
                let scene = try global.connect().putSceneBible(sceneID: sceneID, bible: bible)
                Terminal.out(SceneCommand.describe(scene, json: global.json))
            }
        }
    }

    struct Get: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "get", abstract: "Show a scene and its current bible.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The scene id.") var sceneID: String

        func run() throws {
            try CallFailure.reporting {
                Terminal.out(SceneCommand.describe(try global.connect().getScene(sceneID: sceneID), json: global.json))
            }
        }
    }

    static func describe(_ s: Scene, json: Bool) -> String {
        if json { return JSONCoding.encode(SceneJSON(s)) }
        let bible = JSONCoding.encode(s.bible)
        return """
        id:             \(s.id)
        bible_version:  \(s.bibleVersion)
        segments:       \(s.segmentCount) (\(s.totalDurationSeconds) s)
        bible:          \(bible)
        """
    }
}
