import ReelCore
import ReelWire
import Synchronization

/// The gRPC-framed protobuf of recent job events, made once for all of an event's watchers
/// (10,000 watchers of one job would otherwise encode the same event 10,000 times). A job's
/// `seq` names one event for good, so (job, seq) is the key; a watch stream's opening snapshot
/// carries the whole job and is not kept.
final class FramedEventMemo: Sendable {
    private struct Key: Hashable {
        let jobID: String
        let seq: Int64
        /// A replay may carry another ETA than the live event (0 once the job is terminal).
        let eta: Int64
    }
    private struct State {
        var map: [Key: [UInt8]] = [:]
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
        if let bytes = state.withLock({ $0.map[key] }) { return bytes }
        let bytes = GRPCFraming.frame(ProtoCodec.encode(event))
        state.withLock { s in
            guard s.map[key] == nil else { return }
            if let old = s.ring[s.next] { s.map[old] = nil }
            s.ring[s.next] = key
            s.next = (s.next + 1) % s.ring.count
            s.map[key] = bytes
        }
        return bytes
    }
}
