import Testing
@testable import ReelCore

@Suite struct ETAEstimatorTests {
    /// The simulated provider at 200 ms a step: script, continuity, 4 polls, upload.
    func simulated(slots: Int = 1) -> ETAEstimator {
        ETAEstimator(provider: "simulated", defaults: .simulated(stepDelay: .milliseconds(200), polls: 4), slots: slots)
    }

    func job(_ status: JobStatus, _ stage: Stage, _ progress: Int32, id: String = "j1", deadline: Int64 = 0) -> Job {
        var j = Job(id: id, status: status, stage: stage, progress: progress)
        j.deadlineUnixMs = deadline
        return j
    }

    @Test func startsFromTheConfiguredStageTimes() {
        let e = simulated()
        let c = JobConfig()
        #expect(e.expected(c, .scriptExpansion) == .milliseconds(200))
        #expect(e.expected(c, .videoGeneration) == .milliseconds(800))
        #expect(e.expected(c, .finalization) == .zero)
        #expect(e.expectedRunMs(c) == 1400)
        // A fresh queued job with a free slot: the whole run from now.
        #expect(e.eta(of: job(.queued, .pending, 0), nowMs: 10_000) == 11_400)
        // Halfway through video generation (progress 60 of 35…85): 400 ms of it, then upload.
        #expect(e.eta(of: job(.continuityChecked, .videoGeneration, 60), nowMs: 10_000) == 10_600)
    }

    @Test func followsWhatIsMeasured() {
        let e = simulated()
        let c = JobConfig(targetDurationSeconds: 10, quality: .high, model: "m")
        e.record(c, .videoGeneration, took: .seconds(2))
        #expect(e.expected(c, .videoGeneration) == .seconds(2), "the first measurement replaces the default")
        e.record(c, .videoGeneration, took: .seconds(4))
        #expect(e.expected(c, .videoGeneration) == .milliseconds(2600), "then a moving average")
        // Per model, mode and duration: another config still starts from the default.
        #expect(e.expected(JobConfig(), .videoGeneration) == .milliseconds(800))
        #expect(e.expectedRunMs(c) == 200 + 200 + 2600 + 200)
    }

    @Test func queuedJobsWaitForTheSlotsAhead() {
        let e = simulated(slots: 2)
        // Two running, three queued ahead of j4: a slot frees after one run, j4's turn in the second round.
        e.updateQueue(.init(order: ["a": 0, "b": 1, "c": 2, "j4": 3], queued: 4, running: 2))
        #expect(e.waitMs(ahead: 3, running: 2, runMs: 1400) == 2 * 1400)
        #expect(e.eta(of: job(.queued, .pending, 0, id: "j4"), nowMs: 0) == 2 * 1400 + 1400)
        #expect(e.eta(of: job(.queued, .pending, 0, id: "a"), nowMs: 0) == 1400 + 1400)
        // A free slot: no wait.
        e.updateQueue(.init(order: ["a": 0], queued: 1, running: 0))
        #expect(e.eta(of: job(.queued, .pending, 0, id: "a"), nowMs: 0) == 1400)
        // A job not in the snapshot counts as behind every queued one.
        e.updateQueue(.init(order: [:], queued: 9, running: 2))
        #expect(e.eta(of: job(.queued, .pending, 0, id: "new"), nowMs: 0) == 5 * 1400 + 1400)
    }

    /// Every live reeld's slots serve the queue (the snapshot says how many), and a real
    /// provider's account slots cap how many run at once however many workers there are.
    @Test func theWaitCountsEveryInstancesSlotsAndTheProvidersCap() {
        let e = simulated(slots: 2)
        // Six slots across three instances, six running, six ahead: the running end, the six
        // ahead run, then this one: two rounds, not the four this process's 2 slots would take.
        e.updateQueue(.init(order: [:], queued: 6, running: 6, slots: 6))
        #expect(e.eta(of: job(.queued, .pending, 0, id: "new"), nowMs: 0) == 2 * 1400 + 1400)
        #expect(e.waitMs(ahead: 6, running: 6, runMs: 1400, slots: 6) == 2 * 1400)
        #expect(e.waitMs(ahead: 6, running: 6, runMs: 1400) == 4 * 1400, "without the snapshot's count: this process's 2")
        let kling = ETAEstimator(provider: "kling", defaults: .simulated(stepDelay: .milliseconds(200), polls: 4), slots: 8,
                                 providerSlots: 2)
        // Eight workers, but two account slots: four ahead with two running take two rounds.
        #expect(kling.waitMs(ahead: 4, running: 2, runMs: 1000, slots: 8) == 3 * 1000)
        #expect(kling.waitMs(ahead: 0, running: 1, runMs: 1000, slots: 8) == 0, "a free account slot: no wait")
    }

    @Test func aDelayedJobIsNotExpectedBeforeItsRunTime() {
        let e = simulated()
        var j = job(.queued, .pending, 0)
        j.runAtUnixMs = 60_000
        #expect(e.eta(of: j, nowMs: 1_000) == 61_400)
    }

    @Test func zeroWhenTerminalAndNeverBeforeTheEvent() {
        let e = simulated()
        #expect(e.eta(of: job(.finalReady, .completed, 100), nowMs: 5) == 0)
        #expect(e.eta(of: job(.cancelled, .pending, 0), nowMs: 5) == 0)
        var dead = job(.failed, .error, 0)
        dead.deadLettered = true
        #expect(e.eta(of: dead, nowMs: 5) == 0)

        _ = e.annotate(job(.processing, .scriptExpansion, 5, deadline: 1_000), nowMs: 0)
        // An event stamped later than "now" (another clock): the ETA is never before it.
        let ev = JobEvent(jobID: "j1", seq: 2, status: .processing, stage: .scriptExpansion, progress: 5, message: "", atUnixMs: 50_000)
        let a = e.annotate(ev, nowMs: 10)
        #expect(a.etaUnixMs >= ev.atUnixMs)
        #expect(a.atRisk, "the remembered deadline (1 s) is long past the ETA")
        let end = JobEvent(jobID: "j1", seq: 9, status: .finalReady, stage: .completed, progress: 100, message: "", atUnixMs: 60_000)
        let b = e.annotate(end, nowMs: 60_000)
        #expect(b.etaUnixMs == 0 && !b.atRisk)
        // Ended: forgotten, so a later event of it has no deadline.
        let again = e.annotate(ev, nowMs: 10)
        #expect(!again.atRisk)
    }

    @Test func atRiskOnlyWhenTheETAPassesTheDeadline() {
        let e = simulated()
        let onTime = e.annotate(job(.queued, .pending, 0, id: "ok", deadline: 100_000), nowMs: 0)
        #expect(onTime.etaUnixMs == 1400)
        let ev = JobEvent(jobID: "ok", seq: 1, status: .queued, stage: .pending, progress: 0, message: "", atUnixMs: 0)
        #expect(!e.annotate(ev, nowMs: 0).atRisk)
        _ = e.annotate(job(.queued, .pending, 0, id: "late", deadline: 1_000), nowMs: 0)
        let late = JobEvent(jobID: "late", seq: 1, status: .queued, stage: .pending, progress: 0, message: "", atUnixMs: 0)
        #expect(e.annotate(late, nowMs: 0).atRisk)
    }
}

@Suite struct DeadlinePriorityTests {
    let now: Int64 = 1_000_000_000

    @Test func aFarDeadlineChangesNothing() {
        #expect(PriorityScore.enqueuedAt(nowUnixMs: now, runAtUnixMs: 0, deadlineUnixMs: 0, expectedRunMs: 5_000) == now)
        #expect(PriorityScore.enqueuedAt(nowUnixMs: now, runAtUnixMs: 0, deadlineUnixMs: now + 3_600_000, expectedRunMs: 5_000) == now)
        #expect(PriorityScore.enqueuedAt(nowUnixMs: now, runAtUnixMs: now + 10, deadlineUnixMs: 0, expectedRunMs: 0) == now + 10)
    }

    @Test func aNearDeadlineKeysTheJobAsIfEnqueuedEarlier() {
        let e = PriorityScore.enqueuedAt(nowUnixMs: now, runAtUnixMs: 0, deadlineUnixMs: now + 10_000, expectedRunMs: 5_000)
        #expect(e == now + 10_000 - 5_000 - PriorityScore.deadlineMarginMs)
        let score = PriorityScore(tier: .standard, type: .continuation, firstJobToday: false)
        // It overtakes a same-class job enqueued a minute ago…
        #expect(score.sortKey(enqueuedAtUnixMs: e) < score.sortKey(enqueuedAtUnixMs: now - 60_000))
        // …and the nearer the deadline, the more it overtakes.
        let nearer = PriorityScore.enqueuedAt(nowUnixMs: now, runAtUnixMs: 0, deadlineUnixMs: now + 1_000, expectedRunMs: 5_000)
        #expect(nearer < e)
        // Not a premium job (a class apart).
        let premium = PriorityScore(tier: .premium, type: .continuation, firstJobToday: false)
        #expect(premium.sortKey(enqueuedAtUnixMs: now) < score.sortKey(enqueuedAtUnixMs: e))
    }
}
