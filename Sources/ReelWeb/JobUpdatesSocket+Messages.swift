import ReelCore
import ReelJSON

/// Seed 002 §8.2's messages on `/v1/ws`. The envelope is a published interface of its own
/// (lowercase `status`/`stage`); the `job` inside an update is the API's one `JobJSON`.
extension JobUpdatesSocket {
    /// What a client sends: `{"type":"subscribe"|"unsubscribe","jobId":…}` or `{"type":"ping"}`.
    /// Other members are ignored; `type` and `jobId` (or `job_id`) are nil unless strings.
    struct ClientMessage: Decodable {
        var type: String?
        var jobId: String?

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: JSONKey.self)
            type = try? c.decode(String.self, forKey: JSONKey("type"))
            jobId = (try? c.decode(String.self, forKey: JSONKey("jobId"))) ?? (try? c.decode(String.self, forKey: JSONKey("job_id")))
        }
    }

    struct JobUpdate: Encodable {
        var type = "job_update"
        var jobId: String
        var seq: Int64
        var status: String
        var stage: String
        var progress: Int32
        var message: String
        var deadLettered: Bool
        var atUnixMs: Int64
        var terminal: Bool
        /// When the job is expected to be final (0 when terminal), and whether that is past its deadline.
        var etaUnixMs: Int64
        var atRisk: Bool
        /// The whole job, on the first update of a subscription.
        var job: JobJSON?
    }

    struct ErrorMessage: Encodable {
        var type = "error"
        var code: String
        var message: String
        var jobId: String?
    }

    struct Unsubscribed: Encodable {
        var type = "unsubscribed"
        var jobId: String
        var reason: String
    }

    static let pong = JSONCoding.encode(["type": "pong"])

    static func jobUpdate(_ e: JobEvent) -> String {
        JSONCoding.encode(JobUpdate(jobId: e.jobID, seq: e.seq, status: e.status.name, stage: e.stage.name,
                                    progress: e.progress, message: e.message, deadLettered: e.deadLettered,
                                    atUnixMs: e.atUnixMs, terminal: e.endsWatch, etaUnixMs: e.etaUnixMs,
                                    atRisk: e.atRisk, job: e.snapshot.map(JobJSON.init)))
    }

    static func errorMessage(code: String, message: String, jobID: String?) -> String {
        JSONCoding.encode(ErrorMessage(code: code, message: message, jobId: jobID))
    }

    static func unsubscribed(_ jobID: String, reason: String) -> String {
        JSONCoding.encode(Unsubscribed(jobId: jobID, reason: reason))
    }
}
