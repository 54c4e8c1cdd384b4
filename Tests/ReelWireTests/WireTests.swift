import Testing
import ReelCore
@testable import ReelWire

@Suite struct FramingTests {
    @Test func frameHasFlagAndBigEndianLength() {
        let f = GRPCFraming.frame([1, 2, 3])
        #expect(f == [0, 0, 0, 0, 3, 1, 2, 3])
        #expect(GRPCFraming.frame([UInt8](repeating: 7, count: 300))[0..<5] == [0, 0, 0, 1, 44])
    }

    @Test func readerSplitsMessagesAcrossArbitraryChunks() throws {
        var bytes = GRPCFraming.frame([1, 2, 3]) + GRPCFraming.frame([]) + GRPCFraming.frame([9])
        var r = GRPCMessageReader()
        var got: [[UInt8]] = []
        while !bytes.isEmpty {
            let n = min(2, bytes.count)
            got += try r.feed(Array(bytes.prefix(n)))
            bytes.removeFirst(n)
        }
        #expect(got == [[1, 2, 3], [], [9]])
        #expect(!r.hasPartialMessage)
    }

    @Test func oversizedMessageIsRejectedFromThePrefixAlone() {
        var r = GRPCMessageReader(maxMessageSize: 4 * 1024 * 1024)
        // Only the 5-byte prefix arrives: 4 MiB + 1 declared.
        let n = 4 * 1024 * 1024 + 1
        let prefix: [UInt8] = [0, UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)]
        #expect(throws: GRPCMessageReader.Failure.tooLarge(declared: n, limit: 4 * 1024 * 1024)) { try r.feed(prefix) }
    }

    @Test func compressedFlagIsReported() {
        var r = GRPCMessageReader()
        #expect(throws: GRPCMessageReader.Failure.compressedUnsupported) { try r.feed([1, 0, 0, 0, 1, 5]) }
    }

    @Test func truncatedMessageLeavesAPartial() throws {
        var r = GRPCMessageReader()
        let got = try r.feed([0, 0, 0, 0, 10, 1, 2])
        #expect(got.isEmpty)
        #expect(r.hasPartialMessage)
    }
}

@Suite struct PercentEncodingTests {
    @Test func encodesPercentAndNonPrintable() {
        #expect(PercentEncoding.encode("plain text") == "plain text")
        #expect(PercentEncoding.encode("100%") == "100%25")
        #expect(PercentEncoding.encode("a\nb") == "a%0Ab")
        #expect(PercentEncoding.encode("é") == "%C3%A9")
    }

    @Test func decodeInvertsEncodeAndKeepsMalformedEscapes() {
        for s in ["x", "100% sure", "naïve — ünïcode\t", ""] { #expect(PercentEncoding.decode(PercentEncoding.encode(s)) == s) }
        #expect(PercentEncoding.decode("%zz%4") == "%zz%4")
    }
}

@Suite struct TimeoutTests {
    @Test func parsesEveryUnit() {
        #expect(GRPCTimeout.parse("1H") == 3_600_000_000_000)
        #expect(GRPCTimeout.parse("2M") == 120_000_000_000)
        #expect(GRPCTimeout.parse("3S") == 3_000_000_000)
        #expect(GRPCTimeout.parse("250m") == 250_000_000)
        #expect(GRPCTimeout.parse("7u") == 7_000)
        #expect(GRPCTimeout.parse("99999999n") == 99_999_999)
    }

    @Test func rejectsMalformed() {
        for bad in ["", "S", "10", "1x", "123456789S", "-1S", "1.5S"] { #expect(GRPCTimeout.parse(bad) == nil, "\(bad)") }
    }

    @Test func encodeRoundTripsWithinUnitPrecision() {
        for ns: UInt64 in [1, 999, 1_500_000, 3_000_000_000, 7_200_000_000_000] {
            let parsed = GRPCTimeout.parse(GRPCTimeout.encode(nanoseconds: ns))!
            #expect(parsed >= ns)
        }
    }
}

@Suite struct StatusMappingTests {
    @Test func domainErrorsMapToTheirCodes() {
        #expect(GRPCStatus(ReelError.invalid("user_id", "x")).code == .invalidArgument)
        #expect(GRPCStatus(ReelError.notFound(jobID: "j")).code == .notFound)
        #expect(GRPCStatus(ReelError(.failedPrecondition, "x")).code == .failedPrecondition)
        #expect(GRPCStatus(ReelError(.unavailable, "x")).code == .unavailable)
        struct Other: Error {}
        #expect(GRPCStatus.from(Other()) == GRPCStatus(.internal, "internal error"))
    }
}

@Suite struct ProtoCodecTests {
    @Test func jobRoundTripsThroughProtobufC() throws {
        var job = Job(id: "5349c2aa-d5a6-4afc-a5d1-7bae65571a1f", userID: "u", sceneID: "s", type: .continuation,
                      status: .previewReady, stage: .upload, progress: 88, message: "ünïcode ✓", inputText: "text",
                      bibleVersion: 3, config: JobConfig(targetDurationSeconds: 8, quality: .high, model: "kling",
                                                         styleOverrides: ["mood": "noir", "lens": "35mm"]),
                      retryCount: 1, maxRetries: 5, idempotencyKey: "k", tier: .premium, deadLettered: true,
                      workerID: "w", createdAtUnixMs: 1, startedAtUnixMs: 2, completedAtUnixMs: 3, lastEventSeq: 12)
        job.artifacts.expandedScript = "script"
        job.artifacts.providerJobID = "p1"
        job.result = JobResult(segmentID: "seg", videoURL: "v", thumbnailURL: "t", durationSeconds: 5.5, updatedBibleVersion: 4)
        job.error = JobError(code: "E", message: "m", details: "d", stage: .videoGeneration)
        #expect(try ProtoCodec.decodeJob(ProtoCodec.encode(job)) == job)
    }

    @Test func eventWithSnapshotRoundTrips() throws {
        let job = Job(id: "j", userID: "u", sceneID: "s", type: .sceneCreation, lastEventSeq: 4)
        let e = JobEvent.snapshot(of: job)
        let back = try ProtoCodec.decodeJobEvent(ProtoCodec.encode(e))
        #expect(back == e)
        #expect(back.snapshot?.id == "j")
        #expect(back.seq == 4)
    }

    @Test func createRequestRoundTrips() throws {
        let r = CreateJobInput(userID: "u", sceneID: "s", type: .sceneCreation, inputText: "t",
                               config: JobConfig(targetDurationSeconds: 5, quality: .preview, model: "m", styleOverrides: ["a": "b"]),
                               idempotencyKey: "k", tier: .premium, maxRetries: 2)
        #expect(try ProtoCodec.decodeCreateJobRequest(ProtoCodec.encode(r)) == r)
    }

    @Test func garbageDoesNotDecode() {
        #expect(throws: GRPCStatus.self) { try ProtoCodec.decodeCreateJobRequest([0xff, 0xff, 0xff]) }
        #expect(throws: GRPCStatus.self) { try ProtoCodec.decodeJobID([0x0a, 0x10, 0x41]) }  // length runs past the end
    }

    @Test func listPageRoundTrips() throws {
        let page = JobPage(jobs: [Job(id: "a"), Job(id: "b")], nextPageToken: "tok")
        let back = try ProtoCodec.decodeListJobsResponse(ProtoCodec.encode(page))
        #expect(back.jobs.map(\.id) == ["a", "b"])
        #expect(back.nextPageToken == "tok")
    }
}

@Suite struct SceneCodecTests {
    @Test func sceneWithBibleRoundTrips() throws {
        let bible = SceneBible(characters: [.init(name: "Mara", aliases: ["the keeper", "M"], description: "keeper")],
                               locations: [.init(name: "North Light")], style: ["palette": "cold blue", "lens": "35mm"],
                               forbidden: ["dragon", "phone"])
        let scene = Scene(id: "s1", bibleVersion: 3, bible: bible, segmentCount: 2, totalDurationSeconds: 10.5)
        #expect(try ProtoCodec.decodeScene(ProtoCodec.encode(scene)) == scene)
        let put = try ProtoCodec.decodePutSceneBibleRequest(ProtoCodec.encodePutSceneBibleRequest(sceneID: "s1", bible: bible))
        #expect(put.sceneID == "s1" && put.bible == bible)
        #expect(try ProtoCodec.decodeScene(ProtoCodec.encode(Scene(id: "e", bibleVersion: 1, bible: .empty, segmentCount: 0,
                                                                   totalDurationSeconds: 0))).bible == .empty)
    }
}

@Suite struct UTF8Tests {
    @Test func invalidUTF8InAStringFieldIsInvalidArgument() throws {
        // GetJobRequest{id = "a\xffb"}: field 1, length 3.
        #expect(throws: GRPCStatus.self) { try ProtoCodec.decodeJobID([0x0a, 0x03, 0x61, 0xff, 0x62]) }
        #expect(try ProtoCodec.decodeJobID([0x0a, 0x03, 0x61, 0xc3, 0xa9]) == "aé")
    }

    @Test func nulInAStringFieldIsInvalidArgumentAtAnyDepth() throws {
        // GetJobRequest{id = "a\0b"}: protobuf-c would hand over "a".
        #expect(throws: GRPCStatus.self) { try ProtoCodec.decodeJobID([0x0a, 0x03, 0x61, 0x00, 0x62]) }
        // A NUL in a map value nested in CreateJobRequest.config.style_overrides.
        var input = CreateJobInput(userID: "u", sceneID: "s", type: .sceneCreation, inputText: "t")
        // (The encoder takes C strings too, so the NUL goes in after encoding, in place of "~".)
        input.config.styleOverrides = ["lens": "35~mm"]
        var packed = ProtoCodec.encode(input)
        let tilde = try #require(packed.firstIndex(of: UInt8(ascii: "~")))
        packed[tilde] = 0
        #expect(throws: GRPCStatus.self) { try ProtoCodec.decodeCreateJobRequest(packed) }
        input.config.styleOverrides = ["lens": "35mm"]
        #expect(try ProtoCodec.decodeCreateJobRequest(ProtoCodec.encode(input)).config.styleOverrides == ["lens": "35mm"])
    }
}
