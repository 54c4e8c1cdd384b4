import Testing
import ReelCore
import ReelWire
@testable import ReelService

/// The framed-event memo reuses bytes only for the event asked for: retention renumbers an old
/// job's events, so one (job, seq) can name another event later.
struct FramedEventMemoTests {
    func decoded(_ framed: [UInt8]) throws -> JobEvent {
        try ProtoCodec.decodeJobEvent(Array(framed.dropFirst(GRPCFraming.headerSize)))
    }

    @Test func aSeqThatNowNamesAnotherEventIsEncodedAfresh() throws {
        let memo = FramedEventMemo(capacity: 4)
        let progress = JobEvent(jobID: "j", seq: 3, status: .processing, stage: .scriptExpansion, progress: 50,
                                message: "", atUnixMs: 10)
        let first = memo.framed(progress)
        #expect(memo.framed(progress) == first)
        #expect(try decoded(first) == progress)
        // After a prune and renumbering, seq 3 is the job's final event.
        let final = JobEvent(jobID: "j", seq: 3, status: .finalReady, stage: .completed, progress: 100,
                             message: "done", atUnixMs: 20)
        let renumbered = memo.framed(final)
        #expect(try decoded(renumbered) == final)
        #expect(memo.framed(final) == renumbered)
    }
}
