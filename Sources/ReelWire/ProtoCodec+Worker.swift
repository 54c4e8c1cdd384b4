internal import CReelProto
import ReelCore
#if canImport(Glibc)
import Glibc
#endif

/// `reel.v1.WorkerService` messages.
extension ProtoCodec {
    public static func decodeConnectRequest(_ b: [UInt8]) throws(GRPCStatus) -> WorkerHello {
        try unpack(b, reel__v1__connect_request__unpack, reel__v1__connect_request__free_unpacked) { m in
            var types = Set<JobType>()
            for i in 0..<m.n_job_types { types.insert(JobType(rawValue: raw(m.job_types[i].rawValue)) ?? .unspecified) }
            return WorkerHello(workerID: str(m.worker_id), jobTypes: types,
                               providers: (0..<m.n_providers).map { str(m.providers[$0]) }, slots: m.slots)
        }
    }

    public static func decodeHeartbeatRequest(_ b: [UInt8]) throws(GRPCStatus) -> (workerID: String, jobIDs: [String]) {
        try unpack(b, reel__v1__heartbeat_request__unpack, reel__v1__heartbeat_request__free_unpacked) { m in
            (str(m.worker_id), (0..<m.n_job_ids).map { str(m.job_ids[$0]) })
        }
    }

    public static func decodeReportProgressRequest(_ b: [UInt8]) throws(GRPCStatus) -> WorkerProgress {
        try unpack(b, reel__v1__report_progress_request__unpack, reel__v1__report_progress_request__free_unpacked) { m in
            WorkerProgress(workerID: str(m.worker_id), jobID: str(m.job_id),
                           status: JobStatus(rawValue: raw(m.status.rawValue)) ?? .unspecified,
                           stage: Stage(rawValue: raw(m.stage.rawValue)) ?? .unspecified,
                           progress: m.progress, message: str(m.message), artifacts: m.artifacts.map { artifacts($0.pointee) })
        }
    }

    public static func decodeCompleteJobRequest(_ b: [UInt8]) throws(GRPCStatus) -> WorkerCompletion {
        try unpack(b, reel__v1__complete_job_request__unpack, reel__v1__complete_job_request__free_unpacked) { m in
            WorkerCompletion(workerID: str(m.worker_id), jobID: str(m.job_id), videoURL: str(m.video_url),
                             thumbnailURL: str(m.thumbnail_url), durationSeconds: m.duration_seconds)
        }
    }

    public static func decodeFailJobRequest(_ b: [UInt8]) throws(GRPCStatus) -> WorkerFailure {
        try unpack(b, reel__v1__fail_job_request__unpack, reel__v1__fail_job_request__free_unpacked) { m in
            WorkerFailure(workerID: str(m.worker_id), jobID: str(m.job_id), code: str(m.code), message: str(m.message),
                          retryable: m.retryable != 0)
        }
    }

    public static func encodeHeartbeatResponse(renewed: [String], lost: [String]) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__HeartbeatResponse()
        reel__v1__heartbeat_response__init(&m)
        m.n_renewed_job_ids = renewed.count
        m.renewed_job_ids = arena.strArray(renewed)
        m.n_lost_job_ids = lost.count
        m.lost_job_ids = arena.strArray(lost)
        return pack(&m, reel__v1__heartbeat_response__get_packed_size, reel__v1__heartbeat_response__pack)
    }

    public static func encodeWorkerAssignment(_ job: Job, leaseExpiresAtUnixMs: Int64, leaseSeconds: Int32) -> [UInt8] {
        let arena = CArena()
        var m = Reel__V1__WorkerAssignment()
        reel__v1__worker_assignment__init(&m)
        let j = arena.alloc(Reel__V1__Job.self)
        fill(&j.pointee, job, arena)
        m.job = j
        m.lease_expires_at_unix_ms = leaseExpiresAtUnixMs
        m.lease_seconds = leaseSeconds
        return pack(&m, reel__v1__worker_assignment__get_packed_size, reel__v1__worker_assignment__pack)
    }
}

extension CArena {
    func strArray(_ xs: [String]) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? {
        guard !xs.isEmpty else { return nil }
        let p = allocArray(UnsafeMutablePointer<CChar>?.self, count: xs.count)
        for (i, x) in xs.enumerated() { p[i] = str(x) }
        return p
    }
}
