/// RFC 8259's grammar, checked before `JSONDecoder` maps the bytes to types. Foundation's
/// decoder accepts trailing commas, a byte-order mark and duplicate member names (the last one
/// wins) and nests 512 deep; what clients send Reel gets none of that.
public enum JSONSyntax {
    public static let maxDepth = 32

    public struct Violation: Error, Equatable, CustomStringConvertible {
        public let message: String
        public let offset: Int
        public var description: String { "malformed JSON at byte \(offset): \(message)" }
    }

    /// Throws at the first byte that breaks the grammar, at a member name an object already has,
    /// and at nesting deeper than `maxDepth`.
    public static func check(_ bytes: [UInt8]) throws(Violation) {
        var s = Scanner(bytes: bytes)
        s.skipSpace()
        try s.value(depth: 0)
        s.skipSpace()
        guard s.i == bytes.count else { throw s.violation("unexpected data after the JSON value") }
    }

    private struct Scanner {
        let bytes: [UInt8]
        var i = 0

        func violation(_ m: String) -> Violation { Violation(message: m, offset: i) }

        mutating func skipSpace() {
            while i < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 }
        }

        mutating func expect(_ word: String) throws(Violation) {
            for c in word.utf8 {
                guard i < bytes.count, bytes[i] == c else { throw violation("expected '\(word)'") }
                i += 1
            }
        }

        /// After `[` or `{` and its first member: true at `,`, false at the closing bracket.
        mutating func more(closing: UInt8) throws(Violation) -> Bool {
            skipSpace()
            guard i < bytes.count else { throw violation("unexpected end of input") }
            if bytes[i] == UInt8(ascii: ",") { i += 1; return true }
            if bytes[i] == closing { i += 1; return false }
            throw violation("expected ',' or '\(Character(Unicode.Scalar(closing)))'")
        }

        mutating func value(depth: Int) throws(Violation) {
            guard depth < JSONSyntax.maxDepth else { throw violation("nested deeper than \(JSONSyntax.maxDepth) levels") }
            guard i < bytes.count else { throw violation("unexpected end of input") }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                i += 1
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return }
                var names: Set<String> = []
                repeat {
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw violation("expected a member name") }
                    let name = try string()
                    guard names.insert(name).inserted else { throw violation("duplicate member '\(name.prefix(64))'") }
                    skipSpace()
                    try expect(":")
                    skipSpace()
                    try value(depth: depth + 1)
                } while try more(closing: UInt8(ascii: "}"))
            case UInt8(ascii: "["):
                i += 1
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return }
                repeat {
                    skipSpace()
                    try value(depth: depth + 1)
                } while try more(closing: UInt8(ascii: "]"))
            case UInt8(ascii: "\""): _ = try string()
            case UInt8(ascii: "t"): try expect("true")
            case UInt8(ascii: "f"): try expect("false")
            case UInt8(ascii: "n"): try expect("null")
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try number()
            default: throw violation("unexpected character")
            }
        }

        mutating func digits() -> Int {
            let start = i
            while i < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[i]) { i += 1 }
            return i - start
        }

        mutating func number() throws(Violation) {
            if bytes[i] == UInt8(ascii: "-") { i += 1 }
            let intStart = i
            let intDigits = digits()
            guard intDigits > 0 else { throw violation("malformed number") }
            // "0" and "0.5" are fine; "01" is not.
            if intDigits > 1 && bytes[intStart] == UInt8(ascii: "0") { throw violation("number with a leading zero") }
            if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
                i += 1
                guard digits() > 0 else { throw violation("malformed number") }
            }
            if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
                i += 1
                if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
                guard digits() > 0 else { throw violation("malformed number") }
            }
        }

        mutating func hex4() throws(Violation) -> UInt32 {
            guard i + 4 <= bytes.count else { throw violation("short \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                guard let d = Character(Unicode.Scalar(bytes[i])).hexDigitValue else { throw violation("bad \\u escape") }
                v = v * 16 + UInt32(d)
                i += 1
            }
            return v
        }

        /// The string at `i` (its opening quote), decoded: member names are compared as text.
        mutating func string() throws(Violation) -> String {
            i += 1
            var out: [UInt8] = []
            while true {
                guard i < bytes.count else { throw violation("unterminated string") }
                let c = bytes[i]
                i += 1
                switch c {
                case UInt8(ascii: "\""):
                    guard let s = String(validating: out, as: UTF8.self) else { throw violation("string is not valid UTF-8") }
                    return s
                case UInt8(ascii: "\\"):
                    guard i < bytes.count else { throw violation("unterminated string") }
                    let e = bytes[i]
                    i += 1
                    switch e {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try hex4()
                        if (0xD800..<0xDC00).contains(scalar) {
                            guard i + 2 <= bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u")
                            else { throw violation("lone surrogate") }
                            i += 2
                            let low = try hex4()
                            guard (0xDC00..<0xE000).contains(low) else { throw violation("lone surrogate") }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        }
                        guard let u = Unicode.Scalar(scalar) else { throw violation("lone surrogate") }
                        out.append(contentsOf: String(Character(u)).utf8)
                    default:
                        throw violation("bad escape")
                    }
                case 0x00..<0x20:
                    throw violation("control character in string")
                default:
                    out.append(c)
                }
            }
        }
    }
}
