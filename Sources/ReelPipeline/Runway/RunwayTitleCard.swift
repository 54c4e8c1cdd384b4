import Foundation

extension PostProcessor {
    /// A 1280×720 PNG title card showing `text` (the script's first shot), made with ffmpeg:
    /// the still an image-only model (Runway's `gen4_turbo`) starts a new scene from.
    /// Without a usable font the card is plain (drawtext needs one); it is still a valid image.
    public func titleCard(text: String) async throws -> [UInt8] {
        guard let exe = Self.resolve(ffmpegPath) else {
            throw Pipeline.StageFailure(code: "POSTPROCESS_FAILED", message: "ffmpeg not found (\(ffmpegPath))", retryable: true)
        }
        let dir = artifactsDir + "/.title-cards"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let tag = dir + "/" + UUID().uuidString
        let textFile = tag + ".txt", png = tag + ".png"
        defer {
            try? FileManager.default.removeItem(atPath: textFile)
            try? FileManager.default.removeItem(atPath: png)
        }
        // The text goes through a file, so nothing in it needs escaping for the filter graph.
        let wrapped = Self.wrap(String(text.prefix(400)), width: 48)
        try Data(wrapped.utf8).write(to: URL(fileURLWithPath: textFile))
        let base = ["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=0x1d2433:s=1280x720"]
        let draw = "drawtext=textfile=\(textFile):fontcolor=white:fontsize=38:line_spacing=12:x=(w-text_w)/2:y=(h-text_h)/2"
        var run = try await runTool(exe, base + ["-vf", draw, "-frames:v", "1", png], dir: dir)
        if run.status != 0 {
            logger.notice("title card without text (drawtext failed)", metadata: ["error": "\(run.stderrTail)"])
            run = try await runTool(exe, base + ["-frames:v", "1", png], dir: dir)
        }
        guard run.status == 0, let data = try? await onOwnThread({ try Data(contentsOf: URL(fileURLWithPath: png)) }),
              !data.isEmpty else {
            throw Pipeline.StageFailure(code: "POSTPROCESS_FAILED", message: "ffmpeg title card failed (\(run.how)): \(run.stderrTail)",
                                        retryable: true)
        }
        return [UInt8](data)
    }

    static func wrap(_ text: String, width: Int) -> String {
        var lines: [String] = [], line = ""
        for word in text.split(whereSeparator: \.isWhitespace) {
            if !line.isEmpty && line.count + 1 + word.count > width { lines.append(line); line = "" }
            line += (line.isEmpty ? "" : " ") + word
        }
        if !line.isEmpty { lines.append(line) }
        return lines.prefix(8).joined(separator: "\n")
    }
}
