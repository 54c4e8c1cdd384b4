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
        lastEventSeq: 9).modified {
            $0.runAtUnixMs = 1_795_000_000_100; $0.deadlineUnixMs = 1_795_000_100_000
            $0.webhookURL = "https://hooks.example.com/reel"; $0.provider = "kling"; $0.costUnits = 2.5
            $0.etaUnixMs = 1_795_000_050_000  // terminal: written as 0
        }

    @Test func aJobIsWrittenInProtobufsJSONMapping() throws {
        let text = JSONCoding.encode(JobJSON(Self.job))
        for fragment in [
            #"{"artifacts":{"expandedScript":"","finalVideoUrl":"","hlsPlaylistUrl":"","previewVideoUrl":"","providerJobId":"","providerRequestId":"","thumbnailUrl":"","validationResult":""}"#,
            #""bibleVersion":2,"completedAtUnixMs":1795000009000,"config":{"model":"m","quality":"QUALITY_HIGH","styleOverrides":{"a":"1","b":"2"},"targetDurationSeconds":8},"costUnits":2.5,"createdAtUnixMs":1795000000123,"deadLettered":false,"deadlineUnixMs":1795000100000,"etaUnixMs":0,"#,
            #""id":"0b5c0000-0000-4000-8000-000000000001","idempotencyKey":"idem_1","inputText":"The keeper \u003cclimbs>","lastEventSeq":9,"maxRetries":3,"message":"done","progress":100,"provider":"kling","#,
            #""result":{"durationSeconds":8.5,"segmentId":"seg","thumbnailUrl":"t","updatedBibleVersion":3,"videoUrl":"file:///v.mp4"},"retryCount":1,"runAtUnixMs":1795000000100,"sceneId":"lighthouse","stage":"STAGE_COMPLETED","startedAtUnixMs":1795000000200,"status":"JOB_STATUS_FINAL_READY","tier":"TIER_PREMIUM","type":"JOB_TYPE_SCENE_CREATION","userId":"alice","webhookUrl":"https://hooks.example.com/reel","workerId":"w1"}"#,
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
        #expect(JSONCoding.encode(JobEventJSON(e)) == #"{"atRisk":false,"atUnixMs":1795000000123,"deadLettered":false,"etaUnixMs":0,"jobId":"j-1","#
                + #""message":"storing \"video\"\n\u003cscript>","progress":88,"seq":7,"stage":"STAGE_UPLOAD","status":"JOB_STATUS_PREVIEW_READY"}"#)
        let first = JobEventJSON(.snapshot(of: Self.job))
        #expect(first.snapshot == JobJSON(Self.job) && first.seq == 9)
        #expect(JSONCoding.encode(first).contains(#","snapshot":{"artifacts":"#))
    }

    @Test func anEventOfARunningJobCarriesItsETAAndWhetherItIsAtRisk() {
        var job = Job(id: "j", status: .processing, stage: .videoGeneration)
        job.etaUnixMs = 2_000; job.deadlineUnixMs = 1_500
        let e = JobEvent(jobID: "j", seq: 3, status: .processing, stage: .videoGeneration, progress: 40, message: "",
                         atUnixMs: 1_000).withETA(of: job)
        #expect(e.etaUnixMs == 2_000 && e.atRisk)
        let late = JobEvent(jobID: "j", seq: 4, status: .processing, stage: .videoGeneration, progress: 50, message: "",
                            atUnixMs: 3_000).withETA(of: job)
        #expect(late.etaUnixMs == 3_000, "an ETA is never before the event")
        job.deadlineUnixMs = 0
        #expect(!JobEvent(jobID: "j", seq: 3, status: .processing, stage: .upload, progress: 90, message: "",
                          atUnixMs: 1_000).withETA(of: job).atRisk, "no deadline, no risk")
        job.status = .finalReady
        #expect(JobEvent(jobID: "j", seq: 9, status: .finalReady, stage: .completed, progress: 100, message: "",
                         atUnixMs: 1_000).withETA(of: job).etaUnixMs == 0, "terminal: 0")
        let text = JSONCoding.encode(JobEventJSON(e))
        #expect(text.hasPrefix(#"{"atRisk":true,"atUnixMs":1000,"deadLettered":false,"etaUnixMs":2000,"#), "\(text)")
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

extension Job {
    func modified(_ f: (inout Job) -> Void) -> Job { var j = self; f(&j); return j }
}
