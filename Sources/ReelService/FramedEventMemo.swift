import ReelCore
import ReelWire
import Synchronization

/// The gRPC-framed protobuf of recent job events, made once for all of an event's watchers
/// (10,000 watchers of one job would otherwise encode the same event 10,000 times). (job, seq)
/// is the key, but a seq does not name one event for good: retention prunes an old job's
/// events and renumbers the rest densely, so a seq may later name another event. A hit is used
/// only when its event is the one asked for (a comparison, far cheaper than an encoding). A
/// watch stream's opening snapshot carries the whole job and is not kept.
final class FramedEventMemo: Sendable {
    private struct Key: Hashable {
        let jobID: String
        let seq: Int64
        /// A replay may carry another ETA than the live event (0 once the job is terminal).
        let eta: Int64
    }
    private struct State {
        var map: [Key: (event: JobEvent, bytes: [UInt8])] = [:]
        var ring: [Key?]
        var next = 0
    }
    private let state: Mutex<State>

    init(capacity: Int = 1024) {
        state = Mutex(State(ring: [Key?](repeating: nil, count: max(1, capacity))))
    }

    func framed(_ event: JobEvent) -> [UInt8] {
        guard event.snapshot == nil else { return GRPCFraming.frame(ProtoCodec.encode(event)) }
        let key = Key(jobID: event.jobID, seq: event.seq, eta: event.etaUnixMs)
        if let hit = state.withLock({ $0.map[key] }), hit.event == event { return hit.bytes }
        let bytes = GRPCFraming.frame(ProtoCodec.encode(event))
        state.withLock { s in
            if let had = s.map[key] {
                // Another event under this seq (renumbered by retention): the newer one replaces it.
                if had.event != event { s.map[key] = (event, bytes) }
                return
            }
            if let old = s.ring[s.next] { s.map[old] = nil }
            s.ring[s.next] = key
            s.next = (s.next + 1) % s.ring.count
            s.map[key] = (event, bytes)
        }
        return bytes
    }
}
