import Foundation
import Logging
import ReelCore
import ReelJSON
import ReelObservability
import ReelPipeline
import ServiceLifecycle

/// Delivers completion webhooks from the durable outbox (DESIGN §8): claims due deliveries
/// (`FOR UPDATE SKIP LOCKED`, so several reeld share the work), POSTs the job's JSON signed with
/// the tenant's secret (else `--webhook-secret`), and records the outcome. Runs on its own task
/// with its own libcurl threads: a slow receiver never holds a worker back.
public struct WebhookDeliverer: Service {
    public struct Settings: Sendable {
        public var retry: WebhookRetryPolicy
        /// `--webhook-secret`: for tenants without their own (all jobs when auth is off). With
        /// none at all, deliveries go out without a `Reel-Signature` header.
        public var defaultSecret: String?
        /// `--webhook-allow-private`: don't refuse loopback, private, link-local addresses.
        public var allowPrivate = false
        /// Fixed DNS answers (`HOST:PORT:ADDRESS`, libcurl's CURLOPT_RESOLVE), for tests.
        public var resolve: [String] = []
        public var pollInterval: Duration = .milliseconds(200)
        public var requestTimeout: Duration = .seconds(10)
        public var batch = 16

        public init(retry: WebhookRetryPolicy) { self.retry = retry }
    }

    let store: any WebhookOutboxStore
    let client: CurlHTTPClient
    let settings: Settings
    let logger: Logger
    /// Hands each job event an outcome was recorded with to this process's watchers (other
    /// reeld get it through the event trigger's NOTIFY, as every event).
    let publish: @Sendable (JobEvent) -> Void

    public init(store: any WebhookOutboxStore, client: CurlHTTPClient, settings: Settings, logger: Logger,
                publish: @escaping @Sendable (JobEvent) -> Void = { _ in }) {
        self.store = store; self.client = client; self.settings = settings; self.logger = logger
        self.publish = publish
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var lastGauge = ContinuousClock.now - .seconds(60)
            while !Task.isCancelled {
                if ContinuousClock.now - lastGauge > .seconds(5) {
                    lastGauge = .now
                    if let n = try? await store.pendingWebhookDeliveries() { ReelMetrics.webhookPending(n) }
                }
                let claimed = await deliverDue()
                if claimed < settings.batch { try? await Task.sleep(for: settings.pollInterval) }
            }
        }
    }

    /// One round: claims what is due and attempts each, concurrently. Answers how many were claimed.
    @discardableResult
    public func deliverDue() async -> Int {
        // A claim lasts past the longest attempt; a reeld that dies mid-attempt leaves it to be retried then.
        let leaseMs = settings.requestTimeout.milliseconds + 30_000
        let attempts: [WebhookAttempt]
        do {
            attempts = try await store.claimWebhookDeliveries(limit: settings.batch, leaseMs: leaseMs)
        } catch {
            logger.warning("webhook outbox unavailable", metadata: ["error": "\(error)"])
            return 0
        }
        await withTaskGroup(of: Void.self) { group in
            for a in attempts { group.addTask { await attempt(a) } }
        }
        return attempts.count
    }

    func attempt(_ a: WebhookAttempt) async {
        let body = a.body ?? JSONCoding.encode(JobJSON(a.job))
        let bytes = Array(body.utf8)
        var request = HTTPRequest(method: "POST", url: a.url, body: bytes, timeout: settings.requestTimeout)
        request.headers["Content-Type"] = "application/json"
        request.headers["User-Agent"] = "Reel-Webhooks/1"
        request.headers["Reel-Delivery-Id"] = a.deliveryID
        if let secret = a.tenantSecret ?? settings.defaultSecret, !secret.isEmpty {
            let t = Int64(Date().timeIntervalSince1970)
            request.headers[WebhookSignature.header] = WebhookSignature.value(secret: secret, timestamp: t, body: bytes)
        }
        request.resolve = settings.resolve
        if !settings.allowPrivate {
            // On the address actually connected to, so a name that resolves (or rebinds) to a
            // private address gets nowhere; an address we can't parse is refused too.
            request.refusePeer = { ip in WebhookAddress.isPrivateIP(ip) ?? true }
        }
        let outcome: WebhookOutcome
        var meta: Logger.Metadata = ["reel.job_id": "\(a.job.id)", "reel.delivery_id": "\(a.deliveryID)",
                                     "reel.attempt": "\(a.attempt)"]
        do {
            let response = try await client.send(request)
            if (200..<300).contains(response.status) {
                outcome = .delivered(status: Int32(response.status))
            } else {
                outcome = retryOrGiveUp(a, status: Int32(response.status), error: "HTTP \(response.status)")
            }
        } catch let e as HTTPClientError where e.code == .refusedAddress {
            outcome = .failed(status: 0, error: e.message)
        } catch let e as HTTPClientError where e.code == .unsupportedURL {
            outcome = .failed(status: 0, error: e.message)
        } catch is CancellationError {
            return  // shutting down: the claim lapses and the attempt is made again
        } catch let e as HTTPClientError {
            // Without the URL (the event shows it once, without its query).
            outcome = retryOrGiveUp(a, status: 0, error: "\(e.code): \(e.message)")
        } catch {
            outcome = retryOrGiveUp(a, status: 0, error: "\(error)")
        }
        let record: WebhookRecord?
        do {
            record = try await store.finishWebhookDelivery(
                id: a.deliveryID, attempt: a.attempt, outcome: outcome, body: body,
                eventMessage: outcome.eventMessage(url: a.url, attempt: a.attempt, deliveryID: a.deliveryID))
        } catch {
            // The claim lapses and the delivery is attempted again: at least once.
            logger.warning("webhook outcome not recorded", metadata: meta.merging(["error": "\(error)"]) { $1 })
            return
        }
        // Counted (and told) once per recorded outcome: a stale attempt, whose claim lapsed and
        // was taken again, changed nothing and counts nothing.
        guard let record else {
            logger.info("webhook attempt outcome not recorded: the delivery was claimed again meanwhile", metadata: meta)
            return
        }
        if let event = record.event { publish(event) }
        switch outcome {
        case .delivered: ReelMetrics.webhookAttempt(outcome: "delivered")
        case .retry(let after, _, let e):
            ReelMetrics.webhookAttempt(outcome: "retry")
            meta["error"] = "\(e)"
            logger.info("webhook delivery failed; retrying in \(after) ms", metadata: meta)
        case .failed(_, let e):
            ReelMetrics.webhookAttempt(outcome: "failed")
            meta["error"] = "\(e)"
            logger.warning("webhook delivery given up", metadata: meta)
        }
    }

    func retryOrGiveUp(_ a: WebhookAttempt, status: Int32, error: String) -> WebhookOutcome {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        guard let after = settings.retry.nextDelayMs(afterAttempt: a.attempt, createdAtUnixMs: a.createdAtUnixMs,
                                                     nowUnixMs: now) else {
            return .failed(status: status, error: "gave up after 24 h: \(error)")
        }
        return .retry(afterMs: after, status: status, error: error)
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (s, atto) = components
        return s * 1000 + atto / 1_000_000_000_000_000
    }
}
