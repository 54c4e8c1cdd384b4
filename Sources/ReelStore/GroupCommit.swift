import ReelCore
import Synchronization

/// Group commit: writes that arrive while earlier batches are being written wait together and
/// go to PostgreSQL in one transaction, so one commit (one fsync) makes a whole batch durable.
/// Each caller still returns only after its own write is committed. At low load a write runs
/// at once, alone: batching adds no latency, it only takes the queueing that concurrent writes
/// would do anyway. Used for `CreateJob` and for state changes.
final class GroupCommit<Input: Sendable, Output: Sendable>: Sendable {
    /// Writes a batch in one transaction and answers for each input in order; an answer may be
    /// an error of that input alone (an invalid transition) while the others commit. Throwing
    /// means nothing was written.
    typealias Write = @Sendable ([Input]) async throws -> [Result<Output, any Error>]

    private struct Pending: Sendable {
        let input: Input
        let cont: CheckedContinuation<Output, any Error>
    }

    private struct State {
        var queue: [Pending] = []
        var writers = 0
    }

    private let state = Mutex(State())
    private let maxWriters: Int
    private let maxBatch: Int
    private let write: Write

    /// At most `maxWriters` batches are in flight at once, each of at most `maxBatch` inputs.
    init(maxWriters: Int, maxBatch: Int = 256, write: @escaping Write) {
        self.maxWriters = max(1, maxWriters)
        self.maxBatch = max(1, maxBatch)
        self.write = write
    }

    func submit(_ input: Input) async throws -> Output {
        try await withCheckedThrowingContinuation { cont in
            let startWriter = state.withLock { s -> Bool in
                s.queue.append(Pending(input: input, cont: cont))
                guard s.writers < maxWriters else { return false }
                s.writers += 1
                return true
            }
            if startWriter { Task { await self.drain() } }
        }
    }

    /// Writes batches until the queue is empty.
    private func drain() async {
        while true {
            let batch: [Pending] = state.withLock { s in
                guard !s.queue.isEmpty else {
                    s.writers -= 1
                    return []
                }
                let n = min(s.queue.count, maxBatch)
                let b = Array(s.queue.prefix(n))
                s.queue.removeFirst(n)
                return b
            }
            if batch.isEmpty { return }
            do {
                let results = try await write(batch.map(\.input))
                for (p, r) in zip(batch, results) { p.cont.resume(with: r) }
            } catch let error as ReelError where batch.count > 1 && error.code != .unavailable {
                // A write the database refused fails the whole transaction: write them one by
                // one so that each caller gets its own answer and no other write is lost.
                for p in batch {
                    do { p.cont.resume(with: try await write([p.input])[0]) } catch { p.cont.resume(throwing: error) }
                }
            } catch {
                for p in batch { p.cont.resume(throwing: error) }
            }
        }
    }
}
