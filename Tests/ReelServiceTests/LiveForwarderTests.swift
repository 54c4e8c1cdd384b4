import Testing
import Synchronization
import ReelCore
import ReelScheduler
@testable import ReelService

/// The live phase of a watch, delivered on the publisher's thread: order, gaps, slow readers,
/// the buffer limit, the terminal event and cancellation — without sockets, deterministically.
struct LiveForwarderTests {
    /// A transport that records what it took and can be told to refuse (full) or be gone.
    final class Transport: Sendable {
        let taken = Mutex<[Int64]>([])
        let answer = Mutex<DirectSend>(.sent)
        func send(_ e: JobEvent) -> DirectSend {
            let a = answer.withLock { $0 }
            if a == .sent { taken.withLock { $0.append(e.seq) } }
            return a
        }
        var seqs: [Int64] { taken.withLock { $0 } }
    }

    func event(_ seq: Int64, _ status: JobStatus = .processing) -> JobEvent {
        JobEvent(jobID: "j", seq: seq, status: status, stage: .scriptExpansion, progress: Int32(seq), message: "m\(seq)", atUnixMs: 0)
    }

    func forwarder(_ t: Transport, limit: Int = 8) -> LiveForwarder {
        LiveForwarder(limit: limit) { t.send($0) }
    }

    /// Waits (up to 5 s) until the transport has taken exactly `seqs`: the forwarder is live.
    func taken(_ t: Transport, _ seqs: [Int64]) async {
        let until = ContinuousClock.now + .seconds(5)
        while t.seqs != seqs && ContinuousClock.now < until { try? await Task.sleep(for: .milliseconds(5)) }
    }

    @Test func buffersUntilLiveThenForwardsInOrderSkippingWhatTheTaskSent() async {
        let t = Transport(), f = forwarder(t)
        for s: Int64 in 2...5 { f.receive(event(s)) }   // published while the task replayed up to 3
        let outcome = Task { await f.goLive(after: 3) }
        try? await Task.sleep(for: .milliseconds(50))
        f.receive(event(6))
        f.receive(event(6))                          // a duplicate is ignored
        f.receive(event(7, .finalReady))
        #expect(await outcome.value == .finished)
        #expect(t.seqs == [4, 5, 6, 7])
        f.receive(event(8))
        #expect(t.seqs == [4, 5, 6, 7], "nothing after the terminal event")
    }

    @Test func aGapStallsAndTheTaskCatchesUp() async {
        let t = Transport(), f = forwarder(t)
        let first = Task { await f.goLive(after: 1) }
        try? await Task.sleep(for: .milliseconds(20))
        f.receive(event(2))
        f.receive(event(4))                          // 3 went missing here
        #expect(await first.value == .stalled(lastSeq: 2))
        f.receive(event(5))                          // buffered while the task reads storage
        // The task sent 3 and 4 from storage; going live again forwards only 5.
        let second = Task { await f.goLive(after: 4) }
        try? await Task.sleep(for: .milliseconds(20))
        f.receive(event(6, .cancelled))
        #expect(await second.value == .finished)
        #expect(t.seqs == [2, 5, 6])
    }

    @Test func aSlowReaderStallsAndFallsBehindPastTheLimit() async {
        let t = Transport(), f = forwarder(t, limit: 3)
        let first = Task { await f.goLive(after: 0) }
        try? await Task.sleep(for: .milliseconds(20))
        f.receive(event(1))
        await taken(t, [1])
        t.answer.withLock { $0 = .full }
        f.receive(event(2))                          // refused: the reader is over its high-water mark
        #expect(await first.value == .stalled(lastSeq: 1))
        for s: Int64 in 3...5 { f.receive(event(s)) }       // 2, 3, 4, 5 buffered: over the limit of 3
        #expect(await f.goLive(after: 1) == .fellBehind(lastSeq: 1))
        #expect(t.seqs == [1])
    }

    @Test func aGoneStreamEndsTheWatchAndCancellationToo() async {
        let t = Transport(), f = forwarder(t)
        t.answer.withLock { $0 = .gone }
        let gone = Task { await f.goLive(after: 0) }
        try? await Task.sleep(for: .milliseconds(20))
        f.receive(event(1))
        #expect(await gone.value == .gone)

        let g = forwarder(Transport())
        let waiting = Task { await g.goLive(after: 0) }
        try? await Task.sleep(for: .milliseconds(20))
        waiting.cancel()
        #expect(await waiting.value == .cancelled)
    }

    @Test func theHubHandsEventsToReceiversUntilUnsubscribed() async {
        let hub = JobEventHub()
        let t = Transport(), f = forwarder(t)
        let token = hub.subscribe(jobID: "j", receiver: f)
        #expect(hub.watcherCount == 1)
        let live = Task { await f.goLive(after: 0) }
        try? await Task.sleep(for: .milliseconds(20))
        hub.publish(event(1))
        await taken(t, [1])
        hub.publish(JobEvent(jobID: "other", seq: 1, status: .processing, stage: .scriptExpansion, progress: 1, message: "x", atUnixMs: 0))
        hub.unsubscribe(jobID: "j", token: token)
        #expect(hub.watcherCount == 0)
        hub.publish(event(2))
        #expect(t.seqs == [1])
        live.cancel()
        #expect(await live.value == .cancelled)
    }
}
