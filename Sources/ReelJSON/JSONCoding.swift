import Foundation

/// Reel's one JSON encoder and decoder configuration, for everything it sends and reads.
public enum JSONCoding {
    /// `value` as JSON text: keys sorted (the same job gives the same bytes, so ETags are
    /// stable across processes), slashes unescaped, non-finite doubles as protobuf's JSON mapping
    /// spells them ("NaN", "Infinity"), and `<`, DEL, U+2028 and U+2029 `\u`-escaped so the text
    /// is also safe in a JSON line, in JavaScript and inside a <script>.
    public static func encode(_ value: some Encodable) -> String {
        let data: Data
        do {
            data = try encoder.encode(value)
        } catch {
            // Reel's JSON types hold strings, integers, booleans and doubles (non-finite ones have a spelling).
            preconditionFailure("JSON encoding of \(type(of: value)) failed: \(error)")
        }
        return htmlSafe(data)
    }

    /// A value of `type` from a JSON text that RFC 8259 allows and that repeats no member name
    /// (`JSONSyntax`). Errors: `JSONSyntax.Violation`, or whatever the type's decoding throws.
    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try JSONSyntax.check(bytes)
        return try JSONDecoder().decode(T.self, from: Data(bytes))
    }

    private static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return e
    }

    /// These bytes only ever occur inside JSON strings, where `\u` escapes mean the same text.
    static func htmlSafe(_ data: Data) -> String {
        guard data.contains(where: { $0 == 0x3C || $0 == 0x7F || $0 == 0xE2 }) else {
            return String(decoding: data, as: UTF8.self)
        }
        let bytes = [UInt8](data)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 16)
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            if b == 0x3C {
                out.append(contentsOf: #"\u003c"#.utf8)
            } else if b == 0x7F {
                out.append(contentsOf: #"\u007f"#.utf8)
            } else if b == 0xE2, i + 2 < bytes.count, bytes[i + 1] == 0x80, bytes[i + 2] == 0xA8 || bytes[i + 2] == 0xA9 {
                out.append(contentsOf: (bytes[i + 2] == 0xA8 ? #"\u2028"# : #"\u2029"#).utf8)
                i += 2
            } else {
                out.append(b)
            }
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }
}
