import Logging
import ReelObservability
import Synchronization

/// A provider's account state in this process (DESIGN §5): parked (out of credit, arrears,
/// IP not allowed) — no job fails, submissions wait, and at most one probe submission goes out
/// per `probeInterval`, the first success unparking it — the run of throttled answers that
/// sets how long the next wait is, and the circuit routing reads: opened by `circuitErrors`
/// server errors in a row, then open for `probeInterval`, after which the next submission
/// probes it (a success closes it, a server error opens it again).
final class ProviderGate: Sendable {
    private struct State {
        var parked = false
        var reason = ""
        var lastProbe: ContinuousClock.Instant?
        var probing = false
        var throttles = 0
        var serverErrors = 0
        var circuitOpenedAt: ContinuousClock.Instant?
        var unhealthy = false
    }
    /// Server errors in a row that open the circuit.
    static let circuitErrors = 5
    private let state = Mutex(State())
    let provider: String
    let probeInterval: Duration
    let throttleBase: Duration
    let throttleCap: Duration
    let logger: Logger

    init(provider: String, probeInterval: Duration, throttleBase: Duration, throttleCap: Duration = .seconds(60),
         logger: Logger) {
        self.provider = provider; self.probeInterval = probeInterval; self.throttleBase = throttleBase
        self.throttleCap = throttleCap; self.logger = logger
        ReelMetrics.providerParked(provider: provider, false)
        ReelMetrics.providerCircuitOpen(provider: provider, false)
    }

    var isParked: Bool { state.withLock { $0.parked } }

    /// (parked, why, circuit open, healthy) at once.
    var snapshot: (parked: Bool, reason: String, circuitOpen: Bool, healthy: Bool) {
        state.withLock { s in
            (s.parked, s.parked ? s.reason : "",
             circuitOpen(s), !s.unhealthy)
        }
    }

    /// The provider refused Reel's credentials (until a submission goes through).
    func markUnhealthy() {
        state.withLock { $0.unhealthy = true }
        ReelMetrics.providerHealthy(provider: provider, false)
    }

    /// Routing passes the provider by while its circuit is open (until `probeInterval` after it
    /// opened: then one submission may find out whether it is back).
    var isCircuitOpen: Bool {
        state.withLock { circuitOpen($0) }
    }

    /// Open from `circuitErrors` server errors in a row until `probeInterval` after that.
    private func circuitOpen(_ s: State) -> Bool {
        s.circuitOpenedAt.map { ContinuousClock.now - $0 < probeInterval } ?? false
    }

    /// A submission or lookup got a server error (5xx, timeout, broken connection).
    func serverError() {
        let opened = state.withLock { s -> Bool in
            s.serverErrors += 1
            guard s.serverErrors >= Self.circuitErrors else { return false }
            let was = s.circuitOpenedAt != nil
            s.circuitOpenedAt = .now  // (again: a probe after the open time failed too)
            return !was
        }
        if opened {
            ReelMetrics.providerCircuitOpen(provider: provider, true)
            logger.error("provider circuit open: \(Self.circuitErrors) server errors in a row; routing passes it by",
                         metadata: ["reel.provider": "\(provider)"])
        }
    }

    /// Whether a submission may go out now: nil while parked and it is not this caller's turn
    /// to probe (at most one probe per `probeInterval`), else whether this submission is the probe.
    func tryPermit() -> Bool? {
        state.withLock { s -> Bool? in
            guard s.parked else { return false }
            let now = ContinuousClock.now
            guard !s.probing, s.lastProbe.map({ now - $0 >= probeInterval }) ?? true else { return nil }
            s.probing = true
            s.lastProbe = now
            return true
        }
    }

    /// The account is parked: the next probe goes out `probeInterval` after this.
    func park(_ reason: String) {
        let newly = state.withLock { s -> Bool in
            let was = s.parked
            s.parked = true
            s.reason = reason
            s.probing = false
            s.lastProbe = .now
            return !was
        }
        if newly {
            ReelMetrics.providerParked(provider: provider, true)
            logger.error("provider parked: jobs wait for it, nothing is failed", metadata: ["reel.provider": "\(provider)",
                                                                                        "reason": "\(reason)"])
        }
    }

    /// A submission went through: a parked account is back, an open circuit closes, and
    /// throttling starts over.
    func submitted() {
        let (unparked, closed, healed) = state.withLock { s -> (Bool, Bool, Bool) in
            let was = s.parked, open = s.circuitOpenedAt != nil, sick = s.unhealthy
            s.parked = false
            s.probing = false
            s.throttles = 0
            s.serverErrors = 0
            s.circuitOpenedAt = nil
            s.unhealthy = false
            return (was, open, sick)
        }
        if healed { ReelMetrics.providerHealthy(provider: provider, true) }
        if closed {
            ReelMetrics.providerCircuitOpen(provider: provider, false)
            logger.notice("provider circuit closed: a submission went through", metadata: ["reel.provider": "\(provider)"])
        }
        if unparked {
            ReelMetrics.providerParked(provider: provider, false)
            logger.notice("provider unparked: a submission went through", metadata: ["reel.provider": "\(provider)"])
        }
    }

    /// A probe ended without telling whether the account is back (a throttle, a server error).
    func probeEnded(_ wasProbe: Bool) {
        guard wasProbe else { return }
        state.withLock { $0.probing = false }
    }

    /// How long to wait after a throttled answer: the base doubling per throttle in a row, capped.
    func throttleDelay() -> Duration {
        let n = state.withLock { s -> Int in s.throttles += 1; return s.throttles }
        let factor = 1 << min(n - 1, 16)
        return min(throttleBase * factor, throttleCap)
    }
}
