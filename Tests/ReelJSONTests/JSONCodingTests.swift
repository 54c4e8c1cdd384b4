import Foundation
import Testing
@testable import ReelJSON

struct JSONCodingTests {
    @Test func keysAreSortedSoTheSameValueIsTheSameBytes() {
        let text = JSONCoding.encode(["b": 1, "a": 2, "c": 3])
        #expect(text == #"{"a":2,"b":1,"c":3}"#)
        #expect(JSONCoding.encode(["z": ["y": 1, "x": 2]]) == #"{"z":{"x":2,"y":1}}"#)
    }

    @Test func stringsAreSafeInJSONLinesJavaScriptAndHTML() throws {
        let s = "a\"b\\c\nd\te\u{1}f\u{7F}</script>\u{2028}\u{2029}é/🎬"
        let text = JSONCoding.encode([s])
        #expect(text == #"["a\"b\\c\nd\te\u0001f\u007f\u003c/script>\u2028\u2029é/🎬"]"#)
        #expect(try JSONCoding.decode([String].self, from: Array(text.utf8)) == [s], "escapes round-trip")
    }

    @Test func nonFiniteDoublesUseProtobufsSpelling() {
        #expect(JSONCoding.encode([Double.nan, .infinity, -.infinity, 2.5]) == #"["NaN","Infinity","-Infinity",2.5]"#)
    }

    @Test func int64sAreJSONNumbers() {
        #expect(JSONCoding.encode([Int64(1_795_000_000_123)]) == "[1795000000123]")
    }
}
