import Synchronization

/// Wakes tasks waiting for something to happen under a key (a callback for a job, a free
/// provider slot), with a timeout. A ring with nobody waiting is kept for the next waiter of
/// that key, so a ring between a waiter's last look and its wait is not lost.
final class Doorbell: Sendable {
    private struct State {
        var next = 0
        var waiters: [Int: (key: String, cont: CheckedContinuation<Bool, Never>)] = [:]
        var pending: Set<String> = []
    }
    private let state = Mutex(State())

    /// True when rung, false after `timeout` or on cancellation.
    func wait(_ key: String = "", timeout: Duration) async -> Bool {
        let id = state.withLock { s -> Int? in
            if s.pending.remove(key) != nil { return nil }
            s.next += 1
            return s.next
        }
        guard let id else { return true }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (cont: CheckedContinuation<Bool, Never>) in
                state.withLock { $0.waiters[id] = (key, cont) }
                if Task.isCancelled { resume(id, false); return }
                Task { [weak self] in
                    try? await Task.sleep(for: timeout)
                    self?.resume(id, false)
                }
            }
        } onCancel: {
            resume(id, false)
        }
    }

    func ring(_ key: String = "") {
        let woken = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
            let ids = s.waiters.filter { $0.value.key == key }.map(\.key)
            if ids.isEmpty { s.pending.insert(key) }
            return ids.compactMap { s.waiters.removeValue(forKey: $0)?.cont }
        }
        for c in woken { c.resume(returning: true) }
    }

    /// Forgets a ring nobody took (a follower that is done).
    func clear(_ key: String) { _ = state.withLock { $0.pending.remove(key) } }

    private func resume(_ id: Int, _ value: Bool) {
        state.withLock { $0.waiters.removeValue(forKey: id) }?.cont.resume(returning: value)
    }
}
