import Testing
import ReelCore

@Suite struct ArtifactsMergingTests {
    @Test func nonEmptyFieldsWinAndANewProviderTaskBringsItsOwnRequestID() {
        var stored = Artifacts()
        stored.expandedScript = "script"
        stored.providerJobID = "100"
        stored.providerRequestID = "req-100"
        var update = Artifacts()
        update.finalVideoURL = "file:///a/final.mp4"
        var merged = stored.merging(update)
        #expect(merged.expandedScript == "script" && merged.finalVideoURL == "file:///a/final.mp4")
        #expect(merged.providerJobID == "100" && merged.providerRequestID == "req-100", "empty fields keep what is stored")

        update = Artifacts()
        update.providerJobID = "200"
        merged = stored.merging(update)
        #expect(merged.providerJobID == "200" && merged.providerRequestID == "", "the old task's request id is not kept")
        update.providerRequestID = "req-200"
        merged = stored.merging(update)
        #expect(merged.providerJobID == "200" && merged.providerRequestID == "req-200")
    }
}

@Suite struct ArtifactMediaTypeTests {
    @Test func typesByExtensionAndOctetStreamOtherwise() {
        #expect(ArtifactMediaType.of("job/final.mp4") == "video/mp4")
        #expect(ArtifactMediaType.of("s3://b/p/j/hls/index.M3U8") == "application/vnd.apple.mpegurl")
        #expect(ArtifactMediaType.of("last_frame.png") == "image/png")
        #expect(ArtifactMediaType.of("hls/seg_001.ts") == "video/mp2t")
        #expect(ArtifactMediaType.of("a.d/noextension") == "application/octet-stream")
        #expect(ArtifactMediaType.of("notes.txt") == "application/octet-stream")
    }
}
