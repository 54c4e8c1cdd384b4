import Foundation
import Testing
@testable import ReelJSON

/// What the API refuses before Foundation's decoder maps anything: RFC 8259's grammar, member
/// names repeated, and nesting past `maxDepth`. Each case also goes through `JSONCoding.decode`,
/// since that is what the routes call.
struct JSONSyntaxTests {
    struct AnyJSON: Decodable {
        init(from decoder: any Decoder) throws {}
    }

    func check(_ bytes: [UInt8]) throws(JSONSyntax.Violation) { try JSONSyntax.check(bytes) }

    @Test func acceptsEveryKindOfValue() throws {
        for good in ["0", "-0.5", "10", "1e3", "-2.5E-3", "true", "false", "null", "\"\"", "[]", "{}",
                     #" { "a": [1, -2.5e3, true, false, null], "s": "é \"q\" \\ \u00e9 \ud83c\udfac \/", "o": {} } "#] {
            try check(Array(good.utf8))
            _ = try JSONCoding.decode(AnyJSON.self, from: Array(good.utf8))
        }
    }

    @Test func rejectsWhatRFC8259Rejects() {
        let bad: [String] = [
            "", " ", "{", "[1,]", "{\"a\":1,}", "[,1]", "{,}", "\"unterminated", "01", "-01", "00", "1.", ".5", "+1", "-",
            "1e", "1e+", "0x10", "tru", "nul", "{\"a\" 1}", "{a:1}", "[1] 2", "{} {}", "\"\\x\"", "\"\\ud83c\"",
            "\"\\udc00\"", "\"\\u12\"", "\"tab\there\"", "\"nl\nhere\"", "{'a':1}", "NaN", "Infinity", "[1 /* c */]", "\u{0B}1",
        ]
        for text in bad {
            #expect(throws: JSONSyntax.Violation.self, "\(text.debugDescription)") { try check(Array(text.utf8)) }
            #expect(throws: (any Error).self, "\(text.debugDescription)") { _ = try JSONCoding.decode(AnyJSON.self, from: Array(text.utf8)) }
        }
    }

    @Test func rejectsWhatFoundationsDecoderWouldAccept() {
        // JSONDecoder alone takes each of these (Swift 6.3's swift-foundation); the check refuses them.
        for text in ["[1,]", "{\"a\":1,}", "{\"a\":1,\"a\":2}"] {
            #expect(throws: JSONSyntax.Violation.self) { _ = try JSONCoding.decode(AnyJSON.self, from: Array(text.utf8)) }
        }
        #expect(throws: JSONSyntax.Violation.self, "a byte-order mark") {
            _ = try JSONCoding.decode(AnyJSON.self, from: [0xEF, 0xBB, 0xBF] + Array("{}".utf8))
        }
    }

    @Test func rejectsInvalidUTF8() {
        for bytes: [UInt8] in [[0xFF, 0xFE, 0x00, 0x67], [0x22, 0xC3, 0x28, 0x22], [0x22, 0xC0, 0xAF, 0x22],
                               [0x22, 0xED, 0xA0, 0x80, 0x22], Array("{\"".utf8) + [0x80] + Array("\":1}".utf8)] {
            #expect(throws: JSONSyntax.Violation.self, "\(bytes)") { try check(bytes) }
        }
    }

    @Test func rejectsDuplicateMemberNamesAtAnyDepthAndHoweverSpelled() throws {
        for text in [#"{"a":1,"a":2}"#, #"{"a":1,"\u0061":2}"#, #"{"x":[{"k":1,"k":1}]}"#, #"{"é":1,"\u00e9":2}"#] {
            do {
                try check(Array(text.utf8))
                Issue.record("accepted \(text)")
            } catch {
                #expect(error.message.hasPrefix("duplicate member"), "\(text): \(error)")
            }
        }
        // The same name in different objects is fine.
        try check(Array(#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#.utf8))
    }

    @Test func nestingIsBounded() throws {
        func nested(_ n: Int) -> [UInt8] { Array((String(repeating: "[", count: n) + String(repeating: "]", count: n)).utf8) }
        try check(nested(JSONSyntax.maxDepth))
        #expect(throws: JSONSyntax.Violation.self) { try check(nested(JSONSyntax.maxDepth + 1)) }
        // Far past the bound, well inside a request body's size: refused, not a stack overflow.
        #expect(throws: JSONSyntax.Violation.self) { try check(nested(100_000)) }
    }

    @Test func violationsSayWhereAndWhat() {
        do {
            try check(Array("{\"a\": 01}".utf8))
            Issue.record("accepted a leading zero")
        } catch {
            #expect(error.offset == 8 && error.description == "malformed JSON at byte 8: number with a leading zero")
        }
    }
}
