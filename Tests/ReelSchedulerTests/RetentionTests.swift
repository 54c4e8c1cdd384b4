import Foundation
import Logging
import ReelCore
import ReelPipeline
import ReelStore
import ReelTestSupport
import Testing

/// Retention (issue #17 item 7) against the real PostgreSQL: rows back-dated with SQL past a
/// 30-day retention lose what the issue says, and nothing else does.
@Suite(.enabled(if: TestDatabase.baseURL != nil, "needs REEL_TEST_DATABASE_URL"), .serialized)
struct RetentionTests {
    /// A job with a seven-event history ending in `end` (and dead-lettered when `deadLettered`):
    /// seq 3, 4 (progress) and 6 (a message) change no status.
    func endedJob(_ store: PostgresJobStore, _ n: Int, end: String, deadLettered: Bool = false, webhook: String = "",
                  ageDays: Int = 0) async throws -> String {
        var input = CreateJobInput(userID: "u\(n)", sceneID: "s", type: .sceneCreation, inputText: "job \(n)")
        input.webhookURL = webhook
        let id = try await store.createJob(try input.validated(allowPrivateWebhooks: true)).job.id
        _ = try await store.scalar("""
        INSERT INTO job_events (job_id, seq, status, stage, progress, message, dead_lettered) VALUES
          ('\(id)', 2, 'processing', 'script_expansion', 0, 'claimed', false),
          ('\(id)', 3, 'processing', 'script_expansion', 10, '', false),
          ('\(id)', 4, 'processing', 'script_expansion', 50, '', false),
          ('\(id)', 5, 'script_ready', 'continuity_validation', 0, '', false),
          ('\(id)', 6, 'script_ready', 'continuity_validation', 0, 'checking', false),
          ('\(id)', 7, '\(end)', 'completed', 100, 'end', \(deadLettered));
        UPDATE jobs SET status = '\(end)', dead_lettered = \(deadLettered), last_event_seq = 7, completed_at = now()
        WHERE id = '\(id)';
        DELETE FROM job_queue WHERE job_id = '\(id)';
        UPDATE jobs SET created_at = created_at - make_interval(days => \(ageDays)),
                        completed_at = completed_at - make_interval(days => \(ageDays)) WHERE id = '\(id)';
        SELECT 1
        """)
        return id
    }

    func seqs(_ store: PostgresJobStore, _ id: String) async throws -> Int {
        try await store.scalar("SELECT COALESCE(sum(1 << seq::int), 0) FROM job_events WHERE job_id = '\(id)'")
    }

    func bits(_ seqs: [Int]) -> Int { seqs.reduce(0) { $0 | (1 << $1) } }

    func write(_ dir: String, _ files: [String: Int]) throws {
        for (name, size) in files {
            let path = dir + "/" + name
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: path, contents: Data(repeating: 7, count: size))
        }
    }

    @Test func oldTerminalJobsKeepTransitionsAndSegmentFilesWhileUnreferencedFailuresGo() async throws {
        let store = try await TestDatabase.freshStore()
        defer { store.close() }
        let old = 40
        let final = try await endedJob(store, 1, end: "final_ready", webhook: "http://127.0.0.1:9/h", ageDays: old)
        let failed = try await endedJob(store, 2, end: "failed", deadLettered: true, ageDays: old)
        let cancelled = try await endedJob(store, 3, end: "cancelled", ageDays: old)
        let recent = try await endedJob(store, 4, end: "final_ready")
        let recentFailed = try await endedJob(store, 5, end: "failed", deadLettered: true)
        // A failed job a segment refers to stays (a segment is a scene's content).
        let failedWithSegment = try await endedJob(store, 6, end: "failed", deadLettered: true, ageDays: old)

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reel-retention-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let local = LocalArtifactStore(directory: dir)
        for (id, seg) in [(final, true), (failedWithSegment, true)] where seg {
            _ = try await store.scalar("""
            INSERT INTO segments (job_id, tenant_id, scene_id, video_url, thumbnail_url, duration_seconds)
            VALUES ('\(id)', '', 's', '\(local.url(jobID: id, file: "final.mp4"))', '\(local.url(jobID: id, file: "thumb.jpg"))', 5);
            SELECT 1
            """)
        }
        try write(dir + "/" + final, ["final.mp4": 1000, "thumb.jpg": 100, "last_frame.png": 50, "preview.mp4": 400,
                                      "hls/index.m3u8": 10, "hls/seg0.ts": 300])
        try write(dir + "/" + failed, ["preview.mp4": 200])
        try write(dir + "/" + recent, ["preview.mp4": 400])
        // The webhook of the old final job was delivered long ago.
        #expect(try await store.scalar("SELECT count(*) FROM webhook_deliveries WHERE job_id = '\(final)'") == 1)
        _ = try await store.scalar("""
        UPDATE webhook_deliveries SET state = 'delivered', finished_at = now() - interval '40 days'; SELECT 1
        """)

        var sweeper = RetentionSweeper(store: store, artifacts: local, days: 30, logger: Logger(label: "test"))
        sweeper.batch = 2  // several batches and statements, as with many jobs
        let report = await sweeper.sweep()

        let all = bits([1, 2, 3, 4, 5, 6, 7])
        // The transitions (old seq 1, 2, 5, 7) stay, renumbered densely (DESIGN §2).
        let transitions = bits([1, 2, 3, 4])
        #expect(try await seqs(store, final) == transitions)
        #expect(try await seqs(store, failedWithSegment) == transitions)
        for id in [final, failedWithSegment] {
            let job = try #require(try await store.job(id: id))
            #expect(job.lastEventSeq == 4)
            let events = try await store.events(jobID: id, afterSeq: 0)
            #expect(events.map(\.seq) == [1, 2, 3, 4])
            #expect(events.map(\.status.name) == ["queued", "processing", "script_ready", job.status.name])
            #expect(events.last?.message == "end")
            #expect(try await store.events(jobID: id, afterSeq: 2).map(\.seq) == [3, 4])
        }
        #expect(try await seqs(store, recent) == all)
        #expect(try await seqs(store, recentFailed) == all)
        for gone in [failed, cancelled] {
            #expect(try await store.scalar("SELECT count(*) FROM jobs WHERE id = '\(gone)'") == 0)
            #expect(try await seqs(store, gone) == 0)
        }
        for stays in [final, recent, recentFailed, failedWithSegment] {
            #expect(try await store.scalar("SELECT count(*) FROM jobs WHERE id = '\(stays)'") == 1)
        }
        #expect(try await store.scalar("SELECT count(*) FROM segments") == 2)
        #expect(try await store.scalar("SELECT count(*) FROM webhook_deliveries") == 0)

        let fm = FileManager.default
        for kept in ["final.mp4", "thumb.jpg", "last_frame.png"] { #expect(fm.fileExists(atPath: "\(dir)/\(final)/\(kept)")) }
        for pruned in ["preview.mp4", "hls/index.m3u8", "hls/seg0.ts", "hls"] { #expect(!fm.fileExists(atPath: "\(dir)/\(final)/\(pruned)")) }
        #expect(!fm.fileExists(atPath: "\(dir)/\(failed)"))
        #expect(fm.fileExists(atPath: "\(dir)/\(recent)/preview.mp4"))

        #expect(report.jobsDeleted == 2)
        #expect(report.eventsPruned == 3 + 3 + 7 + 7)
        #expect(report.artifactFiles == 4)
        #expect(report.artifactBytes == 400 + 10 + 300 + 200)
        #expect(report.deliveriesPruned == 1)
        #expect(report.jobsRenumbered == 2)

        // The next pass goes on from the cursor: nothing more to do.
        let again = await sweeper.sweep()
        #expect(again == RetentionSweeper.Report())
    }

    /// A job old but still running at one pass (it has no end yet) is pruned by a later pass
    /// once it ends: the walk goes by when jobs ended, and never skips one for good.
    @Test func aJobStillRunningAtOnePassIsPrunedByALaterOneAfterItEnds() async throws {
        let store = try await TestDatabase.freshStore()
        defer { store.close() }
        let ended = try await endedJob(store, 1, end: "final_ready", ageDays: 40)
        let input = CreateJobInput(userID: "u2", sceneID: "s", type: .sceneCreation, inputText: "still running")
        let running = try await store.createJob(try input.validated(allowPrivateWebhooks: true)).job.id
        _ = try await store.scalar("""
        INSERT INTO job_events (job_id, seq, status, stage, progress, message, dead_lettered) VALUES
          ('\(running)', 2, 'processing', 'script_expansion', 0, 'claimed', false),
          ('\(running)', 3, 'processing', 'script_expansion', 10, '', false),
          ('\(running)', 4, 'processing', 'script_expansion', 50, '', false);
        UPDATE jobs SET status = 'processing', last_event_seq = 4, created_at = now() - interval '50 days' WHERE id = '\(running)';
        SELECT 1
        """)
        var sweeper = RetentionSweeper(store: store, artifacts: nil, days: 30, logger: Logger(label: "test"))
        sweeper.batch = 1
        let first = await sweeper.sweep()
        #expect(first.jobsRenumbered == 1)
        #expect(try await seqs(store, ended) == bits([1, 2, 3, 4]))
        #expect(try await seqs(store, running) == bits([1, 2, 3, 4]))
        #expect(try await store.job(id: running)?.lastEventSeq == 4)

        // It ends (after the job the first pass stopped at), long enough ago to go.
        _ = try await store.scalar("""
        INSERT INTO job_events (job_id, seq, status, stage, progress, message, dead_lettered) VALUES
          ('\(running)', 5, 'processing', 'post_processing', 90, '', false),
          ('\(running)', 6, 'final_ready', 'completed', 100, 'done', false);
        UPDATE jobs SET status = 'final_ready', last_event_seq = 6, completed_at = now() - interval '35 days' WHERE id = '\(running)';
        DELETE FROM job_queue WHERE job_id = '\(running)';
        SELECT 1
        """)
        let second = await sweeper.sweep()
        #expect(second.eventsPruned == 3)
        #expect(second.jobsRenumbered == 1)
        #expect(try await seqs(store, running) == bits([1, 2, 3]))
        #expect(try await store.job(id: running)?.lastEventSeq == 3)
        #expect(try await store.events(jobID: running, afterSeq: 0).map(\.status.name) == ["queued", "processing", "final_ready"])
        // The job that ended first is not walked again.
        #expect(await sweeper.sweep() == RetentionSweeper.Report())
    }

    /// A job retried between the batch that found it and the prune is left alone: its events
    /// are neither pruned nor renumbered under its writers.
    @Test func aJobRetriedSinceItsBatchIsNotPruned() async throws {
        let store = try await TestDatabase.freshStore()
        defer { store.close() }
        let id = try await endedJob(store, 1, end: "final_ready", ageDays: 40)
        _ = try await store.scalar("UPDATE jobs SET status = 'queued', completed_at = NULL WHERE id = '\(id)'; SELECT 1")
        let p = try await store.pruneEvents(jobIDs: [id], olderThanDays: 30)
        #expect(p == EventPrune())
        #expect(try await seqs(store, id) == bits([1, 2, 3, 4, 5, 6, 7]))
    }

    /// Gaps an earlier prune left (before the renumbering existed; migration 18 restarts the
    /// walk) are closed by the next pass, with nothing left to delete.
    @Test func gapsFromAnEarlierPruneAreClosed() async throws {
        let store = try await TestDatabase.freshStore()
        defer { store.close() }
        let id = try await endedJob(store, 1, end: "cancelled", ageDays: 40)
        _ = try await store.scalar("""
        DELETE FROM job_events WHERE job_id = '\(id)' AND seq IN (3, 4, 6);
        INSERT INTO segments (job_id, tenant_id, scene_id, video_url, thumbnail_url, duration_seconds)
        VALUES ('\(id)', '', 's', '', '', 5);
        SELECT 1
        """)
        let report = await RetentionSweeper(store: store, artifacts: nil, days: 30, logger: Logger(label: "test")).sweep()
        #expect(report.eventsPruned == 0 && report.jobsDeleted == 0 && report.jobsRenumbered == 1)
        #expect(try await seqs(store, id) == bits([1, 2, 3, 4]))
        #expect(try await store.job(id: id)?.lastEventSeq == 4)
    }

    @Test func zeroDaysKeepsEverything() async throws {
        let store = try await TestDatabase.freshStore()
        defer { store.close() }
        let id = try await endedJob(store, 1, end: "cancelled", ageDays: 400)
        let report = await RetentionSweeper(store: store, artifacts: nil, days: 0, logger: Logger(label: "test")).sweep()
        #expect(report == RetentionSweeper.Report())
        #expect(try await store.scalar("SELECT count(*) FROM job_events WHERE job_id = '\(id)'") == 7)
    }
}
