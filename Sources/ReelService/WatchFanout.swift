import ReelCore
import ReelWire
import ReelScheduler
import Synchronization

/// Where a watch's messages go: a stream on a serial executor (a server event loop), touched only
/// there. `LoopStream` is the gRPC one; tests bring their own.
protocol WatchStream {
    /// The executor the stream lives on.
    var loop: any WatchLoop { get }
    var isGone: Bool { get }
    /// Queues a framed message without waiting: `.full` over the stream's high-water mark.
    func write(framed: [UInt8], evenIfFull: Bool) -> WatchWrite
    func finish(_ status: GRPCStatus)
    /// Runs `f` (on the loop) if the stream ends other than by `finish`.
    func onEnd(_ f: @escaping () -> Void)
    /// For a task writing meanwhile: sends that wait on the reader.
    var sender: any WatchSender { get }
}

enum WatchWrite: Sendable, Equatable { case sent, full, gone }

/// A serial executor (one event loop): everything of a `WatchStream` happens in work run here.
protocol WatchLoop: Sendable {
    var id: ObjectIdentifier { get }
    func execute(_ f: @escaping @Sendable () -> Void)
}

protocol WatchSender: Sendable {
    func send(framed: [UInt8]) async throws
}

/// Where a watch stands: the last seq it sent, and whether that ended it — the one place the
/// in-order rule of a watch lives (DESIGN §2: each seq once, in order, up to the terminal event).
/// The terminal event is the one that made the job finish: events after it (a completion
/// webhook's deliveries, DESIGN §8) keep its status but end nothing; a replay after the terminal
/// event sends them, then ends as the job is finished.
struct WatchCursor: Sendable {
    private(set) var last: Int64
    private(set) var ended = false
    /// Whether the event at `last` had the job finished (nil: not known, as after `after_seq`
    /// before the stored event there was read).
    private(set) var lastFinished: Bool?

    init(after last: Int64) { self.last = last }

    /// A watch that opened with `job`'s snapshot: at its last seq, and over if it is finished.
    init(snapshotOf job: Job) {
        last = job.lastEventSeq
        ended = job.isFinished
        lastFinished = job.isFinished
    }

    enum Step { case old, next, gap }

    /// What `e` is to this watch: already sent, the next one, or past a gap.
    func step(_ e: JobEvent) -> Step { e.seq <= last ? .old : e.seq == last + 1 ? .next : .gap }

    /// `e` was sent.
    mutating func sent(_ e: JobEvent) {
        last = e.seq
        if e.endsWatch && lastFinished != true { ended = true }
        lastFinished = e.endsWatch
    }

    /// The stored event at `last` (not sent): whether the job was finished there.
    mutating func seed(_ e: JobEvent) {
        if e.seq == last { lastFinished = e.endsWatch }
    }

    /// Nothing more will come.
    mutating func end() { ended = true }
}

/// The gRPC watches of this process (`WatchJob` served from the event loops): per job one
/// subscription to the hub; per job and loop one list of watchers. A published event is framed
/// once and handed to each loop once, which writes that buffer to each of its watchers' streams
/// in one pass — no task, lock, mailbox entry or copy per watcher. Tasks run only to
/// read storage: a job's opening snapshot (one read shared by every watcher that asked while
/// none was under way), a replay after `after_seq`, a catch-up after a gap or a slow reader.
final class WatchFanout: Sendable {
    let store: any JobStore
    let hub: JobEventHub
    /// Events a watcher may have pending (opening, catching up) before it counts as fallen behind.
    let limit: Int
    let framedEvents = FramedEventMemo()
    /// ETAs on snapshots and replayed events (live ones carry theirs from the hub).
    let eta: JobETA?

    private struct Group {
        let receiver: GroupReceiver
        let token: Int
        var parts: [ObjectIdentifier: WatchPart] = [:]
        var count = 0
        /// Watchers waiting for the job's snapshot, and whether a read is under way.
        var waiting: [Watcher] = []
        var reading = false
    }
    private let groups = Mutex<[String: Group]>([:])

    init(store: any JobStore, hub: JobEventHub, eta: JobETA? = nil) {
        self.store = store
        self.hub = hub
        self.eta = eta
        self.limit = max(1, hub.bufferLimit)
    }

    /// Opens a watch of `jobID` (valid, and `caller` known) on `stream`, on the stream's loop:
    /// the snapshot (`afterSeq` 0) or the stored events after `afterSeq`, then live events in
    /// `seq` order until the terminal one (status OK). Errors end the stream with their status.
    func open(jobID: String, afterSeq: Int64, caller: Caller, stream: any WatchStream) {
        let loop = stream.loop
        let part = join(jobID, loop: loop)
        let w = Watcher(fanout: self, jobID: jobID, caller: caller, stream: stream, part: part, after: afterSeq)
        part.members.append(w)
        stream.onEnd { w.end(nil) }  // a cycle until the stream ends, which clears it
        if stream.isGone { return w.end(nil) }
        // Subscribed before storage is read: nothing committed from here on is missed.
        if afterSeq == 0 { requestSnapshot(w) } else { w.catchUp(opening: true) }
    }

    /// Counts a watcher in (subscribing to the hub for its job's first) and returns its loop's list.
    private func join(_ jobID: String, loop: any WatchLoop) -> WatchPart {
        groups.withLock { g in
            if g[jobID] == nil {
                let receiver = GroupReceiver(fanout: self, jobID: jobID)
                g[jobID] = Group(receiver: receiver, token: hub.subscribe(jobID: jobID, receiver: receiver))
            }
            g[jobID]!.count += 1
            if let part = g[jobID]!.parts[loop.id] {
                part.count += 1
                return part
            }
            let part = WatchPart(fanout: self, jobID: jobID, loop: loop)
            part.count = 1
            g[jobID]!.parts[loop.id] = part
            return part
        }
    }

    /// `n` watchers of `part` are done: the last one of a job unsubscribes.
    fileprivate func leave(_ jobID: String, _ part: WatchPart, _ n: Int) {
        groups.withLock { g in
            guard g[jobID]?.parts[part.loop.id] === part else { return }
            part.count -= n
            if part.count == 0 { g[jobID]!.parts[part.loop.id] = nil }
            g[jobID]!.count -= n
            if g[jobID]!.count == 0 {
                hub.unsubscribe(jobID: jobID, token: g[jobID]!.token)
                g[jobID] = nil
            }
        }
    }

    /// The hub's event for `jobID`: framed once, one pass per loop.
    fileprivate func publish(_ event: JobEvent, from receiver: GroupReceiver) {
        let parts = groups.withLock { g -> [WatchPart] in
            guard let group = g[event.jobID], group.receiver === receiver else { return [] }
            return Array(group.parts.values)
        }
        guard !parts.isEmpty else { return }
        let framed = framedEvents.framed(event)
        for (i, part) in parts.enumerated() {
            // Each loop gets a buffer of its own: every stream that queues it takes a reference,
            // and a reference count updated from two cores at once moves its cache line back
            // and forth between them.
            let mine = i == 0 ? framed : framed.withUnsafeBufferPointer { Array($0) }
            part.loop.execute { part.deliver(event, mine) }
        }
    }

    // MARK: the opening snapshot, read once for every watcher waiting for it

    private func requestSnapshot(_ w: Watcher) {
        let start = groups.withLock { g -> GroupReceiver? in
            guard g[w.jobID] != nil else { return nil }
            g[w.jobID]!.waiting.append(w)
            if g[w.jobID]!.reading { return nil }
            g[w.jobID]!.reading = true
            return g[w.jobID]!.receiver
        }
        guard let receiver = start else { return }
        Task { await readSnapshots(w.jobID, receiver) }
    }

    /// Reads the job for the watchers waiting, again while more arrived meanwhile. Each read
    /// starts after every watcher it serves had subscribed.
    private func readSnapshots(_ jobID: String, _ receiver: GroupReceiver) async {
        while true {
            let batch = groups.withLock { g -> [Watcher] in
                guard var group = g[jobID], group.receiver === receiver else { return [] }
                let batch = group.waiting
                group.waiting = []
                if batch.isEmpty { group.reading = false }
                g[jobID] = group
                return batch
            }
            if batch.isEmpty { return }
            let result: Result<Job?, any Error>
            do {
                let job = try await store.job(id: jobID)
                if let job, let eta { result = .success(await eta.job(job)) } else { result = .success(job) }
            } catch { result = .failure(error) }
            let snapshot = Snapshot(result: result)
            for (_, ws) in Dictionary(grouping: batch, by: { $0.part.loop.id }) {
                let ws = UncheckedWatchers(ws)
                ws.list[0].part.loop.execute { for w in ws.list { w.opened(snapshot) } }
            }
        }
    }

    /// A read of the job for opening watches, its snapshot event framed once.
    struct Snapshot: Sendable {
        let result: Result<Job?, any Error>
        let framed: [UInt8]

        init(result: Result<Job?, any Error>) {
            self.result = result
            if case .success(let job?) = result {
                framed = GRPCFraming.frame(ProtoCodec.encode(JobEvent.snapshot(of: job)))
            } else {
                framed = []
            }
        }
    }

    /// Sends the stored events after `cursor.last` in order: the one place a watch reads events
    /// from storage (openings after `after_seq`, gap fills, catch-ups). With `caller`, the
    /// opening of a watch after `after_seq`: the caller must see the job (NOT_FOUND otherwise),
    /// and a finished job whose events were all sent ends the watch even without its terminal
    /// event among them (`after_seq` at or past it).
    func sendStored(_ jobID: String, _ cursor: inout WatchCursor, opening caller: Caller? = nil,
                    send: (JobEvent) async throws -> Void) async throws {
        var finishedAt: Int64? = nil
        var opened: Job? = nil
        if let caller {
            guard let job = try await store.job(id: jobID), caller.owns(job) else { throw ReelError.notFound(jobID: jobID) }
            if job.isFinished { finishedAt = job.lastEventSeq }
            opened = job
        }
        // From the event at the cursor when it is not known whether the job had finished there:
        // after its terminal event, the events that follow end nothing.
        let seeding = cursor.lastFinished == nil && cursor.last > 0
        var events = try await store.events(jobID: jobID, afterSeq: seeding ? cursor.last - 1 : cursor.last)
        if seeding, let first = events.first, first.seq <= cursor.last {
            cursor.seed(first)
            events.removeFirst()
        }
        if let eta, !events.isEmpty {
            // Replayed events carry the job's current ETA (0 for all once it is terminal).
            var job = opened
            if job == nil { job = try await store.job(id: jobID) }
            if let job { events = eta.stored(events, of: job) }
        }
        try await Self.sendInOrder(events, &cursor, send: send)
        if let finishedAt, cursor.last >= finishedAt { cursor.end() }
    }

    /// Sends the events past `cursor`, in order, stopping at one that ends the watch.
    static func sendInOrder(_ events: [JobEvent], _ cursor: inout WatchCursor,
                            send: (JobEvent) async throws -> Void) async throws {
        for e in events where !cursor.ended && cursor.step(e) != .old {
            try await send(e)
            cursor.sent(e)
        }
    }
}

/// The hub's receiver for one job's group (its identity tells a stale group from a new one).
private final class GroupReceiver: JobEventReceiver, Sendable {
    unowned let fanout: WatchFanout
    let jobID: String
    init(fanout: WatchFanout, jobID: String) { self.fanout = fanout; self.jobID = jobID }
    func receive(_ event: JobEvent) { fanout.publish(event, from: self) }
}

/// One job's watchers on one loop. `members` and `dead` are touched only on `loop`; `count`
/// only under the fanout's lock.
final class WatchPart: @unchecked Sendable {
    // Safety: see above.
    unowned let fanout: WatchFanout
    let jobID: String
    let loop: any WatchLoop
    var members: [Watcher] = []
    var dead = 0
    var count = 0
    /// In a delivery pass: watchers that ended in it, told to the fanout once at its end (a
    /// job's terminal event ends all of them at once), and the streams they end, ended in the
    /// loop's next turn.
    private var passing = false
    private var endedInPass = 0
    private var closing: [(Watcher, GRPCStatus)] = []

    init(fanout: WatchFanout, jobID: String, loop: any WatchLoop) {
        self.fanout = fanout; self.jobID = jobID; self.loop = loop
    }

    /// A watcher here is done; `status` (if any) ends its stream. In a delivery pass that
    /// waits for the loop's next turn: the pass's messages to the other watchers, and the
    /// flush that sends them, come first (ending a stream costs more than writing to it).
    func ended(_ w: Watcher, _ status: GRPCStatus?) {
        dead += 1
        guard passing else {
            if let status { w.stream.finish(status) }
            return fanout.leave(jobID, self, 1)
        }
        endedInPass += 1
        if let status { closing.append((w, status)) }
    }

    /// An event for every watcher here, in one pass.
    func deliver(_ e: JobEvent, _ framed: [UInt8]) {
        if dead > 0 {
            members.removeAll { $0.phase == .done }
            dead = 0
        }
        passing = true
        for w in members { w.take(e, framed) }
        passing = false
        if endedInPass > 0 {
            fanout.leave(jobID, self, endedInPass)
            endedInPass = 0
        }
        if !closing.isEmpty {
            let list = UncheckedClosing(list: closing)
            closing = []
            loop.execute { for (w, status) in list.list { w.stream.finish(status) } }
        }
    }
}

private struct UncheckedClosing: @unchecked Sendable {
    // Safety: handed to the watchers' own loop, the only place they are touched.
    let list: [(Watcher, GRPCStatus)]
}

private struct UncheckedWatchers: @unchecked Sendable {
    // Safety: handed to the watchers' own loop, the only place they are touched.
    let list: [Watcher]
    init(_ list: [Watcher]) { self.list = list }
}

/// One watch: a plain record on its stream's loop, not a task. Loop-confined.
final class Watcher: @unchecked Sendable {
    // Safety: every method runs on `part.loop` (the stream's loop).
    enum Phase { case opening, live, catchingUp, done }

    unowned let fanout: WatchFanout
    let jobID: String
    let caller: Caller
    let stream: any WatchStream
    let part: WatchPart
    var cursor: WatchCursor
    private(set) var phase = Phase.opening
    /// Events that came while the watch was opening or catching up, in arrival order.
    private var held: [(event: JobEvent, framed: [UInt8])] = []

    init(fanout: WatchFanout, jobID: String, caller: Caller, stream: any WatchStream, part: WatchPart, after: Int64) {
        self.fanout = fanout; self.jobID = jobID; self.caller = caller; self.stream = stream; self.part = part
        cursor = WatchCursor(after: after)
    }

    /// A live event.
    func take(_ e: JobEvent, _ framed: [UInt8]) {
        switch phase {
        case .done: return
        case .live: forward(e, framed)
        case .opening, .catchingUp: hold(e, framed)
        }
    }

    private func hold(_ e: JobEvent, _ framed: [UInt8]) {
        guard cursor.step(e) != .old else { return }
        held.append((e, framed))
        if held.count > fanout.limit {
            end(GRPCStatus(.resourceExhausted, "watcher fell behind; reconnect with after_seq=\(cursor.last)"))
        }
    }

    private func forward(_ e: JobEvent, _ framed: [UInt8]) {
        switch cursor.step(e) {
        case .old: return
        case .gap: stall(e, framed)  // published out of order, or by another writer: storage has it
        case .next:
            switch stream.write(framed: framed, evenIfFull: false) {
            case .sent:
                cursor.sent(e)
                if cursor.ended { end(.ok) }
            case .full: stall(e, framed)  // a slow reader: catch up from storage, waiting on it
            case .gone: end(nil)
            }
        }
    }

    private func stall(_ e: JobEvent, _ framed: [UInt8]) {
        phase = .catchingUp
        held = [(e, framed)]
        catchUp(opening: false)
    }

    /// The opening snapshot arrived.
    func opened(_ snapshot: WatchFanout.Snapshot) {
        guard phase == .opening else { return }
        switch snapshot.result {
        case .failure(let error):
            end(GRPCStatus.from(error))
        case .success(let job):
            guard let job, caller.owns(job) else { return end(GRPCStatus(ReelError.notFound(jobID: jobID))) }
            if stream.write(framed: snapshot.framed, evenIfFull: true) == .gone { return end(nil) }
            cursor = WatchCursor(snapshotOf: job)
            if cursor.ended { return end(.ok) }
            goLive()
        }
    }

    /// Everything up to `cursor.last` went out: forwards what was held since, then live events.
    private func goLive() {
        phase = .live
        let pending = held
        held = []
        var i = 0
        while i < pending.count && phase == .live {
            forward(pending[i].event, pending[i].framed)
            i += 1
        }
        if phase == .catchingUp { held.append(contentsOf: pending[i...]) }
    }

    /// Reads storage after `cursor.last` in a task and sends it, waiting on the reader, then
    /// goes live again. `opening`: the watch's first messages (`after_seq` > 0): the caller must
    /// see the job, and a finished job whose events were all sent ends the watch.
    func catchUp(opening: Bool) {
        phase = opening ? .opening : .catchingUp
        let fanout = self.fanout, jobID = self.jobID, caller = self.caller
        let sender = stream.sender, start = cursor
        let me = UncheckedWatchers([self])
        Task {
            var cursor = start
            var failure: (any Error)?
            do {
                try await fanout.sendStored(jobID, &cursor, opening: opening ? caller : nil) {
                    try await sender.send(framed: fanout.framedEvents.framed($0))
                }
            } catch {
                failure = error
            }
            let (sent, error) = (cursor, failure)
            me.list[0].part.loop.execute { me.list[0].caughtUp(sent, error) }
        }
    }

    private func caughtUp(_ sent: WatchCursor, _ error: (any Error)?) {
        guard phase != .done else { return }
        if let error { return end(stream.isGone ? nil : GRPCStatus.from(error)) }
        cursor = sent
        if cursor.ended { return end(.ok) }
        goLive()
    }

    /// The watch is over: `status` ends the stream (nil: it already ended).
    func end(_ status: GRPCStatus?) {
        guard phase != .done else { return }
        phase = .done
        held = []
        part.ended(self, status)
    }
}
