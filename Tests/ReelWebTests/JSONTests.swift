import Testing
import ReelCore
@testable import ReelWeb

/// The HTTP side's own JSON: the strict request parser, what the API writes, ETags and errors.
struct JSONValueTests {
    func parse(_ s: String) throws -> JSONValue { try JSONValue.parse(Array(s.utf8)) }

    @Test func parsesEveryKindOfValue() throws {
        #expect(try parse("0") == .number("0") && parse("-0.5") == .number("-0.5") && parse("10") == .number("10"))
        let v = try parse(#" { "a": [1, -2.5e3, true, false, null], "s": "é \"q\" \\ \u00e9 \ud83c\udfac", "o": {} } "#)
        guard case .object(let o) = v else { Issue.record("not an object: \(v)"); return }
        #expect(o["a"] == .array([.number("1"), .number("-2.5e3"), .bool(true), .bool(false), .null]))
        #expect(o["s"] == .string("é \"q\" \\ é 🎬"))
        #expect(o["o"] == .object([:]))
    }

    @Test func rejectsWhatRFC8259Rejects() {
        for bad in ["", "{", "[1,]", "{\"a\":1,}", "\"unterminated", "01", "-01", "00", "1.", "+1", "tru", "{\"a\" 1}",
                    "[1] 2", "\"\\x\"", "\"\\ud83c\"", "\"tab\there\"", "{'a':1}", "NaN"] {
            #expect(throws: JSONValue.ParseError.self, "\(bad)") { _ = try parse(bad) }
        }
    }

    @Test func nestingIsBounded() throws {
        let ok = String(repeating: "[", count: JSONValue.maxDepth) + String(repeating: "]", count: JSONValue.maxDepth)
        _ = try parse(ok)
        let deep = String(repeating: "[", count: JSONValue.maxDepth + 2) + String(repeating: "]", count: JSONValue.maxDepth + 2)
        #expect(throws: JSONValue.ParseError.self) { _ = try parse(deep) }
    }

    @Test func anEventWrittenAsJSONParsesBackToItsFields() throws {
        let e = JobEvent(jobID: "j-1", seq: 7, status: .previewReady, stage: .upload, progress: 88,
                         message: "storing \"video\"\n<script>", atUnixMs: 1_795_000_000_123, deadLettered: false)
        guard case .object(let o) = try parse(JobJSON.encode(e)) else { Issue.record("not an object"); return }
        #expect(o["jobId"] == .string("j-1") && o["seq"] == .number("7") && o["progress"] == .number("88"))
        #expect(o["status"] == .string("JOB_STATUS_PREVIEW_READY") && o["stage"] == .string("STAGE_UPLOAD"))
        #expect(o["message"] == .string("storing \"video\"\n<script>") && o["deadLettered"] == .bool(false))
        #expect(!JobJSON.encode(e).contains("<script>"), "`<` is escaped so the text is safe inside HTML")
    }
}

struct HTTPRulesTests {
    @Test func etagsAreStrongValidatorsOfTheBody() {
        let a = JobAPI.etag("{\"a\":1}"), b = JobAPI.etag("{\"a\":2}")
        #expect(a == JobAPI.etag("{\"a\":1}") && a != b)
        #expect(a.hasPrefix("\"") && a.hasSuffix("\"") && a.count == 18)
        #expect(JobAPI.matches(ifNoneMatch: a, etag: a))
        #expect(JobAPI.matches(ifNoneMatch: "W/\(a)", etag: a), "weak comparison for If-None-Match")
        #expect(JobAPI.matches(ifNoneMatch: "\(b), \(a)", etag: a))
        #expect(JobAPI.matches(ifNoneMatch: "*", etag: a))
        #expect(!JobAPI.matches(ifNoneMatch: b, etag: a))
    }

    @Test func errorsCarryTheGRPCCodeAndAMatchingHTTPStatus() throws {
        let body = ErrorJSON.body(for: ReelError(.notFound, "job x not found")).text
        guard case .object(let o) = try JSONValue.parse(Array(body.utf8)) else { Issue.record("not an object"); return }
        #expect(o["code"] == .string("NOT_FOUND") && o["message"] == .string("job x not found"))
        #expect(ErrorJSON.httpStatus(.notFound).code == 404)
        #expect(ErrorJSON.httpStatus(.invalidArgument).code == 400)
        #expect(ErrorJSON.httpStatus(.failedPrecondition).code == 409)
        #expect(ErrorJSON.httpStatus(.unauthenticated).code == 401)
        #expect(ErrorJSON.httpStatus(.resourceExhausted).code == 429)
        #expect(ErrorJSON.httpStatus(.unavailable).code == 503)
        #expect(ErrorJSON.code(forHTTP: .init(code: 413)) == "PAYLOAD_TOO_LARGE")
    }
}
