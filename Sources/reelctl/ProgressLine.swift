import Foundation
import ReelCore

/// The live one-line view of a watched job on a terminal, redrawn in place:
/// `[#########...........]  45%  video_generation  continuity_checked  12.3s  ETA 15.0s  "message"`.
struct ProgressLine {
    let started = ContinuousClock.now
    private(set) var last: JobEvent?
    private static let barWidth = 20

    mutating func draw(_ event: JobEvent, note: String? = nil) {
        last = event
        redraw(note: note)
    }

    /// Redraws the last event, e.g. with a note such as "reconnecting".
    func redraw(note: String? = nil) {
        guard let last else {
            if let note { Terminal.write(1, "\r\u{1B}[2K" + note) }
            return
        }
        var shown = last
        if note != nil { shown.message = "" }
        var line = Self.render(shown, elapsed: elapsed, eta: eta)
        if let note { line += "  (\(note))" }
        Terminal.write(1, "\r\u{1B}[2K" + Self.fit(line, columns: Terminal.columns - 1))
    }

    /// Leaves the last drawing on screen and moves to a fresh line.
    func finish() {
        if last != nil { Terminal.write(1, "\n") }
    }

    var elapsed: String { Self.format(started.duration(to: .now)) }

    /// Time left: the server's ETA when the event has one, else at the pace seen so far
    /// (progress per second since the watch began).
    var eta: String? {
        if let at = last?.etaUnixMs, at > 0 {
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            return Self.format(.milliseconds(max(0, at - now)))
        }
        guard let p = last?.progress, p > 0, p < 100, !(last?.endsWatch ?? true) else { return nil }
        let spent = started.duration(to: .now)
        return Self.format(spent * Double(100 - p) / Double(p))
    }

    static func render(_ e: JobEvent, elapsed: String, eta: String? = nil) -> String {
        let p = Int(min(100, max(0, e.progress)))
        let filled = p * barWidth / 100
        let bar = "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: barWidth - filled) + "]"
        let percent = String(repeating: " ", count: max(0, 3 - String(p).count)) + "\(p)%"
        var line = "\(bar) \(percent)  \(e.stage.name)  \(e.status.name)  \(elapsed)"
        if let eta { line += "  ETA \(eta)" }
        if e.atRisk { line += "  AT RISK (past its deadline)" }
        if !e.message.isEmpty { line += "  \"\(JobFormatting.oneLine(e.message, limit: 200))\"" }
        return line
    }

    static func fit(_ line: String, columns: Int) -> String {
        guard columns > 1, line.count > columns else { return line }
        return String(line.prefix(columns - 1)) + "…"
    }

    static func format(_ d: Duration) -> String {
        let (s, atto) = d.components
        let tenths = Int(s) * 10 + Int(atto / 100_000_000_000_000_000)
        if tenths < 600 { return "\(tenths / 10).\(tenths % 10)s" }
        let seconds = tenths / 10
        if seconds < 3600 { return "\(seconds / 60)m" + (seconds % 60 < 10 ? "0" : "") + "\(seconds % 60)s" }
        return "\(seconds / 3600)h" + (seconds % 3600 / 60 < 10 ? "0" : "") + "\(seconds % 3600 / 60)m"
    }
}
