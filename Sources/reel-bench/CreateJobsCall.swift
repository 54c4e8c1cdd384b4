import ReelCore
import ReelWire

/// What one `CreateJobs` call answered: how many items came back with a job (created, or the
/// first job of a reused idempotency key), and the items that failed, in request order.
struct CreateJobsAnswer: Sendable {
    var results = 0
    var jobs = 0
    var failures: [(index: Int, code: Int, message: String)] = []
}

extension JobCalls {
    /// `/reel.v1.JobService/CreateJobs`: up to 1,000 creates in one call (the server refuses more).
    func createJobs(_ inputs: [CreateJobInput]) async throws -> CreateJobsAnswer {
        let response = try await client.unary(path: "/reel.v1.JobService/CreateJobs",
                                              request: CreateJobsWire.request(inputs), timeout: timeout)
        return try CreateJobsWire.answer(response)
    }
}

/// `CreateJobsRequest { repeated CreateJobRequest jobs = 1 }` and `CreateJobsResponse { repeated
/// CreateJobResult results = 1 }` (`CreateJobResult { Job job = 1; int32 code = 2; string message = 3 }`),
/// framed by hand around ProtoCodec's own `CreateJobRequest` encoder. The response's jobs are not
/// decoded (a batch of 1,000 would cost the load generator more than the call): an item counts as
/// a job when its `job` field holds a non-empty `id` (field 1 of `Job`).
enum CreateJobsWire {
    static func request(_ inputs: [CreateJobInput]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(inputs.count * 128)
        for input in inputs {
            let item = ProtoCodec.encode(input)
            out.append(0x0a)  // field 1, length-delimited
            appendVarint(&out, UInt64(item.count))
            out.append(contentsOf: item)
        }
        return out
    }

    static func answer(_ bytes: [UInt8]) throws(GRPCStatus) -> CreateJobsAnswer {
        var answer = CreateJobsAnswer()
        var r = Reader(bytes: bytes, at: 0, end: bytes.count)
        while let (field, wire) = try r.key() {
            guard field == 1, wire == 2 else { try r.skip(wire); continue }
            let (start, end) = try r.lengthDelimited()
            var item = Reader(bytes: bytes, at: start, end: end)
            var hasJob = false
            var code = 0
            var message = ""
            while let (f, w) = try item.key() {
                switch (f, w) {
                case (1, 2):
                    let (js, je) = try item.lengthDelimited()
                    var job = Reader(bytes: bytes, at: js, end: je)
                    while let (jf, jw) = try job.key() {
                        if jf == 1 && jw == 2 {
                            let (s, e) = try job.lengthDelimited()
                            hasJob = e > s
                        } else {
                            try job.skip(jw)
                        }
                    }
                case (2, 0):
                    code = Int(Int32(truncatingIfNeeded: try item.varint()))
                case (3, 2):
                    let (s, e) = try item.lengthDelimited()
                    message = String(decoding: bytes[s..<e], as: UTF8.self)
                default:
                    try item.skip(w)
                }
            }
            if hasJob && code == 0 {
                answer.jobs += 1
            } else {
                answer.failures.append((answer.results, code, message))
            }
            answer.results += 1
        }
        return answer
    }

    private static func appendVarint(_ out: inout [UInt8], _ value: UInt64) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    private struct Reader {
        let bytes: [UInt8]
        var at: Int
        let end: Int

        static let malformed = GRPCStatus(.internal, "CreateJobsResponse does not decode")

        mutating func varint() throws(GRPCStatus) -> UInt64 {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while at < end && shift < 64 {
                let b = bytes[at]
                at += 1
                value |= UInt64(b & 0x7f) << shift
                if b < 0x80 { return value }
                shift += 7
            }
            throw Self.malformed
        }

        /// The next field's number and wire type, or nil at the end.
        mutating func key() throws(GRPCStatus) -> (Int, Int)? {
            if at >= end { return nil }
            let k = try varint()
            return (Int(k >> 3), Int(k & 7))
        }

        mutating func lengthDelimited() throws(GRPCStatus) -> (Int, Int) {
            let n = try varint()
            guard n <= UInt64(end - at) else { throw Self.malformed }
            let start = at
            at += Int(n)
            return (start, at)
        }

        mutating func skip(_ wire: Int) throws(GRPCStatus) {
            switch wire {
            case 0: _ = try varint()
            case 1: guard end - at >= 8 else { throw Self.malformed }; at += 8
            case 2: _ = try lengthDelimited()
            case 5: guard end - at >= 4 else { throw Self.malformed }; at += 4
            default: throw Self.malformed
            }
        }
    }
}
