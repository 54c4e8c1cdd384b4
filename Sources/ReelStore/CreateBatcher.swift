import ReelCore
import Synchronization

/// Group commit for `CreateJob`: calls that arrive while earlier batches are being written
/// wait together and go to PostgreSQL as one statement with one commit, so one fsync makes a
/// whole batch durable. Each caller still returns only after its own row is committed.
/// At low load a call runs at once, alone: batching adds no latency, it only takes the
/// queueing that concurrent calls would do anyway.
final class CreateBatcher: Sendable {
    typealias Created = (job: Job, created: Bool)

    private struct Pending: Sendable {
        let job: NewJob
        let cont: CheckedContinuation<Created, any Error>
    }

    private struct State {
        var queue: [Pending] = []
        var writers = 0
    }

    private let state = Mutex(State())
    private let maxWriters: Int
    private let maxBatch: Int
    private let write: @Sendable ([NewJob]) async throws -> [Created]

    /// `write` stores a batch and answers for each job in order; at most `maxWriters` batches
    /// are in flight at once, each of at most `maxBatch` jobs.
    init(maxWriters: Int, maxBatch: Int = 256, write: @escaping @Sendable ([NewJob]) async throws -> [Created]) {
        self.maxWriters = max(1, maxWriters)
        self.maxBatch = max(1, maxBatch)
        self.write = write
    }

    func submit(_ job: NewJob) async throws -> Created {
        try await withCheckedThrowingContinuation { cont in
            let startWriter = state.withLock { s -> Bool in
                s.queue.append(Pending(job: job, cont: cont))
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
                let results = try await write(batch.map(\.job))
                for (p, r) in zip(batch, results) { p.cont.resume(returning: r) }
            } catch let error as ReelError where batch.count > 1 && error.code != .unavailable {
                // One row the database refused fails the whole statement: write them one by
                // one so that each call gets its own answer and no other is lost.
                for p in batch {
                    do { p.cont.resume(returning: try await write([p.job])[0]) } catch { p.cont.resume(throwing: error) }
                }
            } catch {
                for p in batch { p.cont.resume(throwing: error) }
            }
        }
    }
}
