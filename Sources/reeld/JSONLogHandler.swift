import Foundation
import Logging
import Synchronization

/// One JSON object per line on stderr: ts, level, msg, label, source, and the metadata
/// (`reel.job_id`, `grpc.method`, …) as top-level keys.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    private static let lock = Mutex(())

    init(label: String) { self.label = label }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var object: [String: Value] = [
            "ts": .string(ISO8601DateFormatter.string(from: Date(), timeZone: .gmt,
                                                      formatOptions: [.withInternetDateTime, .withFractionalSeconds])),
            "level": .string(event.level.rawValue), "msg": .string("\(event.message)"), "label": .string(label),
            "source": .string(event.source),
        ]
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { $1 } }
        if let extra = event.metadata { all.merge(extra) { $1 } }
        for (k, v) in all { object[k] = Value(v) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(object) else { return }
        var line = data
        line.append(0x0A)
        Self.lock.withLock { _ in FileHandle.standardError.write(line) }
    }

    /// A metadata value as JSON: strings, arrays and objects of them.
    enum Value: Encodable {
        case string(String)
        case array([Value])
        case object([String: Value])

        init(_ v: Logger.Metadata.Value) {
            switch v {
            case .string(let s): self = .string(s)
            case .stringConvertible(let c): self = .string("\(c)")
            case .array(let a): self = .array(a.map(Value.init))
            case .dictionary(let d): self = .object(d.mapValues(Value.init))
            }
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            switch self {
            case .string(let s): try c.encode(s)
            case .array(let a): try c.encode(a)
            case .object(let o): try c.encode(o)
            }
        }
    }
}
