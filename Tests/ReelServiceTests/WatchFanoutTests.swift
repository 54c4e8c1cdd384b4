import Testing
import Dispatch
import Synchronization
import ReelCore
import ReelWire
import ReelScheduler
@testable import ReelService

/// The gRPC watch fan-out without sockets: watchers as records on (fake) event loops, fed by the
/// hub, with a store that answers from memory. Snapshot first, order, gaps, slow readers, the
/// buffer limit, the terminal event, `after_seq`, tenancy, streams that go away, and one
/// snapshot read shared by the watchers that opened together.
struct WatchFanoutTests {
    /// A serial executor standing in for an event loop.
    final class Loop: WatchLoop {
        let queue = DispatchQueue(label: "fake-loop")
        var id: ObjectIdentifier { ObjectIdentifier(self) }
        func execute(_ f: @escaping @Sendable () -> Void) { queue.async(execute: f) }
        /// Runs `f` on the loop and waits for it.
        func sync<T: Sendable>(_ f: @Sendable () -> T) -> T { queue.sync(execute: f) }
    }

    /// What a stream received, as the client would see it.
    final class Sink: Sendable {
        struct State {
            var events: [JobEvent] = []
            var status: GRPCStatus?
            var full = false
            var gone = false
            var onEnd: UncheckedSendable<() -> Void>?
        }
        let state = Mutex(State())
        var events: [JobEvent] { state.withLock { $0.events } }
        var seqs: [Int64] { events.map(\.seq) }
        var status: GRPCStatus? { state.withLock { $0.status } }
        func take(_ framed: [UInt8]) {
            let e = try! ProtoCodec.decodeJobEvent(Array(framed.dropFirst(GRPCFraming.headerSize)))
            state.withLock { $0.events.append(e) }
        }
    }

    struct Stream: WatchStream, @unchecked Sendable {
        let sink: Sink
        let fakeLoop: Loop
        var loop: any WatchLoop { fakeLoop }
        var isGone: Bool { sink.state.withLock { $0.gone || $0.status != nil } }
        func write(framed: [UInt8], evenIfFull: Bool) -> WatchWrite {
            let (gone, full) = sink.state.withLock { ($0.gone || $0.status != nil, $0.full) }
            if gone { return .gone }
            if full && !evenIfFull { return .full }
            sink.take(framed)
            return .sent
        }
        func finish(_ status: GRPCStatus) {
            sink.state.withLock { s in
                precondition(s.status == nil, "finished twice")
                s.status = status
                s.onEnd = nil
            }
        }
        func onEnd(_ f: @escaping () -> Void) {
            let f = UncheckedSendable(f)
            sink.state.withLock { $0.onEnd = f }
        }
        var sender: any WatchSender { Sender(sink: sink) }
        var events: [JobEvent] { sink.events }
        var seqs: [Int64] { sink.seqs }
        var status: GRPCStatus? { sink.status }
        /// The client goes away: the transport tells the owner on its loop.
        func hangUp() {
            let f = sink.state.withLock { s in s.gone = true; defer { s.onEnd = nil }; return s.onEnd }
            fakeLoop.execute { f?.value() }
        }
    }

    struct UncheckedSendable<T>: @unchecked Sendable { let value: T; init(_ v: T) { value = v } }

    /// A task's sends: wait while the reader is "full".
    struct Sender: WatchSender {
        let sink: Sink
        func send(framed: [UInt8]) async throws {
            func gone(_ s: Sink.State) -> Bool { s.gone || s.status != nil }
            while sink.state.withLock({ $0.full && !gone($0) }) { try await Task.sleep(for: .milliseconds(2)) }
            if sink.state.withLock({ gone($0) }) { throw CancellationError() }
            sink.take(framed)
        }
    }

    /// A job and its events in memory; counts reads of the job.
    final class Store: JobStore {
        struct State {
            var job: Job
            var events: [JobEvent] = []
            var jobReads = 0
            var failing = false
            /// How long a read of the job takes.
            var readTime = Duration.zero
        }
        let state: Mutex<State>
        init(_ job: Job) { state = Mutex(State(job: job)) }

        /// Commits the next event (and the job's state with it).
        func commit(_ status: JobStatus = .processing, deadLettered: Bool = false) -> JobEvent {
            state.withLock { s in
                let seq = s.job.lastEventSeq + 1
                let e = JobEvent(jobID: s.job.id, seq: seq, status: status, stage: .scriptExpansion,
                                 progress: Int32(min(seq, 100)), message: "m\(seq)", atUnixMs: seq, deadLettered: deadLettered)
                s.events.append(e)
                s.job.lastEventSeq = seq
                s.job.status = status
                s.job.deadLettered = deadLettered
                return e
            }
        }
        var jobReads: Int { state.withLock { $0.jobReads } }

        func job(id: String) async throws -> Job? {
            let wait = state.withLock { s in
                s.jobReads += 1
                return s.readTime
            }
            if wait > .zero { try await Task.sleep(for: wait) }
            return try state.withLock { s in
                if s.failing { throw ReelError(.unavailable, "database down") }
                return s.job.id == id ? s.job : nil
            }
        }
        func events(jobID: String, afterSeq: Int64) async throws -> [JobEvent] {
            state.withLock { s in s.events.filter { $0.jobID == jobID && $0.seq > afterSeq } }
        }

        func createJob(_ job: NewJob) async throws -> (job: Job, event: JobEvent?) { fatalError("unused") }
        func createJobs(_ jobs: [NewJob]) async throws -> [Result<(job: Job, event: JobEvent?), ReelError>] { fatalError("unused") }
        func listJobs(_ filter: ListJobsInput, pageSize: Int32, tenantID: String?) async throws -> JobPage { fatalError("unused") }
        func apply(_ change: StateChange, to jobID: String) async throws -> (job: Job, event: JobEvent) { fatalError("unused") }
        func apply(_ changes: [StateChange], to jobID: String) async throws -> [Result<(job: Job, event: JobEvent), any Error>] { fatalError("unused") }
        func claim(workerID: String, limit: Int, leaseMs: Int64, types: Set<JobType>?) async throws -> [(job: Job, event: JobEvent)] { fatalError("unused") }
        func heldJobIDs(workerID: String) async throws -> Set<String> { fatalError("unused") }
        func workerHeartbeat(workerID: String, leaseMs: Int64) async throws -> (lapsed: Bool, requeued: [(job: Job, event: JobEvent)]) { fatalError("unused") }
        func requeueExpiredLeases() async throws -> [(job: Job, event: JobEvent)] { fatalError("unused") }
        func releaseLeases(workerPrefix: String) async throws -> [(job: Job, event: JobEvent)] { fatalError("unused") }
        func finalize(jobID: String, workerID: String, fence: Int64?, result: JobResult, durationSeconds: Double) async throws -> (job: Job, event: JobEvent)? { fatalError("unused") }
        func putSceneBible(tenantID: String, sceneID: String, bible: SceneBible) async throws -> Scene { fatalError("unused") }
        func scene(tenantID: String, id: String) async throws -> Scene? { fatalError("unused") }
        func sceneContext(tenantID: String, sceneID: String, bibleVersion: Int32, recent: Int) async throws -> SceneContext { fatalError("unused") }
    }

    let hub = JobEventHub(bufferLimit: 8)
    let store: Store
    let fanout: WatchFanout
    let loops = [Loop(), Loop()]

    init() {
        var job = Job(id: "j", status: .queued, lastEventSeq: 1)
        job.tenantID = "acme"
        store = Store(job)
        store.state.withLock { s in
            s.events = [JobEvent(jobID: "j", seq: 1, status: .queued, stage: .pending, progress: 0, message: "queued", atUnixMs: 1)]
        }
        fanout = WatchFanout(store: store, hub: hub)
    }

    func stream(_ loop: Int = 0) -> Stream { Stream(sink: Sink(), fakeLoop: loops[loop]) }

    func open(_ s: Stream, after: Int64 = 0, caller: Caller = .anonymousAdmin) {
        let fanout = self.fanout
        let s = UncheckedSendable(s)
        s.value.fakeLoop.sync { fanout.open(jobID: "j", afterSeq: after, caller: caller, stream: s.value) }
    }

    /// Commits an event and publishes it, as the service does.
    @discardableResult
    func publish(_ status: JobStatus = .processing, deadLettered: Bool = false) -> JobEvent {
        let e = store.commit(status, deadLettered: deadLettered)
        hub.publish(e)
        return e
    }

    /// Waits (up to 5 s) for `cond`, letting the loops run.
    func until(_ cond: () -> Bool) async {
        let deadline = ContinuousClock.now + .seconds(5)
        while !cond() && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(2)) }
        for l in loops { l.sync {} }
    }

    @Test func snapshotFirstThenEveryEventInOrderUntilTheTerminalOne() async {
        let s = stream()
        open(s)
        await until { s.seqs == [1] }
        #expect(s.events.first?.snapshot != nil, "the snapshot comes first")
        publish()
        publish()
        hub.publish(JobEvent(jobID: "j", seq: 3, status: .processing, stage: .scriptExpansion, progress: 3, message: "m3", atUnixMs: 3))  // a duplicate
        publish(.failed)                          // to be retried: not the end
        publish(.finalReady)
        await until { s.status != nil }
        #expect(s.seqs == [1, 2, 3, 4, 5])
        #expect(s.status?.code == .ok)
        publish()
        try? await Task.sleep(for: .milliseconds(50))
        for l in loops { l.sync {} }
        #expect(s.seqs == [1, 2, 3, 4, 5], "nothing after the terminal event")
        #expect(hub.watcherCount == 0, "the last watcher of a job unsubscribes")
    }

    @Test func watchersOpenedTogetherShareOneSnapshotReadAndEachGetsEveryEvent() async {
        let streams = (0..<200).map { stream($0 % 2) }
        store.state.withLock { $0.readTime = .milliseconds(300) }
        for s in streams { open(s) }
        await until { streams.allSatisfy { $0.seqs.count == 1 } }
        // One read, or two when the first began before the others asked (they wait for the next).
        #expect(store.jobReads <= 2, "not one read per watcher: \(store.jobReads)")
        #expect(hub.watcherCount == 1, "one hub subscription per job")
        publish()
        publish(.cancelled)
        await until { streams.allSatisfy { $0.status != nil } }
        for s in streams {
            #expect(s.seqs == [1, 2, 3])
            #expect(s.status?.code == .ok)
        }
        #expect(hub.watcherCount == 0)
    }

    @Test func aGapIsFilledFromStorage() async {
        let s = stream()
        open(s)
        await until { s.seqs == [1] }
        publish()
        _ = store.commit()                        // 3: committed, its publication lost
        publish()                                 // 4 arrives: a gap
        publish(.finalReady)
        await until { s.status != nil }
        #expect(s.seqs == [1, 2, 3, 4, 5])
        #expect(s.status?.code == .ok)
    }

    @Test func aSlowReaderCatchesUpFromStorageAndFallsBehindPastTheLimit() async {
        let s = stream(), t = stream(1)
        open(s)
        open(t)
        await until { s.seqs == [1] && t.seqs == [1] }
        s.sink.state.withLock { $0.full = true }  // s stops reading; t reads on
        publish()                                 // refused by s: it catches up, waiting on its reader
        await until { t.seqs == [1, 2] }
        s.sink.state.withLock { $0.full = false }
        publish(.finalReady)
        await until { s.status != nil && t.status != nil }
        #expect(s.seqs == [1, 2, 3])
        #expect(t.seqs == [1, 2, 3])

        // A reader that stays stuck while more than the hub's limit (8) pile up is cut off.
        store.state.withLock { $0.job.status = .processing; $0.job.deadLettered = false }
        let u = stream()
        open(u)
        await until { u.seqs.count == 1 }
        u.sink.state.withLock { $0.full = true }
        for _ in 0..<12 { publish() }
        await until { u.status != nil }
        #expect(u.status?.code == .resourceExhausted)
        #expect(u.status?.message.contains("after_seq=3") == true, "\(String(describing: u.status))")
    }

    @Test func afterSeqReplaysStoredEventsThenGoesLive() async {
        for _ in 0..<3 { _ = store.commit() }     // 2, 3, 4 stored
        let s = stream()
        open(s, after: 2)
        await until { s.seqs == [3, 4] }
        #expect(s.events.allSatisfy { $0.snapshot == nil })
        publish(.finalReady)
        await until { s.status != nil }
        #expect(s.seqs == [3, 4, 5])
        #expect(s.status?.code == .ok)

        // Past the last event of a finished job: ends at once, nothing sent.
        let t = stream()
        open(t, after: 5)
        await until { t.status != nil }
        #expect(t.seqs == [])
        #expect(t.status?.code == .ok)

        // A finished job from the start: its snapshot only.
        let u = stream(1)
        open(u)
        await until { u.status != nil }
        #expect(u.seqs == [5])
        #expect(u.events.first?.snapshot != nil)
    }

    @Test func anotherTenantsJobDoesNotExistAndStoreErrorsEndTheStream() async {
        let other = Caller(tenantID: "globex", admin: false, keyID: "k")
        let s = stream(), t = stream()
        open(s, caller: other)
        open(t, after: 1, caller: other)
        await until { s.status != nil && t.status != nil }
        #expect(s.status?.code == .notFound)
        #expect(t.status?.code == .notFound)
        #expect(s.seqs.isEmpty && t.seqs.isEmpty)

        store.state.withLock { $0.failing = true }
        let u = stream()
        open(u)
        await until { u.status != nil }
        #expect(u.status?.code == .unavailable)
        #expect(hub.watcherCount == 0)
    }

    @Test func aWatcherWhoseClientLeftIsDroppedAndAFinishedStreamIsNotWrittenAgain() async {
        let s = stream(), t = stream(1)
        open(s)
        open(t)
        await until { s.seqs == [1] && t.seqs == [1] }
        s.hangUp()
        await until { hub.watcherCount == 1 }
        publish()
        await until { t.seqs == [1, 2] }
        #expect(s.seqs == [1])
        t.hangUp()
        await until { hub.watcherCount == 0 }
        #expect(hub.watcherCount == 0)
        #expect(s.status == nil && t.status == nil, "a stream that went away is not finished by the watch")
    }

    @Test func eventsPublishedWhileTheSnapshotIsReadAreHeldAndSentAfterIt() async {
        let s = stream()
        // The loop is busy until three events have been published: they reach the watcher
        // before the snapshot read's answer does.
        let gate = DispatchSemaphore(value: 0)
        loops[0].execute { gate.wait() }
        let fanout = self.fanout
        let us = UncheckedSendable(s)
        loops[0].execute { fanout.open(jobID: "j", afterSeq: 0, caller: .anonymousAdmin, stream: us.value) }
        gate.signal()
        for _ in 0..<3 { publish() }
        await until { s.seqs.last == 4 }
        #expect(s.seqs.first == s.events.first?.snapshot?.lastEventSeq)
        #expect(s.seqs == Array(s.seqs.first!...4), "from the snapshot on, every seq once: \(s.seqs)")
    }

    @Test func theCursorIsTheOneInOrderRule() {
        var c = WatchCursor(after: 3)
        let e = { (seq: Int64, status: JobStatus) in
            JobEvent(jobID: "j", seq: seq, status: status, stage: .pending, progress: 0, message: "", atUnixMs: 0)
        }
        #expect(c.step(e(3, .processing)) == .old)
        #expect(c.step(e(4, .processing)) == .next)
        #expect(c.step(e(6, .processing)) == .gap)
        c.sent(e(4, .failed))
        #expect(!c.ended, "a FAILED that will be retried does not end the watch")
        c.sent(e(5, .failed))
        #expect(c.last == 5)
        var d = c
        d.sent(JobEvent(jobID: "j", seq: 6, status: .failed, stage: .pending, progress: 0, message: "", atUnixMs: 0, deadLettered: true))
        #expect(d.ended, "dead-lettered: the end")
        c.sent(e(6, .finalReady))
        #expect(c.ended)
    }

    @Test func eventsAfterTheTerminalOneEndNothingOnTheirOwn() {
        let e = { (seq: Int64, status: JobStatus) in
            JobEvent(jobID: "j", seq: seq, status: status, stage: .completed, progress: 100, message: "", atUnixMs: 0)
        }
        // A replay after the terminal event (7): the webhook events keep its status.
        var c = WatchCursor(after: 7)
        c.seed(e(7, .finalReady))
        c.sent(e(8, .finalReady))
        #expect(!c.ended, "a webhook delivery's event after the end")
        c.sent(e(9, .finalReady))
        #expect(!c.ended && c.last == 9)
        // Not known what was at the cursor: a terminal event ends the watch, as ever.
        var d = WatchCursor(after: 6)
        d.sent(e(7, .finalReady))
        #expect(d.ended)
        // Seeded with a running event: the terminal one ends it.
        var r = WatchCursor(after: 6)
        r.seed(e(6, .processing))
        r.sent(e(7, .cancelled))
        #expect(r.ended)
    }
}
