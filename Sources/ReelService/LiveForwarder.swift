import ReelCore
import ReelScheduler
import Synchronization

/// What a watcher's transport did with an event handed to it without waiting.
public enum DirectSend: Sendable {
    case sent
    /// Over the stream's high-water mark: the reader is slow; nothing was sent.
    case full
    /// The stream is gone.
    case gone
}

/// The live phase of a watch, on the publisher's thread: each event goes straight to the
/// watcher's stream as it is published, with no task woken per event (10,000 watchers of one
/// job are 10,000 sends, not 10,000 task switches). When it can't — a gap in `seq`, a reader
/// over its high-water mark — it stops forwarding and wakes the watch task, which catches up
/// from storage (waiting on the reader as needed) and hands back. Events that arrive meanwhile
/// are buffered, up to `limit`; beyond it the watcher has fallen behind.
final class LiveForwarder: JobEventReceiver, Sendable {
    enum Outcome: Sendable, Equatable {
        case finished
        case fellBehind(lastSeq: Int64)
        /// Forwarding stopped after `lastSeq`; the task catches up from storage.
        case stalled(lastSeq: Int64)
        case gone
        case cancelled
    }

    private enum Mode { case buffering, live, stopped }

    private struct State {
        var mode = Mode.buffering
        var last: Int64 = 0
        var buffer: [JobEvent] = []
        var outcome: Outcome?
        var waiter: CheckedContinuation<Outcome, Never>?
    }

    private let state = Mutex(State())
    private let limit: Int
    private let send: @Sendable (JobEvent) -> DirectSend

    init(limit: Int, send: @escaping @Sendable (JobEvent) -> DirectSend) {
        self.limit = max(1, limit)
        self.send = send
    }

    func receive(_ event: JobEvent) {
        let wake = state.withLock { s -> (CheckedContinuation<Outcome, Never>, Outcome)? in
            switch s.mode {
            case .stopped:
                return nil
            case .buffering:
                s.buffer.append(event)
                if s.buffer.count > limit {
                    s.mode = .stopped
                    s.buffer = []
                    return Self.end(&s, .fellBehind(lastSeq: s.last))
                }
                return nil
            case .live:
                return forward(&s, event)
            }
        }
        if let (c, o) = wake { c.resume(returning: o) }
    }

    /// Everything up to `last` has been sent by the watch task: forwards what was buffered since,
    /// then what is published, until the watch ends or forwarding stalls.
    func goLive(after last: Int64) async -> Outcome {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Outcome, Never>) in
                let now = state.withLock { s -> Outcome? in
                    if s.mode == .stopped {
                        let o = s.outcome ?? .cancelled
                        if case .fellBehind = o { return .fellBehind(lastSeq: max(s.last, last)) }
                        return o
                    }
                    s.last = max(s.last, last)
                    s.outcome = nil
                    s.mode = .live
                    let pending = s.buffer
                    s.buffer = []
                    var i = 0
                    while i < pending.count && s.mode == .live {
                        _ = forward(&s, pending[i])
                        i += 1
                    }
                    if s.mode == .buffering { s.buffer.append(contentsOf: pending[i...]) }
                    if let o = s.outcome {
                        s.outcome = nil
                        return o
                    }
                    s.waiter = c
                    return nil
                }
                if let now { c.resume(returning: now) }
            }
        } onCancel: {
            let wake = state.withLock { s -> (CheckedContinuation<Outcome, Never>, Outcome)? in
                s.mode = .stopped
                return Self.end(&s, .cancelled)
            }
            if let (c, o) = wake { c.resume(returning: o) }
        }
    }

    /// One event in live mode, under the lock.
    private func forward(_ s: inout State, _ e: JobEvent) -> (CheckedContinuation<Outcome, Never>, Outcome)? {
        if e.seq <= s.last { return nil }
        guard e.seq == s.last + 1 else {
            s.mode = .buffering
            s.buffer = [e]
            return Self.end(&s, .stalled(lastSeq: s.last))
        }
        switch send(e) {
        case .sent:
            s.last = e.seq
            guard e.endsWatch else { return nil }
            s.mode = .stopped
            return Self.end(&s, .finished)
        case .full:
            s.mode = .buffering
            s.buffer = [e]
            return Self.end(&s, .stalled(lastSeq: s.last))
        case .gone:
            s.mode = .stopped
            return Self.end(&s, .gone)
        }
    }

    /// Hands `o` to the waiting task, or keeps it for the next `goLive`.
    private static func end(_ s: inout State, _ o: Outcome) -> (CheckedContinuation<Outcome, Never>, Outcome)? {
        if let w = s.waiter {
            s.waiter = nil
            return (w, o)
        }
        s.outcome = o
        return nil
    }
}
