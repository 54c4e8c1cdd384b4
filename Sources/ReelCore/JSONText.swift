/// JSON string literals, written by hand where Reel emits JSON text itself (reelctl's JSON
/// lines, the validation result, the HTTP API). One escaper for all of them.
public enum JSONText {
    /// Appends `s` as a quoted JSON string. Control characters, DEL, U+2028/U+2029 and `<` are
    /// `\u`-escaped, so the text is safe in a JSON line, in JavaScript and inside a <script>.
    public static func quote(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20 || u.value == 0x7F || u.value == 0x2028 || u.value == 0x2029 || u == "<":
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        out += "\""
    }

    /// `s` as a quoted JSON string.
    public static func quoted(_ s: String) -> String {
        var out = ""
        quote(s, into: &out)
        return out
    }
}
