import ReelCore
import Testing
@testable import ReelJSON

/// The one shape of a job, an event and an error: protobuf's JSON mapping, keys sorted.
struct JobJSONTests {
    static let job = Job(
        id: "0b5c0000-0000-4000-8000-000000000001", userID: "alice", sceneID: "lighthouse", type: .sceneCreation,
        status: .finalReady, stage: .completed, progress: 100, message: "done", inputText: "The keeper <climbs>",
        bibleVersion: 2, config: JobConfig(targetDurationSeconds: 8, quality: .high, model: "m", styleOverrides: ["b": "2", "a": "1"]),
        result: JobResult(segmentID: "seg", videoURL: "file:///v.mp4", thumbnailURL: "t", durationSeconds: 8.5, updatedBibleVersion: 3),
        retryCount: 1, maxRetries: 3, idempotencyKey: "idem_1", tier: .premium, deadLettered: false, workerID: "w1",
        createdAtUnixMs: 1_795_000_000_123, startedAtUnixMs: 1_795_000_000_200, completedAtUnixMs: 1_795_000_009_000,
        lastEventSeq: 9)

    @Test func aJobIsWrittenInProtobufsJSONMapping() throws {
        let text = JSONCoding.encode(JobJSON(Self.job))
        for fragment in [
            #"{"artifacts":{"expandedScript":"","finalVideoUrl":"","hlsPlaylistUrl":"","previewVideoUrl":"","providerJobId":"","providerRequestId":"","thumbnailUrl":"","validationResult":""}"#,
            #""bibleVersion":2,"completedAtUnixMs":1795000009000,"config":{"model":"m","quality":"QUALITY_HIGH","styleOverrides":{"a":"1","b":"2"},"targetDurationSeconds":8},"createdAtUnixMs":1795000000123,"deadLettered":false,"#,
            #""id":"0b5c0000-0000-4000-8000-000000000001","idempotencyKey":"idem_1","inputText":"The keeper \u003cclimbs>","lastEventSeq":9,"maxRetries":3,"message":"done","progress":100,"#,
            #""result":{"durationSeconds":8.5,"segmentId":"seg","thumbnailUrl":"t","updatedBibleVersion":3,"videoUrl":"file:///v.mp4"},"retryCount":1,"sceneId":"lighthouse","stage":"STAGE_COMPLETED","startedAtUnixMs":1795000000200,"status":"JOB_STATUS_FINAL_READY","tier":"TIER_PREMIUM","type":"JOB_TYPE_SCENE_CREATION","userId":"alice","workerId":"w1"}"#,
        ] {
            #expect(text.contains(fragment), "\(fragment)\nnot in\n\(text)")
        }
        #expect(!text.contains(#""error""#), "an unset error is left out")
        #expect(try JSONCoding.decode(JobJSON.self, from: Array(text.utf8)) == JobJSON(Self.job), "round trip")
    }

    @Test func defaultsAreWrittenAndAFailedJobCarriesItsError() {
        var job = Job(id: "j")
        job.error = JobError(code: "PROVIDER", message: "boom", stage: .videoGeneration)
        let text = JSONCoding.encode(JobJSON(job))
        #expect(text.contains(#""error":{"code":"PROVIDER","details":"","message":"boom","stage":"STAGE_VIDEO_GENERATION"}"#), "\(text)")
        #expect(text.contains(#""message":"","progress":0,"#) && text.contains(#""startedAtUnixMs":0,"#), "\(text)")
        #expect(text.contains(#""type":"JOB_TYPE_UNSPECIFIED""#) && !text.contains(#""result""#), "\(text)")
    }

    @Test func theSameJobIsTheSameBytes() {
        // ETags hash the text: a map's order must not leak into it.
        var other = Self.job
        other.config.styleOverrides = [:]
        other.config.styleOverrides["a"] = "1"
        other.config.styleOverrides["b"] = "2"
        #expect(JSONCoding.encode(JobJSON(Self.job)) == JSONCoding.encode(JobJSON(other)))
    }

    @Test func anEventCarriesTheSnapshotOnlyWhenSet() throws {
        let e = JobEvent(jobID: "j-1", seq: 7, status: .previewReady, stage: .upload, progress: 88,
                         message: "storing \"video\"\n<script>", atUnixMs: 1_795_000_000_123, deadLettered: false)
        #expect(JSONCoding.encode(JobEventJSON(e)) == #"{"atUnixMs":1795000000123,"deadLettered":false,"jobId":"j-1","#
                + #""message":"storing \"video\"\n\u003cscript>","progress":88,"seq":7,"stage":"STAGE_UPLOAD","status":"JOB_STATUS_PREVIEW_READY"}"#)
        let first = JobEventJSON(.snapshot(of: Self.job))
        #expect(first.snapshot == JobJSON(Self.job) && first.seq == 9)
        #expect(JSONCoding.encode(first).contains(#","snapshot":{"artifacts":"#))
    }

    @Test func aPageAHistoryAndAnError() {
        let page = JSONCoding.encode(JobPageJSON(JobPage(jobs: [Job(id: "a"), Job(id: "b")], nextPageToken: "t")))
        #expect(page.hasPrefix(#"{"jobs":[{"#) && page.hasSuffix(#"}],"nextPageToken":"t"}"#), "\(page)")
        #expect(JSONCoding.encode(JobHistoryJSON([])) == #"{"events":[]}"#)
        #expect(JSONCoding.encode(ErrorBodyJSON(code: "NOT_FOUND", message: "job x not found"))
                == #"{"code":"NOT_FOUND","message":"job x not found"}"#)
    }

    @Test func enumsByProtoName() {
        #expect(JobStatus.finalReady.protoName == "JOB_STATUS_FINAL_READY" && Stage.videoGeneration.protoName == "STAGE_VIDEO_GENERATION")
        #expect(Tier.premium.protoName == "TIER_PREMIUM" && Quality.high.protoName == "QUALITY_HIGH")
        #expect(JobType.continuation.protoName == "JOB_TYPE_CONTINUATION")
    }
}
