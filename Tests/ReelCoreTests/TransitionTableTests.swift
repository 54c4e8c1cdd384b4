import Testing
@testable import ReelCore

@Suite struct TransitionTableTests {
    @Test func queuedMayOnlyStartOrBeCancelled() {
        #expect(JobStatus.queued.allowedNext == [.processing, .cancelled])
        #expect(!JobStatus.queued.canTransition(to: .finalReady))
        #expect(!JobStatus.queued.canTransition(to: .scriptReady))
    }

    @Test func runningStatusesMayFailCancelOrLoseTheirLease() {
        for s in [JobStatus.processing, .scriptReady, .continuityChecked, .previewReady] {
            #expect(s.canTransition(to: .failed), "\(s)")
            #expect(s.canTransition(to: .cancelled), "\(s)")
            #expect(s.canTransition(to: .queued), "\(s)")
            #expect(s.canTransition(to: s), "progress updates within \(s)")
            #expect(s.isRunning)
        }
    }

    @Test func happyPathFollowsTheDesignOrder() {
        let path: [JobStatus] = [.queued, .processing, .scriptReady, .continuityChecked, .previewReady, .finalReady]
        for (a, b) in zip(path, path.dropFirst()) { #expect(a.canTransition(to: b), "\(a) → \(b)") }
        #expect(!JobStatus.processing.canTransition(to: .continuityChecked), "no skipping stages")
        #expect(!JobStatus.scriptReady.canTransition(to: .finalReady))
    }

    @Test func terminalStatusesGoNowhere() {
        #expect(JobStatus.finalReady.allowedNext.isEmpty)
        #expect(JobStatus.cancelled.allowedNext.isEmpty)
        #expect(JobStatus.failed.allowedNext == [.queued])
    }

    @Test func failedIsTerminalOnlyWhenDeadLettered() {
        #expect(!JobStatus.failed.isTerminal(deadLettered: false))
        #expect(JobStatus.failed.isTerminal(deadLettered: true))
        #expect(JobStatus.finalReady.isTerminal(deadLettered: false))
        #expect(!JobStatus.previewReady.isTerminal(deadLettered: true))
    }

    @Test func sourcesAreTheInverseOfTheTable() {
        for target in JobStatus.allCases {
            let sources = Set(JobStatus.sources(of: target))
            for s in JobStatus.allCases { #expect(sources.contains(s) == s.canTransition(to: target)) }
        }
        #expect(Set(JobStatus.sources(of: .cancelled)) == [.queued, .processing, .scriptReady, .continuityChecked, .previewReady])
    }

    @Test func namesRoundTrip() {
        for s in JobStatus.allCases { #expect(JobStatus(name: s.name) == s) }
        for s in Stage.allCases { #expect(Stage(name: s.name) == s) }
        #expect(JobStatus(name: "bogus") == nil)
        #expect(JobStatus.continuityChecked.name == "continuity_checked")
    }
}

@Suite struct PriorityScoreTests {
    @Test func seedWeights() {
        #expect(PriorityScore(tier: .standard, type: .continuation, firstJobToday: false).points == 100)
        #expect(PriorityScore(tier: .standard, type: .sceneCreation, firstJobToday: false).points == 80)
        #expect(PriorityScore(tier: .standard, type: .continuation, firstJobToday: true).points == 90)
        #expect(PriorityScore(tier: .standard, type: .sceneCreation, firstJobToday: true).points == 70)
    }

    @Test func premiumRunsBeforeStandardEnqueuedAtTheSameTime() {
        let t: Int64 = 1_800_000_000_000
        let premium = PriorityScore(tier: .premium, type: .continuation, firstJobToday: false).sortKey(enqueuedAtUnixMs: t)
        let standard = PriorityScore(tier: .standard, type: .sceneCreation, firstJobToday: true).sortKey(enqueuedAtUnixMs: t)
        #expect(premium < standard)
    }

    @Test func agingLetsAnOldJobOvertakeABetterScore() {
        let t: Int64 = 1_800_000_000_000
        let old = PriorityScore(tier: .standard, type: .continuation, firstJobToday: false)
        let better = PriorityScore(tier: .standard, type: .sceneCreation, firstJobToday: false)
        // 20 points are worth 20 × k of waiting: a job that waited longer than that wins.
        let wait = 20 * PriorityScore.millisecondsPerPoint
        #expect(old.sortKey(enqueuedAtUnixMs: t) < better.sortKey(enqueuedAtUnixMs: t + wait + 1))
        #expect(old.sortKey(enqueuedAtUnixMs: t) > better.sortKey(enqueuedAtUnixMs: t + wait - 1))
    }
}

@Suite struct RetryPolicyTests {
    @Test func backoffDoublesWithBoundedJitter() {
        let p = RetryPolicy(baseMs: 5_000, maxMs: 300_000)
        #expect(p.delayMs(attempt: 1, jitter: 0) == 5_000)
        #expect(p.delayMs(attempt: 2, jitter: 0) == 10_000)
        #expect(p.delayMs(attempt: 3, jitter: 0) == 20_000)
        #expect(p.delayMs(attempt: 3, jitter: 0.999) < 24_001)
        #expect(p.delayMs(attempt: 40, jitter: 0) == 300_000)
    }
}
