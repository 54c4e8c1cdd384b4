internal import CReelProto
import ReelCore
#if canImport(Glibc)
import Glibc
#endif

/// The mapping between ReelCore values and protobuf-c messages. The only code that
/// touches the generated C structs; callers see bytes and Swift values.
public enum ProtoCodec {
    // MARK: decoding requests (server side)

    public static func decodeCreateJobRequest(_ b: [UInt8]) throws(GRPCStatus) -> CreateJobInput {
        try unpack(b, reel__v1__create_job_request__unpack, reel__v1__create_job_request__free_unpacked) { createInput($0) }
    }

    /// `CreateJobsRequest`: its jobs in order.
    public static func decodeCreateJobsRequest(_ b: [UInt8]) throws(GRPCStatus) -> [CreateJobInput] {
        try unpack(b, reel__v1__create_jobs_request__unpack, reel__v1__create_jobs_request__free_unpacked) { m in
            (0..<m.n_jobs).compactMap { i in m.jobs[i].map { createInput($0.pointee) } }
        }
    }

    private static func createInput(_ m: Reel__V1__CreateJobRequest) -> CreateJobInput {
        var input = CreateJobInput(
            userID: str(m.user_id), sceneID: str(m.scene_id),
            type: JobType(rawValue: raw(m.type.rawValue)) ?? .unspecified,
            inputText: str(m.input_text), config: m.config.map { config($0.pointee) } ?? JobConfig(),
            idempotencyKey: str(m.idempotency_key),
            tier: Tier(rawValue: raw(m.tier.rawValue)) ?? .unspecified, maxRetries: m.max_retries)
        input.runAtUnixMs = m.run_at_unix_ms
        input.deadlineUnixMs = m.deadline_unix_ms
        input.webhookURL = str(m.webhook_url)
        return input
    }

    public static func decodeJobID(_ b: [UInt8]) throws(GRPCStatus) -> String {
        try unpack(b, reel__v1__get_job_request__unpack, reel__v1__get_job_request__free_unpacked) { str($0.id) }
    }

    public static func decodeCancelJobRequest(_ b: [UInt8]) throws(GRPCStatus) -> (id: String, reason: String) {
        try unpack(b, reel__v1__cancel_job_request__unpack, reel__v1__cancel_job_request__free_unpacked) {
            (str($0.id), str($0.reason))
        }
    }

    public static func decodeRetryJobRequest(_ b: [UInt8]) throws(GRPCStatus) -> String {
        try unpack(b, reel__v1__retry_job_request__unpack, reel__v1__retry_job_request__free_unpacked) { str($0.id) }
    }

    public static func decodeWatchJobRequest(_ b: [UInt8]) throws(GRPCStatus) -> (id: String, afterSeq: Int64) {
        try unpack(b, reel__v1__watch_job_request__unpack, reel__v1__watch_job_request__free_unpacked) {
            (str($0.id), $0.after_seq)
        }
    }

    public static func decodeListJobsRequest(_ b: [UInt8]) throws(GRPCStatus) -> ListJobsInput {
        try unpack(b, reel__v1__list_jobs_request__unpack, reel__v1__list_jobs_request__free_unpacked) { m in
            ListJobsInput(
                userID: str(m.user_id), sceneID: str(m.scene_id),
                status: JobStatus(rawValue: raw(m.status.rawValue)) ?? .unspecified,
                deadLetteredOnly: m.dead_lettered_only != 0, pageSize: m.page_size, pageToken: str(m.page_token))
        }
    }

    public static func decodeHealthCheckRequest(_ b: [UInt8]) throws(GRPCStatus) -> String {
        try unpack(b, grpc__health__v1__health_check_request__unpack, grpc__health__v1__health_check_request__free_unpacked) {
            str($0.service)
        }
    }

    // MARK: decoding responses (client side)

    public static func decodeJob(_ b: [UInt8]) throws(GRPCStatus) -> Job {
        try unpack(b, reel__v1__job__unpack, reel__v1__job__free_unpacked) { job($0) }
    }

    public static func decodeJobEvent(_ b: [UInt8]) throws(GRPCStatus) -> JobEvent {
        try unpack(b, reel__v1__job_event__unpack, reel__v1__job_event__free_unpacked) { e in
            var ev = JobEvent(jobID: str(e.job_id), seq: e.seq, status: JobStatus(rawValue: raw(e.status.rawValue)) ?? .unspecified,
                     stage: Stage(rawValue: raw(e.stage.rawValue)) ?? .unspecified, progress: e.progress,
                     message: str(e.message), atUnixMs: e.at_unix_ms, deadLettered: e.dead_lettered != 0,
                     snapshot: e.snapshot.map { job($0.pointee) })
            ev.etaUnixMs = e.eta_unix_ms
            ev.atRisk = e.at_risk != 0
            return ev
        }
    }

    public static func decodeListJobsResponse(_ b: [UInt8]) throws(GRPCStatus) -> JobPage {
        try unpack(b, reel__v1__list_jobs_response__unpack, reel__v1__list_jobs_response__free_unpacked) { m in
            var jobs: [Job] = []
            for i in 0..<m.n_jobs { if let p = m.jobs[i] { jobs.append(job(p.pointee)) } }
            return JobPage(jobs: jobs, nextPageToken: str(m.next_page_token))
        }
    }

    /// The health status number (1 = SERVING).
    public static func decodeHealthCheckResponse(_ b: [UInt8]) throws(GRPCStatus) -> Int32 {
        try unpack(b, grpc__health__v1__health_check_response__unpack, grpc__health__v1__health_check_response__free_unpacked) {
            raw($0.status.rawValue)
        }
    }

    // MARK: encoding

    public static func encode(_ j: Job) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__Job()
        fill(&m, j, arena)
        return pack(&m, reel__v1__job__get_packed_size, reel__v1__job__pack)
    }

    public static func encode(_ e: JobEvent) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__JobEvent()
        reel__v1__job_event__init(&m)
        m.job_id = arena.str(e.jobID)
        m.seq = e.seq
        m.status = .init(rawValue: UInt32(e.status.rawValue))
        m.stage = .init(rawValue: UInt32(e.stage.rawValue))
        m.progress = e.progress
        m.message = arena.str(e.message)
        m.at_unix_ms = e.atUnixMs
        m.dead_lettered = e.deadLettered ? 1 : 0
        m.eta_unix_ms = e.etaUnixMs
        m.at_risk = e.atRisk ? 1 : 0
        if let s = e.snapshot {
            let p = arena.alloc(Reel__V1__Job.self)
            fill(&p.pointee, s, arena)
            m.snapshot = p
        }
        return pack(&m, reel__v1__job_event__get_packed_size, reel__v1__job_event__pack)
    }

    public static func encode(_ page: JobPage) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__ListJobsResponse()
        reel__v1__list_jobs_response__init(&m)
        let ptrs = arena.allocArray(UnsafeMutablePointer<Reel__V1__Job>?.self, count: page.jobs.count)
        for (i, j) in page.jobs.enumerated() {
            let p = arena.alloc(Reel__V1__Job.self)
            fill(&p.pointee, j, arena)
            ptrs[i] = p
        }
        m.n_jobs = page.jobs.count
        m.jobs = page.jobs.isEmpty ? nil : ptrs
        m.next_page_token = arena.str(page.nextPageToken)
        return pack(&m, reel__v1__list_jobs_response__get_packed_size, reel__v1__list_jobs_response__pack)
    }

    /// `CreateJobsResponse`: per item the job, or a gRPC status code and message.
    public static func encode(_ results: [Result<Job, GRPCStatus>]) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__CreateJobsResponse()
        reel__v1__create_jobs_response__init(&m)
        let ptrs = arena.allocArray(UnsafeMutablePointer<Reel__V1__CreateJobResult>?.self, count: results.count)
        for (i, r) in results.enumerated() {
            let p = arena.alloc(Reel__V1__CreateJobResult.self)
            reel__v1__create_job_result__init(p)
            switch r {
            case .success(let j):
                let jp = arena.alloc(Reel__V1__Job.self)
                fill(&jp.pointee, j, arena)
                p.pointee.job = jp
            case .failure(let status):
                p.pointee.code = Int32(status.code.rawValue)
                p.pointee.message = arena.str(status.message)
            }
            ptrs[i] = p
        }
        m.n_results = results.count
        m.results = results.isEmpty ? nil : ptrs
        return pack(&m, reel__v1__create_jobs_response__get_packed_size, reel__v1__create_jobs_response__pack)
    }

    public static func encodeHealthCheckResponse(status: Int32) -> [UInt8] {
        var m = Grpc__Health__V1__HealthCheckResponse()
        grpc__health__v1__health_check_response__init(&m)
        m.status = .init(rawValue: UInt32(status))
        return pack(&m, grpc__health__v1__health_check_response__get_packed_size, grpc__health__v1__health_check_response__pack)
    }

    public static func encodeHealthCheckRequest(service: String) -> [UInt8] {
        let arena = CArena()
        var m = Grpc__Health__V1__HealthCheckRequest()
        grpc__health__v1__health_check_request__init(&m)
        m.service = arena.str(service)
        return pack(&m, grpc__health__v1__health_check_request__get_packed_size, grpc__health__v1__health_check_request__pack)
    }

    public static func encode(_ r: CreateJobInput) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__CreateJobRequest()
        reel__v1__create_job_request__init(&m)
        m.user_id = arena.str(r.userID)
        m.scene_id = arena.str(r.sceneID)
        m.type = .init(rawValue: UInt32(r.type.rawValue))
        m.input_text = arena.str(r.inputText)
        m.config = fillConfig(r.config, arena)
        m.idempotency_key = arena.str(r.idempotencyKey)
        m.tier = .init(rawValue: UInt32(r.tier.rawValue))
        m.max_retries = r.maxRetries
        m.run_at_unix_ms = r.runAtUnixMs
        m.deadline_unix_ms = r.deadlineUnixMs
        m.webhook_url = arena.str(r.webhookURL)
        return pack(&m, reel__v1__create_job_request__get_packed_size, reel__v1__create_job_request__pack)
    }

    public static func encodeGetJobRequest(id: String) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__GetJobRequest()
        reel__v1__get_job_request__init(&m)
        m.id = arena.str(id)
        return pack(&m, reel__v1__get_job_request__get_packed_size, reel__v1__get_job_request__pack)
    }

    public static func encodeCancelJobRequest(id: String, reason: String) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__CancelJobRequest()
        reel__v1__cancel_job_request__init(&m)
        m.id = arena.str(id)
        m.reason = arena.str(reason)
        return pack(&m, reel__v1__cancel_job_request__get_packed_size, reel__v1__cancel_job_request__pack)
    }

    public static func encodeRetryJobRequest(id: String) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__RetryJobRequest()
        reel__v1__retry_job_request__init(&m)
        m.id = arena.str(id)
        return pack(&m, reel__v1__retry_job_request__get_packed_size, reel__v1__retry_job_request__pack)
    }

    public static func encodeWatchJobRequest(id: String, afterSeq: Int64) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__WatchJobRequest()
        reel__v1__watch_job_request__init(&m)
        m.id = arena.str(id)
        m.after_seq = afterSeq
        return pack(&m, reel__v1__watch_job_request__get_packed_size, reel__v1__watch_job_request__pack)
    }

    public static func encode(_ r: ListJobsInput) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__ListJobsRequest()
        reel__v1__list_jobs_request__init(&m)
        m.user_id = arena.str(r.userID)
        m.scene_id = arena.str(r.sceneID)
        m.status = .init(rawValue: UInt32(r.status.rawValue))
        m.dead_lettered_only = r.deadLetteredOnly ? 1 : 0
        m.page_size = r.pageSize
        m.page_token = arena.str(r.pageToken)
        return pack(&m, reel__v1__list_jobs_request__get_packed_size, reel__v1__list_jobs_request__pack)
    }

    // MARK: helpers

    static func unpack<M, T>(
        _ b: [UInt8],
        _ unpackFn: (UnsafeMutablePointer<ProtobufCAllocator>?, Int, UnsafePointer<UInt8>?) -> UnsafeMutablePointer<M>?,
        _ freeFn: (UnsafeMutablePointer<M>?, UnsafeMutablePointer<ProtobufCAllocator>?) -> Void,
        _ read: (M) -> T
    ) throws(GRPCStatus) -> T {
        let msg = b.withUnsafeBufferPointer { unpackFn(nil, $0.count, $0.baseAddress) }
        guard let msg else { throw GRPCStatus(.invalidArgument, "request message does not decode as protobuf") }
        defer { freeFn(msg, nil) }
        let descriptor = UnsafeRawPointer(msg).assumingMemoryBound(to: ProtobufCMessage.self).pointee.descriptor
        if let descriptor, b.withUnsafeBufferPointer({ ProtoStringScan.hasNUL($0, descriptor) }) {
            throw GRPCStatus(.invalidArgument, "a string field contains a NUL character")
        }
        // proto3 strings must be UTF-8; protobuf-c doesn't check, so `str` notes bad ones here.
        let check = UTF8Check()
        let value = Self.$utf8Check.withValue(check) { read(msg.pointee) }
        if check.invalid { throw GRPCStatus(.invalidArgument, "a string field is not valid UTF-8") }
        return value
    }

    /// Set while one message's fields are read (synchronously, on one thread).
    final class UTF8Check: @unchecked Sendable {
        // Safety: created, written and read within one synchronous `unpack` call.
        var invalid = false
    }
    @TaskLocal static var utf8Check: UTF8Check?

    static func pack<M>(
        _ m: inout M, _ sizeFn: (UnsafePointer<M>?) -> Int, _ packFn: (UnsafePointer<M>?, UnsafeMutablePointer<UInt8>?) -> Int
    ) -> [UInt8] {
        withUnsafePointer(to: &m) { p in
            let n = sizeFn(p)
            return [UInt8](unsafeUninitializedCapacity: n) { buf, count in
                count = packFn(p, buf.baseAddress)
            }
        }
    }

    static func str(_ p: UnsafeMutablePointer<CChar>?) -> String {
        guard let p else { return "" }
        if let s = String(validatingCString: p) { return s }
        utf8Check?.invalid = true
        return String(cString: p)
    }

    static func raw(_ v: UInt32) -> Int32 { Int32(truncatingIfNeeded: v) }

    private static func config(_ c: Reel__V1__JobConfig) -> JobConfig {
        var overrides: [String: String] = [:]
        for i in 0..<c.n_style_overrides {
            if let e = c.style_overrides[i] { overrides[str(e.pointee.key)] = str(e.pointee.value) }
        }
        return JobConfig(targetDurationSeconds: c.target_duration_seconds,
                         quality: Quality(rawValue: raw(c.quality.rawValue)) ?? .unspecified,
                         model: str(c.model), styleOverrides: overrides)
    }

    static func artifacts(_ p: Reel__V1__Artifacts) -> Artifacts {
        var a = Artifacts()
        a.expandedScript = str(p.expanded_script); a.validationResult = str(p.validation_result)
        a.previewVideoURL = str(p.preview_video_url); a.finalVideoURL = str(p.final_video_url)
        a.thumbnailURL = str(p.thumbnail_url); a.hlsPlaylistURL = str(p.hls_playlist_url)
        a.providerJobID = str(p.provider_job_id); a.providerRequestID = str(p.provider_request_id)
        return a
    }

    private static func job(_ m: Reel__V1__Job) -> Job {
        let a = m.artifacts.map { artifacts($0.pointee) } ?? Artifacts()
        var j = Job(
            id: str(m.id), userID: str(m.user_id), sceneID: str(m.scene_id),
            type: JobType(rawValue: raw(m.type.rawValue)) ?? .unspecified,
            status: JobStatus(rawValue: raw(m.status.rawValue)) ?? .unspecified,
            stage: Stage(rawValue: raw(m.stage.rawValue)) ?? .unspecified,
            progress: m.progress, message: str(m.message), inputText: str(m.input_text),
            bibleVersion: m.bible_version, config: m.config.map { config($0.pointee) } ?? JobConfig(),
            artifacts: a,
            result: m.result.map {
                JobResult(segmentID: str($0.pointee.segment_id), videoURL: str($0.pointee.video_url),
                          thumbnailURL: str($0.pointee.thumbnail_url), durationSeconds: $0.pointee.duration_seconds,
                          updatedBibleVersion: $0.pointee.updated_bible_version)
            },
            error: m.error.map {
                JobError(code: str($0.pointee.code), message: str($0.pointee.message), details: str($0.pointee.details),
                         stage: Stage(rawValue: raw($0.pointee.stage.rawValue)) ?? .unspecified)
            },
            retryCount: m.retry_count, maxRetries: m.max_retries, idempotencyKey: str(m.idempotency_key),
            tier: Tier(rawValue: raw(m.tier.rawValue)) ?? .unspecified, deadLettered: m.dead_lettered != 0,
            workerID: str(m.worker_id), createdAtUnixMs: m.created_at_unix_ms, startedAtUnixMs: m.started_at_unix_ms,
            completedAtUnixMs: m.completed_at_unix_ms, lastEventSeq: m.last_event_seq)
        j.runAtUnixMs = m.run_at_unix_ms
        j.deadlineUnixMs = m.deadline_unix_ms
        j.webhookURL = str(m.webhook_url)
        j.provider = str(m.provider)
        j.costUnits = m.cost_units
        j.etaUnixMs = m.eta_unix_ms
        return j
    }

    private static func fillConfig(_ c: JobConfig, _ arena: CArena) -> UnsafeMutablePointer<Reel__V1__JobConfig> {
        let p = arena.alloc(Reel__V1__JobConfig.self)
        reel__v1__job_config__init(p)
        p.pointee.target_duration_seconds = c.targetDurationSeconds
        p.pointee.quality = .init(rawValue: UInt32(c.quality.rawValue))
        p.pointee.model = arena.str(c.model)
        if !c.styleOverrides.isEmpty {
            let entries = arena.allocArray(UnsafeMutablePointer<Reel__V1__JobConfig__StyleOverridesEntry>?.self,
                                           count: c.styleOverrides.count)
            for (i, (k, v)) in c.styleOverrides.sorted(by: { $0.key < $1.key }).enumerated() {
                let e = arena.alloc(Reel__V1__JobConfig__StyleOverridesEntry.self)
                reel__v1__job_config__style_overrides_entry__init(e)
                e.pointee.key = arena.str(k)
                e.pointee.value = arena.str(v)
                entries[i] = e
            }
            p.pointee.n_style_overrides = c.styleOverrides.count
            p.pointee.style_overrides = entries
        }
        return p
    }

    static func fill(_ m: inout Reel__V1__Job, _ j: Job, _ arena: CArena) {
        reel__v1__job__init(&m)
        m.id = arena.str(j.id)
        m.user_id = arena.str(j.userID)
        m.scene_id = arena.str(j.sceneID)
        m.type = .init(rawValue: UInt32(j.type.rawValue))
        m.status = .init(rawValue: UInt32(j.status.rawValue))
        m.stage = .init(rawValue: UInt32(j.stage.rawValue))
        m.progress = j.progress
        m.message = arena.str(j.message)
        m.input_text = arena.str(j.inputText)
        m.bible_version = j.bibleVersion
        m.config = fillConfig(j.config, arena)
        let a = arena.alloc(Reel__V1__Artifacts.self)
        reel__v1__artifacts__init(a)
        a.pointee.expanded_script = arena.str(j.artifacts.expandedScript)
        a.pointee.validation_result = arena.str(j.artifacts.validationResult)
        a.pointee.preview_video_url = arena.str(j.artifacts.previewVideoURL)
        a.pointee.final_video_url = arena.str(j.artifacts.finalVideoURL)
        a.pointee.thumbnail_url = arena.str(j.artifacts.thumbnailURL)
        a.pointee.hls_playlist_url = arena.str(j.artifacts.hlsPlaylistURL)
        a.pointee.provider_job_id = arena.str(j.artifacts.providerJobID)
        a.pointee.provider_request_id = arena.str(j.artifacts.providerRequestID)
        m.artifacts = a
        if let r = j.result {
            let p = arena.alloc(Reel__V1__JobResult.self)
            reel__v1__job_result__init(p)
            p.pointee.segment_id = arena.str(r.segmentID)
            p.pointee.video_url = arena.str(r.videoURL)
            p.pointee.thumbnail_url = arena.str(r.thumbnailURL)
            p.pointee.duration_seconds = r.durationSeconds
            p.pointee.updated_bible_version = r.updatedBibleVersion
            m.result = p
        }
        if let e = j.error {
            let p = arena.alloc(Reel__V1__JobError.self)
            reel__v1__job_error__init(p)
            p.pointee.code = arena.str(e.code)
            p.pointee.message = arena.str(e.message)
            p.pointee.details = arena.str(e.details)
            p.pointee.stage = .init(rawValue: UInt32(e.stage.rawValue))
            m.error = p
        }
        m.retry_count = j.retryCount
        m.max_retries = j.maxRetries
        m.idempotency_key = arena.str(j.idempotencyKey)
        m.tier = .init(rawValue: UInt32(j.tier.rawValue))
        m.dead_lettered = j.deadLettered ? 1 : 0
        m.worker_id = arena.str(j.workerID)
        m.created_at_unix_ms = j.createdAtUnixMs
        m.started_at_unix_ms = j.startedAtUnixMs
        m.completed_at_unix_ms = j.completedAtUnixMs
        m.last_event_seq = j.lastEventSeq
        m.run_at_unix_ms = j.runAtUnixMs
        m.deadline_unix_ms = j.deadlineUnixMs
        m.webhook_url = arena.str(j.webhookURL)
        m.provider = arena.str(j.provider)
        m.cost_units = j.costUnits
        m.eta_unix_ms = j.isFinished ? 0 : j.etaUnixMs
    }
}

/// Owns the C strings and structs built for one encode; frees them all when done.
final class CArena {
    private var strings: [UnsafeMutablePointer<CChar>] = []
    private var blocks: [UnsafeMutableRawPointer] = []

    func str(_ s: String) -> UnsafeMutablePointer<CChar> {
        let p = strdup(s)!
        strings.append(p)
        return p
    }

    func alloc<T>(_: T.Type) -> UnsafeMutablePointer<T> {
        let p = UnsafeMutablePointer<T>.allocate(capacity: 1)
        blocks.append(UnsafeMutableRawPointer(p))
        return p
    }

    func allocArray<T>(_: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let p = UnsafeMutablePointer<T>.allocate(capacity: max(count, 1))
        blocks.append(UnsafeMutableRawPointer(p))
        return p
    }

    deinit {
        for s in strings { free(s) }
        for b in blocks { b.deallocate() }
    }
}
