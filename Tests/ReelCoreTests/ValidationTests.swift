import Testing
@testable import ReelCore

@Suite struct ValidationTests {
    func input(user: String = "u1", scene: String = "s1", type: JobType = .sceneCreation, text: String = "hi",
               key: String = "", retries: Int32 = 0) -> CreateJobInput {
        CreateJobInput(userID: user, sceneID: scene, type: type, inputText: text, idempotencyKey: key, maxRetries: retries)
    }

    func field(_ i: CreateJobInput) -> String? {
        do { _ = try i.validated(); return nil } catch { return error.field }
    }

    @Test func emptyRequiredFieldsAreNamed() {
        #expect(field(input(user: "")) == "user_id")
        #expect(field(input(scene: "")) == "scene_id")
        #expect(field(input(text: "")) == "input_text")
        #expect(field(input(type: .unspecified)) == "type")
    }

    @Test func inputTextLimitCountsCharactersNotBytes() {
        #expect(field(input(text: String(repeating: "é", count: 10_000))) == nil)
        #expect(field(input(text: String(repeating: "a", count: 10_001))) == "input_text")
    }

    @Test func identifiersAreRestricted() {
        #expect(field(input(user: "a:b")) == "user_id")
        #expect(field(input(user: "a b")) == "user_id")
        #expect(field(input(scene: "ü")) == "scene_id")
        #expect(field(input(user: String(repeating: "x", count: 129))) == "user_id")
        #expect(field(input(user: "A-z_0.9")) == nil)
    }

    @Test func defaultsAreFilledIn() throws {
        let j = try input().validated()
        #expect(j.maxRetries == 3)
        #expect(j.tier == .standard)
        #expect(j.idempotencyKey == IdempotencyKey.derive(userID: "u1", sceneID: "s1", inputText: "hi"))
        #expect(try input(key: "mine").validated().idempotencyKey == "mine")
        #expect(field(input(retries: -1)) == "max_retries")
    }

    @Test func derivedKeyIsSeedFormat() {
        // Python: "idem_" + hashlib.sha256(b"u1:s1:hi").hexdigest()[:32]
        let k = IdempotencyKey.derive(userID: "u1", sceneID: "s1", inputText: "hi")
        #expect(k.hasPrefix("idem_"))
        #expect(k.count == 5 + 32)
        #expect(k == "idem_ba6be6d18a2bdf9d6ec5014a8ca09820")
    }

    @Test func sha256KnownVectors() {
        #expect(Hashing.sha256Hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(Hashing.sha256Hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(Hashing.sha256Hex(String(repeating: "a", count: 1000)) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
        #expect(Hashing.sha256Hex("héllo") == "3c48591d8d098a4538f5e013dfcf406e948eac4d3277b10bf614e295d6068179")
    }

    @Test func jobIDMustBeAUUID() throws {
        #expect(throws: ReelError.self) { try Validate.jobID("nope") }
        #expect(throws: ReelError.self) { try Validate.jobID("") }
        #expect(throws: ReelError.self) { try Validate.jobID("5349c2aa-d5a6-4afc-a5d1-7bae65571a1g") }
        #expect(throws: ReelError.self) { try Validate.jobID("5349c2aad5a64afca5d17bae65571a1f0000") }
        #expect(try Validate.jobID("5349C2AA-d5a6-4afc-a5d1-7bae65571a1f") == "5349c2aa-d5a6-4afc-a5d1-7bae65571a1f")
    }

    @Test func listPageSizeBounds() throws {
        #expect(try ListJobsInput().validatedPageSize() == 50)
        #expect(try ListJobsInput(pageSize: 500).validatedPageSize() == 500)
        #expect(throws: ReelError.self) { try ListJobsInput(pageSize: 501).validatedPageSize() }
        #expect(throws: ReelError.self) { try ListJobsInput(pageSize: -1).validatedPageSize() }
    }

    @Test func progressStaysWithinBounds() {
        #expect(throws: ReelError.self) { try Validate.progress(101) }
        #expect(throws: ReelError.self) { try Validate.progress(-1) }
        #expect(throws: Never.self) { try Validate.progress(100) }
    }
}
