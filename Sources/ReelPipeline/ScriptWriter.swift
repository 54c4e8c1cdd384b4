import ReelCore

/// Script expansion and continuity validation (seed 002 §4), first version: the script is
/// built from the input, the scene and the config; validation records what it checked.
enum ScriptWriter {
    static func expand(_ job: Job) -> String {
        let duration = job.config.targetDurationSeconds > 0 ? job.config.targetDurationSeconds : 5
        var lines = [
            "SCENE \(job.sceneID) (bible v\(job.bibleVersion)) — \(job.type == .sceneCreation ? "opening" : "continuation")",
            "DURATION: \(duration)s  QUALITY: \(job.config.quality == .unspecified ? "standard" : job.config.quality.name)",
            "ACTION: \(job.inputText)",
        ]
        for (k, v) in job.config.styleOverrides.sorted(by: { $0.key < $1.key }) { lines.append("STYLE \(k): \(v)") }
        return lines.joined(separator: "\n")
    }

    /// A JSON text (the artifact `validation_result`).
    static func validate(_ job: Job, script: String) -> String {
        let ok = script.contains(job.sceneID)
        return "{\"valid\":\(ok),\"bible_version\":\(job.bibleVersion),\"issues\":[],\"auto_corrected\":[]}"
    }
}
