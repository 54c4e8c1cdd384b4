import Testing
import ReelCore
import ReelJSON
@testable import ReelWeb

/// The HTTP side's own rules: ETags, error bodies and statuses, the WebSocket's messages.
/// The JSON shape itself is ReelJSON's (Tests/ReelJSONTests).
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
        let body = ErrorJSON.body(for: ReelError(.notFound, "job x not found"))
        #expect(try JSONCoding.decode(ErrorBodyJSON.self, from: Array(body.utf8)) == ErrorBodyJSON(code: "NOT_FOUND", message: "job x not found"))
        #expect(ErrorJSON.httpStatus(.notFound).code == 404)
        #expect(ErrorJSON.httpStatus(.invalidArgument).code == 400)
        #expect(ErrorJSON.httpStatus(.failedPrecondition).code == 409)
        #expect(ErrorJSON.httpStatus(.unauthenticated).code == 401)
        #expect(ErrorJSON.httpStatus(.resourceExhausted).code == 429)
        #expect(ErrorJSON.httpStatus(.unavailable).code == 503)
        #expect(ErrorJSON.code(forHTTP: .init(code: 413)) == "PAYLOAD_TOO_LARGE")
    }
}

struct SocketMessageTests {
    @Test func aJobUpdateKeepsSeed002sEnvelopeAndEmbedsTheOneJobShape() {
        let job = Job(id: "j-1", status: .processing, stage: .videoGeneration, progress: 40, lastEventSeq: 4)
        let text = JobUpdatesSocket.jobUpdate(.snapshot(of: job))
        // The envelope grew the event's ETA and at-risk flag (issue #17); seed 002's members are unchanged.
        #expect(text.hasPrefix(#"{"atRisk":false,"atUnixMs":0,"deadLettered":false,"etaUnixMs":0,"job":"# + JSONCoding.encode(JobJSON(job)) + ","), "\(text)")
        #expect(text.hasSuffix(#","jobId":"j-1","message":"","progress":40,"seq":4,"stage":"video_generation","status":"processing","terminal":false,"type":"job_update"}"#), "\(text)")
        let later = JobEvent(jobID: "j-1", seq: 5, status: .finalReady, stage: .completed, progress: 100, message: "", atUnixMs: 1)
        #expect(!JobUpdatesSocket.jobUpdate(later).contains(#""job""#), "only the first update carries the job")
        #expect(JobUpdatesSocket.jobUpdate(later).contains(#""terminal":true"#))
        var running = JobEvent(jobID: "j-1", seq: 6, status: .processing, stage: .upload, progress: 90, message: "", atUnixMs: 1)
        running.etaUnixMs = 5_000; running.atRisk = true
        #expect(JobUpdatesSocket.jobUpdate(running).contains(#""atRisk":true"#))
        #expect(JobUpdatesSocket.jobUpdate(running).contains(#""etaUnixMs":5000"#))
    }

    @Test func controlMessages() {
        #expect(JobUpdatesSocket.pong == #"{"type":"pong"}"#)
        #expect(JobUpdatesSocket.unsubscribed("j", reason: "terminal") == #"{"jobId":"j","reason":"terminal","type":"unsubscribed"}"#)
        #expect(JobUpdatesSocket.errorMessage(code: "NOT_FOUND", message: "m", jobID: nil) == #"{"code":"NOT_FOUND","message":"m","type":"error"}"#)
    }

    @Test func clientMessagesAreStrictJSONWithLenientMembers() throws {
        func read(_ s: String) throws -> JobUpdatesSocket.ClientMessage { try JSONCoding.decode(JobUpdatesSocket.ClientMessage.self, from: Array(s.utf8)) }
        let m = try read(#"{"type":"subscribe","job_id":"x","extra":[1]}"#)
        #expect(m.type == "subscribe" && m.jobId == "x")
        #expect(try read(#"{"type":7}"#).type == nil)
        for bad in ["this is not json", "[1,2]", #"{"type":"ping","type":"ping"}"#, #"{"type":"ping",}"#] {
            #expect(throws: (any Error).self, "\(bad)") { _ = try read(bad) }
        }
    }
}
