import ReelCore
import Testing
@testable import ReelJSON

/// Requests: snake_case or lowerCamelCase names, enums by proto name, short name or number,
/// integers as numbers or numeric strings, null as absent; unknown fields and wrong types refused.
struct JobRequestJSONTests {
    func create(_ text: String) throws -> CreateJobInput {
        try JSONCoding.decode(CreateJobRequestJSON.self, from: Array(text.utf8)).input
    }

    func refusal(_ text: String) -> ReelError? {
        do {
            _ = try create(text)
            return nil
        } catch let e as ReelError {
            return e
        } catch {
            Issue.record("not a ReelError: \(error)")
            return nil
        }
    }

    @Test func camelCaseProtoNames() throws {
        let input = try create(#"""
        {"userId": "u", "sceneId": "s", "type": "JOB_TYPE_SCENE_CREATION", "inputText": "x", "idempotencyKey": "k",
         "tier": "TIER_PREMIUM", "maxRetries": 2, "config": {"targetDurationSeconds": 8, "quality": "QUALITY_HIGH",
         "model": "m", "styleOverrides": {"palette": "teal"}}}
        """#)
        let want = CreateJobInput(userID: "u", sceneID: "s", type: .sceneCreation, inputText: "x",
                                  config: JobConfig(targetDurationSeconds: 8, quality: .high, model: "m", styleOverrides: ["palette": "teal"]),
                                  idempotencyKey: "k", tier: .premium, maxRetries: 2)
        #expect(input == want)
        let snake = try create(#"""
        {"user_id": "u", "scene_id": "s", "type": "scene_creation", "input_text": "x", "idempotency_key": "k",
         "tier": 2, "max_retries": "2", "config": {"target_duration_seconds": "8", "quality": "high",
         "model": "m", "style_overrides": {"palette": "teal"}}}
        """#)
        #expect(snake == want)
    }

    @Test func enumsByProtoNameShortNameOrNumber() throws {
        for spelling in [#""JOB_TYPE_CONTINUATION""#, #""continuation""#, #""CONTINUATION""#, "2", #""2""#] {
            #expect(try create(#"{"type": \#(spelling)}"#).type == .continuation, "\(spelling)")
        }
        #expect(try create(#"{"type": null, "tier": null, "config": null, "userId": null}"#)
                == CreateJobInput(userID: "", sceneID: "", type: .unspecified, inputText: ""), "null is absent")
    }

    @Test func wrongTypesNameTheField() {
        let cases: [(String, String)] = [
            (#"{"userId": 5}"#, "user_id: must be a string, not a number"),
            (#"{"type": true}"#, "type: must be an enum name or number, not a boolean"),
            (#"{"type": "JOB_TYPE_NOPE"}"#, "type: unknown value 'JOB_TYPE_NOPE'"),
            (#"{"type": 99}"#, "type: unknown value 99"),
            (#"{"maxRetries": "lots"}"#, "max_retries: must be a 32-bit integer"),
            (#"{"maxRetries": 1.5}"#, "max_retries: must be a 32-bit integer"),
            (#"{"maxRetries": 99999999999}"#, "max_retries: must be a 32-bit integer"),
            (#"{"maxRetries": [1]}"#, "max_retries: must be an integer, not an array"),
            (#"{"config": []}"#, "config must be a JSON object, not an array"),
            (#"{"config": {"quality": {}}}"#, "config.quality: must be an enum name or number, not an object"),
            (#"{"config": {"styleOverrides": {"a": 1}}}"#, "config.style_overrides: values must be strings"),
            (#"{"config": {"styleOverrides": "a"}}"#, "config.style_overrides: must be an object of strings"),
            (#"[1, 2, 3]"#, "request body must be a JSON object, not an array"),
            (#""just a string""#, "request body must be a JSON object, not a string"),
            ("null", "request body must be a JSON object, not null"),
        ]
        for (text, message) in cases {
            let e = refusal(text)
            #expect(e?.code == .invalidArgument && e?.message == message, "\(text): \(String(describing: e))")
        }
    }

    @Test func unknownFieldsAreRefused() {
        #expect(refusal(#"{"userId": "u", "surprise": 1}"#)?.message == "unknown field 'surprise'")
        #expect(refusal(#"{"config": {"colour": "red"}}"#)?.message == "unknown field 'config.colour'")
        // Both spellings of one field: the camelCase one is read, the other is left over.
        #expect(refusal(#"{"userId": "u", "user_id": "v"}"#)?.message == "unknown field 'user_id'")
    }

    @Test func duplicatesAreMalformed() {
        #expect(throws: JSONSyntax.Violation.self) { _ = try create(#"{"userId": "u", "userId": "v"}"#) }
    }

    @Test func cancelAndRetryBodies() throws {
        #expect(try JSONCoding.decode(CancelJobRequestJSON.self, from: Array(#"{"reason": "late"}"#.utf8)).reason == "late")
        #expect(try JSONCoding.decode(CancelJobRequestJSON.self, from: Array("{}".utf8)).reason == "")
        #expect(throws: ReelError.invalid("reason", "must be a string, not a number")) {
            _ = try JSONCoding.decode(CancelJobRequestJSON.self, from: Array(#"{"reason": 7}"#.utf8))
        }
        _ = try JSONCoding.decode(RetryJobRequestJSON.self, from: Array("{}".utf8))
        #expect(throws: ReelError.self) { _ = try JSONCoding.decode(RetryJobRequestJSON.self, from: Array(#"{"x": 1}"#.utf8)) }
    }
}
