import ArgumentParser
import Foundation
import Logging
import ReelCore
import ReelHTTP2
import ReelPipeline
import ReelScheduler
import ReelService
import ReelStore
import ReelWeb
import ReelWebhooks
import ReelObservability
import ServiceLifecycle
import Metrics
import Prometheus

/// reeld: the Reel server (DESIGN §8). Flags also read REEL_* environment variables.
@main
struct Reeld: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reeld", abstract: "Reel: a durable job service for AI video generation (gRPC over HTTP/2).")

    @Option(help: "Address for gRPC (h2c). Env: REEL_LISTEN.")
    var listen: String = env("REEL_LISTEN") ?? "127.0.0.1:50051"

    @Option(name: .customLong("database-url"), help: "PostgreSQL URL. Env: REEL_DATABASE_URL.")
    var databaseURLFlag: String?
    /// `--database-url`, else the environment.
    var databaseURL: String? { databaseURLFlag ?? env("REEL_DATABASE_URL") }

    @Option(name: .customLong("metrics-listen"), help: "Address for Prometheus /metrics over HTTP/1.1. Env: REEL_METRICS_LISTEN.")
    var metricsListenFlag: String?
    /// `--metrics-listen`, else the environment.
    var metricsListen: String? { metricsListenFlag ?? env("REEL_METRICS_LISTEN") }

    @Option(help: "Address for HTTP/1.1: the JSON API, live updates (SSE, WebSocket), the dashboard at / and /metrics; empty disables it. Env: REEL_HTTP_LISTEN.")
    var httpListen: String = rawEnv("REEL_HTTP_LISTEN") ?? "127.0.0.1:8080"

    @Option(help: "Video provider: simulated | kling (keys from KLING_ACCESS_KEY and KLING_SECRET_KEY) | runway (key from RUNWAYML_API_SECRET), or a list in order of preference, e.g. kling,runway (routing with fallback). Env: REEL_PROVIDER.")
    var provider: String = env("REEL_PROVIDER") ?? "simulated"

    @Option(name: .customLong("provider-url"), help: "Provider API base URL (kling: \(KlingProvider.defaultURL), runway: \(RunwayProvider.defaultURL)); with a list, NAME=URL,…. Env: REEL_PROVIDER_URL.")
    var providerURLFlag: String?
    /// `--provider-url`, else the environment.
    var providerURL: String? { providerURLFlag ?? env("REEL_PROVIDER_URL") }

    @Option(help: "Milliseconds between polls of a provider task (the fallback for callbacks); N for each, or NAME=N,…. Env: REEL_PROVIDER_POLL_MS.")
    var providerPollMs: String = env("REEL_PROVIDER_POLL_MS") ?? "5000"

    @Option(help: "Live provider tasks at most, for the account, across every reeld on the database; N for each, or NAME=N,…. Env: REEL_PROVIDER_CONCURRENCY.")
    var providerConcurrency: String = env("REEL_PROVIDER_CONCURRENCY") ?? "4"

    @Option(help: "While a provider is parked (out of credit…), milliseconds between probe submissions. Env: REEL_PROVIDER_PROBE_MS.")
    var providerProbeMs: Int = Int(env("REEL_PROVIDER_PROBE_MS") ?? "") ?? 30_000

    @Option(name: .customLong("public-url"), help: "Base URL at which --http-listen is reachable from outside; providers get callback URLs under it. Env: REEL_PUBLIC_URL.")
    var publicURLFlag: String?
    /// `--public-url`, else the environment.
    var publicURL: String? { publicURLFlag ?? env("REEL_PUBLIC_URL") }

    @Option(help: "Where post-processed videos, thumbnails and HLS renditions go (real providers). Env: REEL_ARTIFACTS_DIR.")
    var artifactsDir: String = env("REEL_ARTIFACTS_DIR") ?? ".data/artifacts"

    @Option(name: .customLong("artifacts-base-url"), help: "URL prefix under which --artifacts-dir is served (default: file:// URLs). Env: REEL_ARTIFACTS_BASE_URL.")
    var artifactsBaseURLFlag: String?
    /// `--artifacts-base-url`, else the environment.
    var artifactsBaseURL: String? { artifactsBaseURLFlag ?? env("REEL_ARTIFACTS_BASE_URL") }

    @Option(name: .customLong("artifacts-url"), help: "Publish artifacts to an S3-compatible bucket, s3://BUCKET[/PREFIX] (keys from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY); default: --artifacts-dir itself. Env: REEL_ARTIFACTS_URL.")
    var artifactsURLFlag: String?
    /// `--artifacts-url`, else the environment.
    var artifactsURL: String? { artifactsURLFlag ?? env("REEL_ARTIFACTS_URL") }

    @Option(name: .customLong("s3-endpoint"), help: "S3 endpoint, path-style (default: https://s3.REGION.amazonaws.com). Env: REEL_S3_ENDPOINT.")
    var s3EndpointFlag: String?
    /// `--s3-endpoint`, else the environment.
    var s3Endpoint: String? { s3EndpointFlag ?? env("REEL_S3_ENDPOINT") }

    @Option(name: .customLong("s3-region"), help: "S3 region for request signing (default us-east-1). Env: REEL_S3_REGION, AWS_REGION.")
    var s3RegionFlag: String?
    /// `--s3-region`, else the environment.
    var s3Region: String { s3RegionFlag ?? env("REEL_S3_REGION") ?? env("AWS_REGION") ?? "us-east-1" }

    @Option(help: "Seconds any stage but video generation may take before STAGE_TIMEOUT. Env: REEL_STAGE_TIMEOUT_SECONDS.")
    var stageTimeoutSeconds: Double = Double(env("REEL_STAGE_TIMEOUT_SECONDS") ?? "") ?? 120

    @Option(help: "Seconds video generation may take before STAGE_TIMEOUT. Env: REEL_VIDEO_TIMEOUT_SECONDS.")
    var videoTimeoutSeconds: Double = Double(env("REEL_VIDEO_TIMEOUT_SECONDS") ?? "") ?? 900

    @Option(help: "In-process worker slots. Env: REEL_WORKERS.")
    var workers: Int = Int(env("REEL_WORKERS") ?? "") ?? 8

    @Option(name: .customLong("sim-stage-ms"), help: "Milliseconds each pipeline step waits (0: no-op jobs). Default 500 with the simulated provider, 0 with kling (where a value slows steps down for tests). Env: REEL_SIM_STAGE_MS.")
    var simStageMsFlag: Int?
    /// `--sim-stage-ms`, else the environment.
    var simStageMs: Int? { simStageMsFlag ?? Int(env("REEL_SIM_STAGE_MS") ?? "") }

    @Option(help: "Lease length in seconds; a job whose worker stops renewing is requeued after it. Env: REEL_LEASE_SECONDS.")
    var leaseSeconds: Double = Double(env("REEL_LEASE_SECONDS") ?? "") ?? 30

    @Option(help: "Base retry backoff in milliseconds (doubles per attempt). Env: REEL_RETRY_BASE_MS.")
    var retryBaseMs: Int = Int(env("REEL_RETRY_BASE_MS") ?? "") ?? 5000

    @Option(help: "Event-loop threads (default: one per core). Env: REEL_LOOPS.")
    var loops: Int = Int(env("REEL_LOOPS") ?? "") ?? ProcessInfo.processInfo.activeProcessorCount

    @Option(help: "Database connections. Env: REEL_DB_POOL.")
    var dbPool: Int = Int(env("REEL_DB_POOL") ?? "") ?? 16

    @Option(help: "Close connections idle (no open stream) this many seconds. Env: REEL_IDLE_TIMEOUT.")
    var idleTimeout: Int = Int(env("REEL_IDLE_TIMEOUT") ?? "") ?? 300

    @Option(help: "Seconds between keep-alive comments on an otherwise quiet SSE stream. Env: REEL_SSE_KEEPALIVE_SECONDS.")
    var sseKeepaliveSeconds: Double = Double(env("REEL_SSE_KEEPALIVE_SECONDS") ?? "") ?? 15

    @Option(help: "Log level: trace|debug|info|notice|warning|error. Env: REEL_LOG_LEVEL.")
    var logLevel: String = env("REEL_LOG_LEVEL") ?? "info"

    @Option(name: .customLong("tls-cert"), help: "PEM certificate (chain) to serve gRPC over TLS with ALPN h2 instead of h2c. Env: REEL_TLS_CERT.")
    var tlsCertFlag: String?
    /// `--tls-cert`, else the environment.
    var tlsCert: String? { tlsCertFlag ?? env("REEL_TLS_CERT") }

    @Option(name: .customLong("tls-key"), help: "PEM private key for --tls-cert. Env: REEL_TLS_KEY.")
    var tlsKeyFlag: String?
    /// `--tls-key`, else the environment.
    var tlsKey: String? { tlsKeyFlag ?? env("REEL_TLS_KEY") }

    @Flag(help: "Require API keys (`authorization: Bearer …`) and scope every call to the key's tenant. Env: REEL_AUTH=1.")
    var auth: Bool = ["1", "true", "yes"].contains(env("REEL_AUTH") ?? "")

    @Option(name: .customLong("admin-key"), help: "An admin API key to install at start (tenant \"admin\"), to create the others with `reelctl keys`. Env: REEL_ADMIN_KEY.")
    var adminKeyFlag: String?
    /// `--admin-key`, else the environment.
    var adminKey: String? { adminKeyFlag ?? env("REEL_ADMIN_KEY") }

    @Option(help: "Requests per second per tenant when its key sets none (0: unlimited). Env: REEL_RATE_LIMIT.")
    var rateLimit: Int32 = Int32(env("REEL_RATE_LIMIT") ?? "") ?? 0

    @Option(name: .customLong("webhook-secret"), help: "Completion-webhook signing secret for tenants without one of their own (all jobs when --auth is off). Env: REEL_WEBHOOK_SECRET.")
    var webhookSecretFlag: String?
    /// `--webhook-secret`, else the environment.
    var webhookSecret: String? { webhookSecretFlag ?? env("REEL_WEBHOOK_SECRET") }

    @Flag(name: .customLong("webhook-allow-private"), help: "Allow webhook URLs at loopback, private, link-local and unspecified addresses (tests, single-host setups). Env: REEL_WEBHOOK_ALLOW_PRIVATE=1.")
    var webhookAllowPrivateFlag: Bool = false
    var webhookAllowPrivate: Bool { webhookAllowPrivateFlag || ["1", "true", "yes"].contains(env("REEL_WEBHOOK_ALLOW_PRIVATE") ?? "") }

    @Option(help: "Days after which a terminal job's extra events, artifacts and unreferenced failed or cancelled jobs are removed (0: never). Env: REEL_RETENTION_DAYS.")
    var retentionDays: Int = Int(env("REEL_RETENTION_DAYS") ?? "") ?? 30

    @Option(name: .customLong("runway-credits-per-second"), help: "MODEL=C,… : Runway's credits per second of output per model, over its published prices (gen4_turbo=5,gen4.5=12). Env: REEL_RUNWAY_CREDITS_PER_SECOND.")
    var runwayCreditsFlag: String?

    @Option(name: .customLong("provider-cost-weight"), help: "NAME=W,… : a provider's charge is multiplied by W in cost_units, budgets and fair share (default 1). Env: REEL_PROVIDER_COST_WEIGHT.")
    var providerCostWeightFlag: String?
    /// `--provider-cost-weight`, else the environment.
    var providerCostWeight: String? { providerCostWeightFlag ?? env("REEL_PROVIDER_COST_WEIGHT") }

    @Option(name: .customLong("script-agent"), help: "Who writes the shot script: template (offline) | openai (an OpenAI-compatible chat-completions server; key from OPENAI_API_KEY when set). Env: REEL_SCRIPT_AGENT.")
    var scriptAgentFlag: String?
    var scriptAgentKind: String { scriptAgentFlag ?? env("REEL_SCRIPT_AGENT") ?? "template" }

    @Option(name: .customLong("script-agent-url"), help: "The agent's API base including /v1 (default \(ChatCompletionsClient.Settings.defaultURL)). Env: REEL_SCRIPT_AGENT_URL.")
    var scriptAgentURLFlag: String?
    var scriptAgentURL: String { scriptAgentURLFlag ?? env("REEL_SCRIPT_AGENT_URL") ?? ChatCompletionsClient.Settings.defaultURL }

    @Option(name: .customLong("script-agent-model"), help: "The agent's model (default \(ChatCompletionsClient.Settings.defaultModel)). Env: REEL_SCRIPT_AGENT_MODEL.")
    var scriptAgentModelFlag: String?
    var scriptAgentModel: String { scriptAgentModelFlag ?? env("REEL_SCRIPT_AGENT_MODEL") ?? ChatCompletionsClient.Settings.defaultModel }

    @Option(name: .customLong("script-agent-fallback"), help: "When the script agent fails: none (the attempt fails with SCRIPT_AGENT) | template (the template writes the script). Env: REEL_SCRIPT_AGENT_FALLBACK.")
    var scriptAgentFallbackFlag: String?
    var scriptAgentFallback: String { scriptAgentFallbackFlag ?? env("REEL_SCRIPT_AGENT_FALLBACK") ?? "none" }

    @Option(name: .customLong("script-agent-timeout-ms"), help: "One agent request's time limit in milliseconds (default 60000). Env: REEL_SCRIPT_AGENT_TIMEOUT_MS.")
    var scriptAgentTimeoutMsFlag: Int?
    var scriptAgentTimeoutMs: Int { scriptAgentTimeoutMsFlag ?? Int(env("REEL_SCRIPT_AGENT_TIMEOUT_MS") ?? "") ?? 60_000 }

    @Option(name: .customLong("continuity-agent"), help: "After the rule-based continuity check: none | openai (the script agent's server and model asked whether the script contradicts the bible). Env: REEL_CONTINUITY_AGENT.")
    var continuityAgentFlag: String?
    var continuityAgentKind: String { continuityAgentFlag ?? env("REEL_CONTINUITY_AGENT") ?? "none" }

    @Option(help: "Log format: text | json (one object per line). Env: REEL_LOG_FORMAT.")
    var logFormat: String = env("REEL_LOG_FORMAT") ?? "text"

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)  // a peer that went away is an error on the write, not a signal
        guard let level = Logger.Level(rawValue: logLevel) else { fail("unknown --log-level '\(logLevel)'") }
        switch logFormat {
        case "json": LoggingSystem.bootstrap { label in var h = JSONLogHandler(label: label); h.logLevel = level; return h }
        case "text": LoggingSystem.bootstrap { label in var h = StreamLogHandler.standardError(label: label); h.logLevel = level; return h }
        default: fail("unknown --log-format '\(logFormat)': use text or json")
        }
        let logger = { var l = Logger(label: "reeld"); l.logLevel = level; return l }()
        var metricsAddress: (String, Int)? = nil
        let registry = PrometheusCollectorRegistry()
        if let metricsListen, !metricsListen.isEmpty {
            metricsAddress = try parseAddress(metricsListen)
            var factory = PrometheusMetricsFactory(registry: registry)
            factory.durationHistogramBuckets = ReelMetrics.durationBuckets
            MetricsSystem.bootstrap(factory)
        }

        guard let databaseURL, !databaseURL.isEmpty else {
            fail("no database: pass --database-url or set REEL_DATABASE_URL")
        }
        let providerNames: [String]
        do { providerNames = try ProviderOptions.names(provider) } catch { fail("--\(error.message)") }
        let simulated = providerNames == ["simulated"]
        var realProviders: [any VideoProvider] = []
        var postProcessor: PostProcessor? = nil
        var pipelineConfig = Pipeline.Config(
            stageDelay: .milliseconds(simStageMs ?? (simulated ? 500 : 0)), retry: RetryPolicy(baseMs: Int64(retryBaseMs)),
            stageTimeout: .milliseconds(Int64(stageTimeoutSeconds * 1000)),
            videoTimeout: .milliseconds(Int64(videoTimeoutSeconds * 1000)))
        // Its threads start only for a provider or a bucket that needs them.
        lazy var client = CurlHTTPClient()
        var artifactStore: (any ArtifactStore)? = nil
        if let artifactsURL, !artifactsURL.isEmpty {
            guard let access = env("AWS_ACCESS_KEY_ID"), let secret = env("AWS_SECRET_ACCESS_KEY") else {
                fail("--artifacts-url needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
            }
            do {
                artifactStore = try S3ArtifactStore(artifactsURL: artifactsURL,
                                                    endpoint: s3Endpoint ?? S3ArtifactStore.awsEndpoint(region: s3Region),
                                                    region: s3Region, accessKey: access, secretKey: secret,
                                                    client: client, publicBaseURL: artifactsBaseURL)
            } catch {
                fail("--artifacts-url: \(error)")
            }
        }
        // Per-provider settings (DESIGN §8): a bare value applies to each (a URL only to one).
        let positive: (String) -> Int? = { Int($0.trimmingCharacters(in: .whitespaces)).flatMap { $0 >= 1 ? $0 : nil } }
        let urls: [String: String], concurrencies: [String: Int], pollMs: [String: Int]
        do {
            urls = try ProviderOptions.values(providerURL, flag: "provider-url", providers: providerNames, bareAppliesToEach: false) {
                $0.hasPrefix("http://") || $0.hasPrefix("https://") ? $0 : nil
            }
            concurrencies = try ProviderOptions.values(providerConcurrency, flag: "provider-concurrency", providers: providerNames,
                                                       bareAppliesToEach: true, parse: positive)
            pollMs = try ProviderOptions.values(providerPollMs, flag: "provider-poll-ms", providers: providerNames,
                                                bareAppliesToEach: true, parse: positive)
        } catch {
            fail("--\(error.message) (numbers must be at least 1, URLs http(s))")
        }
        if !simulated {
            if let publicURL, !(publicURL.hasPrefix("http://") || publicURL.hasPrefix("https://")) {
                fail("--public-url must be an http(s) URL")
            }
            let post = PostProcessor(artifactsDir: artifactsDir, publicBaseURL: artifactsBaseURL, store: artifactStore,
                                     client: client, logger: logger)
            for name in providerNames {
                switch name {
                case "kling":
                    guard let access = env("KLING_ACCESS_KEY"), let secret = env("KLING_SECRET_KEY") else {
                        fail("--provider kling needs KLING_ACCESS_KEY and KLING_SECRET_KEY in the environment")
                    }
                    realProviders.append(KlingProvider(baseURL: urls[name] ?? KlingProvider.defaultURL, accessKey: access,
                                                       secretKey: secret, client: client, logger: logger))
                case "runway":
                    guard let key = env("RUNWAYML_API_SECRET"), !key.isEmpty else {
                        fail("--provider runway needs RUNWAYML_API_SECRET in the environment")
                    }
                    let credits: [String: Double]
                    do { credits = try RunwayProvider.parseCredits(runwayCreditsFlag ?? env("REEL_RUNWAY_CREDITS_PER_SECOND") ?? "") } catch {
                        fail("--\(error.message)")
                    }
                    // A new scene with an image-only model (gen4_turbo) starts from a title card of its first shot.
                    realProviders.append(RunwayProvider(baseURL: urls[name] ?? RunwayProvider.defaultURL, apiKey: key, client: client,
                                                        logger: logger, creditsPerSecond: credits,
                                                        stillMaker: { text in try await post.titleCard(text: text) }))
                default:
                    fail("--provider \(name) is not available in this build")
                }
            }
            postProcessor = post
            pipelineConfig.pollInterval = .milliseconds(Int64(pollMs[providerNames[0]] ?? 5000))
            pipelineConfig.parkWhileGenerating = true
        }
        let videoProvider: any VideoProvider = realProviders.first ?? SimulatedProvider()
        // The prompt fits every provider it may be routed to.
        let agents = scriptAgents(client: client, promptLimit: providerNames.contains("runway") ? RunwayProvider.maxPromptCharacters
                                  : providerNames.contains("kling") ? KlingProvider.maxPromptCharacters : 2500)
        let (host, port) = try parseAddress(listen)
        let httpAddress: (String, Int)? = httpListen.isEmpty ? nil : try parseAddress(httpListen)
        let dashboard: Dashboard?
        do throws(ReelError) { dashboard = httpAddress == nil ? nil : try Dashboard.load() } catch { fail(error.message) }
        if getenv("PGCONNECT_TIMEOUT") == nil { setenv("PGCONNECT_TIMEOUT", "5", 1) }

        let store: PostgresJobStore
        do {
            store = try PostgresJobStore(url: databaseURL, poolSize: max(2, dbPool), logger: logger)
            let applied = try await store.migrate()
            if !applied.isEmpty { logger.info("applied migrations \(applied)") }
        } catch {
            fail("cannot use database \(redact(databaseURL)): \(error)")
        }

        // ETAs (DESIGN §2): stage times start from the configured ones and follow what this
        // process measures; the hub puts one on every event as it is published.
        let stageTimes = StageTimes()
        let etaDefaults: ETAEstimator.Defaults
        if let sim = videoProvider as? SimulatedProvider {
            etaDefaults = .simulated(stepDelay: pipelineConfig.stageDelay, polls: sim.pollsToFinish)
        } else {
            // Upload: a download, thumbnail and HLS renditions with ffmpeg; 10 s until measured.
            etaDefaults = ETAEstimator.Defaults(stepDelay: pipelineConfig.stageDelay,
                                                generation: { [videoProvider] in videoProvider.expectedGenerationTime(for: $0) },
                                                upload: .seconds(10))
        }
        // A job runs on one provider at a time: the accounts' slots together bound how many run.
        let accountSlots = realProviders.reduce(0) { $0 + (concurrencies[$1.name] ?? 4) }
        let estimator = ETAEstimator(provider: videoProvider.name, defaults: etaDefaults, slots: max(1, workers),
                                     providerSlots: realProviders.isEmpty ? nil : accountSlots, times: stageTimes)
        let eta = JobETA(estimator: estimator, store: store)
        let hub = JobEventHub(annotate: { eta.event($0) })
        // Events written by any reeld on this database (this one included) reach our watchers;
        // duplicates of the ones published here directly are skipped by seq.
        let health = HealthState()
        let workerID = "reeld-\(ProcessInfo.processInfo.hostName)-\(getpid())-\(UInt32.random(in: 0..<UInt32.max) % 100_000)"
        var costModel = CostModel()
        do { costModel.weights = try CostModel.parseWeights(providerCostWeight ?? "") } catch { fail("--\(error.message)") }
        pipelineConfig.costModel = costModel
        let remotes: [ProviderRuntime] = realProviders.map { p in
            var settings = ProviderRuntime.Settings(
                concurrency: concurrencies[p.name] ?? 4, pollInterval: .milliseconds(Int64(pollMs[p.name] ?? 5000)),
                publicURL: publicURL, probeInterval: .milliseconds(Int64(max(providerProbeMs, 1))),
                backoffBase: .milliseconds(Int64(max(retryBaseMs, 1))))
            settings.costWeight = costModel.weight(p.name)
            return ProviderRuntime(provider: p, tasks: store, settings: settings, times: stageTimes, logger: logger)
        }
        if !remotes.isEmpty && publicURL != nil && httpAddress == nil {
            fail("--public-url needs --http-listen: callbacks arrive there")
        }
        var configured = Pipeline(
            store: store, provider: videoProvider, remotes: remotes, postProcessor: postProcessor, config: pipelineConfig,
            workerID: workerID, logger: logger, estimator: estimator, publish: { hub.publish($0) })
        (configured.scriptAgent, configured.continuityAgent) = agents
        let pipeline = configured
        let scheduler = Scheduler(
            store: store, hub: hub,
            config: .init(workers: workers, workerID: workerID, leaseMs: Int64(leaseSeconds * 1000)),
            logger: logger, runner: { job, slot in await pipeline.run(job, slot: slot) })
        let failures = FailureRecorder(store: store, retry: pipelineConfig.retry, logger: logger, publish: { hub.publish($0) })
        if let adminKey, !adminKey.isEmpty {
            guard adminKey.count >= 16 else { fail("--admin-key must be at least 16 characters") }
            _ = try await store.createKey(tenantID: "admin", secret: adminKey, admin: true, rateLimitPerSecond: 0)
        }
        if auth && (adminKey ?? "").isEmpty {
            let existing = try await store.listKeys(tenantID: nil)
            if existing.isEmpty { logger.warning("--auth is on but no API key exists: pass --admin-key to install one") }
        }
        let authenticator = Authenticator(keys: auth ? store : nil, defaultRateLimit: rateLimit)
        var createPolicy = CreatePolicy()
        createPolicy.allowPrivateWebhooks = webhookAllowPrivate
        // Expected at the preferred provider's weight (routing may run it elsewhere).
        let providerName = videoProvider.name
        createPolicy.expectedCost = { [costModel, videoProvider] new in
            // A provider that prices a config itself (Runway's credits per second) is expected at that price.
            if let charge = videoProvider.charge(for: new.config) { return charge * costModel.weight(providerName) }
            return costModel.expectedCost(provider: providerName, config: new.config)
        }
        createPolicy.expectedRunMs = { estimator.expectedRunMs(of: $0) }
        var service = JobService(store: store, hub: hub, scheduler: scheduler, failures: failures, auth: authenticator,
                                 createPolicy: createPolicy, eta: eta, logger: logger)
        service.budgets = store

        var config = GRPCServerConfig(host: host, port: port, loops: max(1, loops))
        config.idleTimeout = .seconds(idleTimeout)
        switch (tlsCert, tlsKey) {
        case (nil, nil): break
        case (let cert?, let key?):
            do { config.tls = try TLSContext(certificateFile: cert, keyFile: key) } catch { fail("\(error)") }
        default: fail("--tls-cert and --tls-key go together")
        }
        let server: GRPCServer
        do {
            server = try GRPCServer(config: config, router: service.routes(health: health), logger: logger,
                                    onCallFinished: { path, status, duration in
                                        ReelMetrics.rpcHandled(method: path, code: status.code.name, duration: duration)
                                    })
        } catch {
            fail("\(error)")
        }
        // Other reeld on this database NOTIFY job events once this one says it is alive, and this
        // one LISTENs before it takes calls. A moment's wait lets the others' writes that began
        // before they knew of us commit: a watcher of ours reads those from storage.
        let listener = EventListener(url: databaseURL, logger: logger) { event in
            hub.publish(event)
            // A job queued (created, retried, requeued) by another process may be ours to run.
            if event.status == .queued { scheduler.notifyWork() }
        }
        listener.start()
        let alive = (try? await store.touchInstance(id: workerID, slots: workers)) ?? 1
        if alive > 1 { try? await Task.sleep(for: .seconds(1)) }
        server.start()
        await scheduler.start()  // --workers 0: a pure coordinator for external workers
        health.set(HealthState.serving)
        logger.info("reeld listening on \(host):\(server.port) (workers \(workers), provider \(provider), loops \(config.loops), auth \(auth ? "on" : "off"), \(config.tls == nil ? "h2c" : "TLS"))")

        // Every long-running part is a service of one group, which turns SIGTERM/SIGINT into a
        // graceful shutdown of each in reverse order: the HTTP listeners first (open SSE and
        // WebSocket clients are cut after 2 s), then the loops, then the gRPC server (GOAWAY,
        // calls finish, streams end UNAVAILABLE), the scheduler (leases handed back), and LISTEN.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: StopOnShutdown { listener.stop() }, serviceName: "event-listener"),
            .init(service: StopOnShutdown { await scheduler.shutdown() }, serviceName: "scheduler"),
            .init(service: StopOnShutdown {
                logger.info("shutting down: GOAWAY, handing back in-flight work")
                health.set(HealthState.notServing)
                await server.shutdown(grace: .seconds(10))
            }, serviceName: "grpc-server"),
            // Health follows the database; gauges follow the queue and the open calls.
            .init(service: Every(.seconds(1)) { tick in
                if tick % 5 == 0 {
                    _ = try? await store.touchInstance(id: workerID, slots: workers + (await scheduler.externalSlots))
                }
                let up = await store.ping()
                health.set(up ? HealthState.serving : HealthState.notServing)
                if up, let stats = try? await store.queueStats() {
                    for tier in [Tier.standard, .premium] {
                        let s = stats.first { $0.tier == tier }
                        ReelMetrics.queue(ReelMetrics.queueName(tier), depth: s?.depth ?? 0, oldestAgeSeconds: s?.oldestWaitSeconds ?? 0)
                    }
                }
                ReelMetrics.rpcInFlight(server.inFlightCalls)
            }, serviceName: "monitor"),
        ]
        // Completion webhooks (DESIGN §8): delivered from the outbox on threads of their own.
        var hookSettings = WebhookDeliverer.Settings(retry: WebhookRetryPolicy(baseMs: Int64(max(retryBaseMs, 1))))
        hookSettings.defaultSecret = webhookSecret
        hookSettings.allowPrivate = webhookAllowPrivate
        // Tests only: fixed DNS answers (libcurl's HOST:PORT:ADDRESS, comma-separated).
        hookSettings.resolve = (env("REEL_TEST_WEBHOOK_RESOLVE") ?? "").split(separator: ",").map(String.init)
        if (webhookSecret ?? "").isEmpty {
            logger.notice("no --webhook-secret: completion webhooks of jobs whose tenant has no secret of its own go out unsigned")
        }
        let hookClient = CurlHTTPClient(threads: 2, connectTimeout: .seconds(5), totalTimeout: hookSettings.requestTimeout,
                                        maxResponseBytes: 64 << 10)
        services.append(.init(service: WebhookDeliverer(store: store, client: hookClient, settings: hookSettings, logger: logger,
                                                        publish: { hub.publish($0) }),
                              serviceName: "webhook-deliverer"))
        // Retention: a pass at start, then every ten minutes, each going on from where the last got.
        guard retentionDays >= 0 else { fail("--retention-days must be 0 (never) or more") }
        if retentionDays > 0 {
            let local = LocalArtifactStore(directory: artifactsDir, publicBaseURL: artifactsBaseURL)
            var sweeper = RetentionSweeper(store: store, artifacts: artifactStore ?? local,
                                           workingCopies: artifactStore == nil ? nil : local, days: retentionDays, logger: logger)
            // A pruned job's events are renumbered: its cached copy (old last_event_seq) goes.
            let operations = service.operations
            sweeper.onPruned = { operations.forget(jobIDs: $0) }
            let pass = sweeper
            services.append(.init(service: Every(.seconds(600)) { _ in await pass.sweep() }, serviceName: "retention"))
        }
        for remote in remotes {
            // Tasks nobody follows any more (cancelled jobs: Kling has no cancel) keep their slot
            // until the provider ends them; this notices when it does.
            services.append(.init(service: Every(remote.sweepInterval) { _ in await remote.sweep() },
                                  serviceName: "provider-sweeper-\(remote.provider.name)"))
        }
        if let (hhost, hport) = httpAddress {
            var api = JobAPI(operations: service.operations, auth: authenticator, logger: logger)
            api.artifactsDir = artifactsDir
            if let artifactStore {
                api.artifactReader = { url in
                    guard let (jobID, file) = artifactStore.locate(url) else { return nil }
                    return (jobID, { try await artifactStore.read(jobID: jobID, file: file) })
                }
            }
            api.webhookDeliveries = { jobID in try await store.webhookDeliveries(jobID: jobID) }
            api.sseKeepAlive = .milliseconds(Int64(max(sseKeepaliveSeconds, 0.05) * 1000))
            if !remotes.isEmpty {
                api.providers = {
                    var all: [ProviderStatus] = []
                    for (i, r) in remotes.enumerated() { all.append(await r.status(order: i)) }
                    return all
                }
                api.providerCallback = { name, token, body in
                    guard let remote = remotes.first(where: { $0.provider.name == name }) else { return (404, "unknown provider \(name)") }
                    let answer = await remote.receiveCallback(token: token, body: body)
                    return (answer.status, answer.message)
                }
            }
            let web = WebServer(host: hhost, port: hport, registry: registry, logger: logger, api: api,
                                dashboard: dashboard, healthy: { health.status == HealthState.serving },
                                onRunning: { port in logger.info("dashboard on http://\(hhost):\(port)/ (JSON API under /v1)") })
            services.append(.init(service: LoggingFailure(web, what: "HTTP listener on \(hhost):\(hport)", logger: logger),
                                  successTerminationBehavior: .ignore, serviceName: "http"))
        }
        // The HTTP listener serves /metrics too; a second server on the same address would not bind.
        if let (mhost, mport) = metricsAddress, !(httpAddress.map { $0 == (mhost, mport) } ?? false) {
            let web = WebServer(host: mhost, port: mport, registry: registry, logger: logger,
                                healthy: { health.status == HealthState.serving },
                                onRunning: { port in logger.info("metrics on http://\(mhost):\(port)/metrics") })
            services.append(.init(service: LoggingFailure(web, what: "metrics endpoint", logger: logger),
                                  successTerminationBehavior: .ignore, serviceName: "metrics"))
        }
        var groupConfig = ServiceGroupConfiguration(services: services, logger: logger)
        groupConfig.gracefulShutdownSignals = [.sigterm, .sigint]
        try await ServiceGroup(configuration: groupConfig).run()
        await store.removeInstance(id: workerID)
        store.close()
        logger.info("stopped")
    }
}

private func env(_ name: String) -> String? {
    guard let v = getenv(name) else { return nil }
    let s = String(cString: v)
    return s.isEmpty ? nil : s
}

/// Like `env`, but an empty value counts (it turns the HTTP listener off).
private func rawEnv(_ name: String) -> String? {
    getenv(name).map { String(cString: $0) }
}

private func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("reeld: \(message)\n".utf8))
    exit(1)
}

private func redact(_ url: String) -> String {
    // postgresql://user:secret@host → postgresql://user:***@host
    guard let at = url.firstIndex(of: "@"), let scheme = url.range(of: "://"),
          let colon = url[scheme.upperBound..<at].firstIndex(of: ":") else { return url }
    return String(url[..<url.index(after: colon)]) + "***" + String(url[at...])
}

func parseAddress(_ s: String) throws -> (String, Int) {
    guard let i = s.lastIndex(of: ":"), let port = Int(s[s.index(after: i)...]), (0...65535).contains(port) else {
        throw ValidationError("address '\(s)' must be HOST:PORT")
    }
    var host = String(s[..<i])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    return (host.isEmpty ? "0.0.0.0" : host, port)
}
