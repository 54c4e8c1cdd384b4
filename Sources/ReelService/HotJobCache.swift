import ReelCore
import ReelWire
import ReelScheduler
import Synchronization

/// Jobs recently read, served from memory until their next event: each cached job holds a
/// `JobEventHub` subscription (which also sees other processes' events through LISTEN/NOTIFY),
/// and its first event drops the entry. Subscribing before reading storage means no change
/// can slip between the read and the subscription. A TTL bounds staleness should a
/// notification be lost; `capacity` bounds memory.
public final class HotJobCache: Sendable {
    private struct Entry {
        var job: Job
        var token: UInt64
        var expires: ContinuousClock.Instant
        var watcher: Task<Void, Never>?
        /// The job's protobuf encoding, made at the first read that needs it.
        var encoded: [UInt8]? = nil
    }
    private struct State {
        var entries: [String: Entry] = [:]
        var nextToken: UInt64 = 0
        var hits = 0
        var misses = 0
    }
    private let state = Mutex(State())
    private let hub: JobEventHub
    let capacity: Int
    let ttl: Duration

    public init(hub: JobEventHub, capacity: Int = 4096, ttl: Duration = .seconds(30)) {
        self.hub = hub; self.capacity = max(1, capacity); self.ttl = ttl
    }

    /// The cached job (`fromMemory`), or `load()`'s answer (cached when found).
    public func job(id: String, load: () async throws -> Job?) async throws -> (job: Job, fromMemory: Bool)? {
        let now = ContinuousClock.now
        let hit: Job? = state.withLock { s in
            guard let e = s.entries[id], e.expires > now else { s.misses += 1; return nil }
            s.hits += 1
            return e.job
        }
        if let hit { return (hit, true) }
        let events = hub.subscribe(jobID: id)
        guard let job = try await load() else { return nil }
        let token: UInt64 = state.withLock { s in
            s.nextToken += 1
            if let old = s.entries[id] { old.watcher?.cancel() }
            if s.entries[id] == nil && s.entries.count >= capacity { evictOne(&s) }
            s.entries[id] = Entry(job: job, token: s.nextToken, expires: ContinuousClock.now + ttl, watcher: nil)
            return s.nextToken
        }
        // Started after the insert: an event buffered since the subscription drops the entry.
        let watcher = Task { [weak self] in
            var it = events.makeAsyncIterator()
            _ = await it.next()
            self?.drop(id: id, token: token)
        }
        let kept = state.withLock { s in
            guard s.entries[id]?.token == token else { return false }
            s.entries[id]?.watcher = watcher
            return true
        }
        if !kept { watcher.cancel() }
        return (job, false)
    }

    /// The cached job and its protobuf encoding (made once per cached version), if there is a
    /// fresh entry; never loads, never waits (the event loop's path).
    public func cachedEncoded(id: String) -> (job: Job, encoded: [UInt8])? {
        let now = ContinuousClock.now
        let found: (Job, [UInt8]?, UInt64)? = state.withLock { s in
            guard let e = s.entries[id], e.expires > now else { return nil }
            s.hits += 1
            return (e.job, e.encoded, e.token)
        }
        guard let (job, encoded, token) = found else { return nil }
        if let encoded { return (job, encoded) }
        let bytes = ProtoCodec.encode(job)
        state.withLock { s in
            if s.entries[id]?.token == token { s.entries[id]?.encoded = bytes }
        }
        return (job, bytes)
    }

    /// (hits, misses, entries) for tests and metrics.
    public var stats: (hits: Int, misses: Int, entries: Int) { state.withLock { ($0.hits, $0.misses, $0.entries.count) } }

    /// Forgets the job now: its writer's next read must not see the copy from before the write.
    public func invalidate(id: String) {
        state.withLock { s in
            s.entries.removeValue(forKey: id)?.watcher?.cancel()
        }
    }

    private func drop(id: String, token: UInt64) {
        state.withLock { s in
            if s.entries[id]?.token == token { s.entries[id] = nil }
        }
    }

    /// Evicts the entry closest to expiry (the least recently loaded).
    private func evictOne(_ s: inout State) {
        guard let victim = s.entries.min(by: { $0.value.expires < $1.value.expires }) else { return }
        victim.value.watcher?.cancel()
        s.entries[victim.key] = nil
    }
}
