import CoreMetrics
import ReelCore
import Synchronization

/// Every metric Reel emits, with its labels (seed 002 §9.1, prefixed `reel_`), in one place.
/// Backend-agnostic (swift-metrics); reeld bootstraps Prometheus.
public enum ReelMetrics {
    // MARK: cost

    /// `reel_cost_units_total{tenant,user}`: weighted provider units charged (DESIGN §2 "Cost"),
    /// counted by the reeld that recorded the charge (sum over instances).
    public static func costCharged(tenant: String, user: String, units: Double) {
        guard units > 0, units.isFinite else { return }
        FloatingPointCounter(label: "reel_cost_units_total", dimensions: [("tenant", tenant), ("user", user)]).increment(by: units)
    }

    // MARK: jobs

    /// `reel_jobs_created_total{type,priority}`; priority is the tier (standard|premium).
    public static func jobCreated(type: JobType, tier: Tier) {
        Counter(label: "reel_jobs_created_total", dimensions: [("type", type.name), ("priority", tier.name)]).increment()
    }

    /// A job reached a terminal state (final_ready, failed when dead-lettered, cancelled):
    /// `reel_jobs_completed_total{type,status}` and `reel_job_duration_seconds{stage}`, created to
    /// the end, by the stage it ended in (`completed`, or where it failed or was cancelled).
    public static func jobEnded(_ job: Job, stage: Stage) {
        Counter(label: "reel_jobs_completed_total", dimensions: [("type", job.type.name), ("status", job.status.name)])
            .increment()
        let ms = max(job.completedAtUnixMs - job.createdAtUnixMs, 0)
        Timer(label: "reel_job_duration_seconds", dimensions: [("stage", stage.name)], preferredDisplayUnit: .seconds)
            .recordNanoseconds(ms * 1_000_000)
    }

    /// `reel_jobs_retried_total{stage,error}`: a failed attempt that goes back to the queue.
    public static func jobRetried(stage: Stage, error: String) {
        Counter(label: "reel_jobs_retried_total", dimensions: [("stage", stage.name), ("error", error)]).increment()
    }

    /// `reel_stage_duration_seconds{stage}`.
    public static func stageDuration(_ stage: Stage, _ d: Duration) {
        Timer(label: "reel_stage_duration_seconds", dimensions: [("stage", stage.name)], preferredDisplayUnit: .seconds)
            .recordNanoseconds(d.nanoseconds)
    }

    // MARK: queue

    /// The queue a tier waits in (the seed's two queues).
    public static func queueName(_ tier: Tier) -> String { tier == .premium ? "priority" : "generation" }

    /// `reel_queue_depth{queue}` and `reel_queue_oldest_job_age_seconds{queue}`.
    public static func queue(_ name: String, depth: Int, oldestAgeSeconds: Double) {
        Gauge(label: "reel_queue_depth", dimensions: [("queue", name)]).record(depth)
        Gauge(label: "reel_queue_oldest_job_age_seconds", dimensions: [("queue", name)]).record(oldestAgeSeconds)
    }

    // MARK: providers

    /// `reel_provider_calls_total{provider,call,outcome}`: calls to a video provider by what
    /// came back (the provider's own code, `transport`, `unparseable`).
    public static func providerCall(provider: String, call: String, outcome: String) {
        Counter(label: "reel_provider_calls_total", dimensions: [("provider", provider), ("call", call), ("outcome", outcome)])
            .increment()
    }

    /// `reel_provider_live_tasks{provider}` (all instances, from the database) and
    /// `reel_provider_task_cap{provider}` (`--provider-concurrency`).
    public static func providerTasks(provider: String, live: Int, cap: Int) {
        Gauge(label: "reel_provider_live_tasks", dimensions: [("provider", provider)]).record(live)
        Gauge(label: "reel_provider_task_cap", dimensions: [("provider", provider)]).record(cap)
    }

    /// `reel_provider_parked{provider}`: 1 while the account is parked (out of credit, arrears…).
    public static func providerParked(provider: String, _ parked: Bool) {
        Gauge(label: "reel_provider_parked", dimensions: [("provider", provider)]).record(parked ? 1 : 0)
    }

    /// `reel_provider_circuit_open{provider}`: 1 while routing passes the provider by after
    /// server errors in a row (DESIGN §5 "Routing").
    public static func providerCircuitOpen(provider: String, _ open: Bool) {
        Gauge(label: "reel_provider_circuit_open", dimensions: [("provider", provider)]).record(open ? 1 : 0)
    }

    /// `reel_provider_healthy{provider}`: 0 after the provider refused Reel's credentials.
    public static func providerHealthy(provider: String, _ healthy: Bool) {
        Gauge(label: "reel_provider_healthy", dimensions: [("provider", provider)]).record(healthy ? 1 : 0)
    }

    // MARK: RPC

    /// `reel_grpc_server_in_flight`.
    public static func rpcInFlight(_ n: Int) {
        Gauge(label: "reel_grpc_server_in_flight").record(n)
    }

    /// `reel_grpc_server_handled_total{grpc_method,grpc_code}` and
    /// `reel_grpc_server_handling_seconds{grpc_method}`.
    /// Every call reports here, so the metric handles are made once per (method, code) and kept:
    /// making them per call (a registry lookup and name checks in the backend) cost more than
    /// serving a GetJob from memory.
    public static func rpcHandled(method: String, code: String, duration: Duration) {
        let key = RPCKey(method: method, code: code)
        let handles = rpcHandles.withLock { $0[key] } ?? {
            let made = (Counter(label: "reel_grpc_server_handled_total", dimensions: [("grpc_method", method), ("grpc_code", code)]),
                        Timer(label: "reel_grpc_server_handling_seconds", dimensions: [("grpc_method", method)],
                              preferredDisplayUnit: .seconds))
            rpcHandles.withLock { $0[key] = made }
            return made
        }()
        handles.0.increment()
        handles.1.recordNanoseconds(duration.nanoseconds)
    }

    private struct RPCKey: Hashable {
        let method: String
        let code: String
    }
    private static let rpcHandles = Mutex<[RPCKey: (Counter, Timer)]>([:])

    /// Histogram buckets per metric, for the backend to use.
    public static let durationBuckets: [String: [Duration]] = [
        "reel_job_duration_seconds": [1, 5, 10, 30, 60, 120, 300, 600, 1800].map { .seconds($0) },
        "reel_stage_duration_seconds": [0.1, 0.5, 1, 5, 10, 30, 60, 120, 180, 300, 600].map { .milliseconds(Int64($0 * 1000)) },
        "reel_grpc_server_handling_seconds": [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5]
            .map { .microseconds(Int64($0 * 1_000_000)) },
    ]
}

extension Duration {
    var nanoseconds: Int64 {
        let (s, atto) = components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }
}
