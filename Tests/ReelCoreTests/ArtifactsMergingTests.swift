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
