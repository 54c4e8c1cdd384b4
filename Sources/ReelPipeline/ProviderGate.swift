import Logging
import ReelObservability
import Synchronization

/// A provider's account state in this process (DESIGN §5): parked (out of credit, arrears,
/// IP not allowed) — no job fails, submissions wait, and at most one probe submission goes out
/// per `probeInterval`, the first success unparking it — and the run of throttled answers
/// that sets how long the next wait is.
final class ProviderGate: Sendable {
    private struct State {
        var parked = false
        var reason = ""
        var lastProbe: ContinuousClock.Instant?
        var probing = false
        var throttles = 0
    }
    private let state = Mutex(State())
    private let bell = Doorbell()
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
    }

    var isParked: Bool { state.withLock { $0.parked } }

    /// Returns when a submission may go out: at once while not parked (false), or when it is
    /// this caller's turn to probe a parked account (true).
    func permit() async throws -> Bool {
        while true {
            try Task.checkCancellation()
            let (go, probe, wait) = state.withLock { s -> (Bool, Bool, Duration) in
                guard s.parked else { return (true, false, .zero) }
                let now = ContinuousClock.now
                if !s.probing, s.lastProbe.map({ now - $0 >= probeInterval }) ?? true {
                    s.probing = true
                    s.lastProbe = now
                    return (true, true, .zero)
                }
                let untilProbe = s.lastProbe.map { probeInterval - (now - $0) } ?? probeInterval
                return (false, false, max(.milliseconds(50), min(untilProbe, .seconds(1))))
            }
            if go { return probe }
            _ = await bell.wait(timeout: wait)
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

    /// A submission went through: a parked account is back, and throttling starts over.
    func submitted() {
        let unparked = state.withLock { s -> Bool in
            let was = s.parked
            s.parked = false
            s.probing = false
            s.throttles = 0
            return was
        }
        if unparked {
            ReelMetrics.providerParked(provider: provider, false)
            logger.notice("provider unparked: a submission went through", metadata: ["reel.provider": "\(provider)"])
            bell.ring()
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
