import Foundation
import HummingbirdWebSocket
import Logging
import ReelCore
import ReelJSON
import ReelService
import ReelWire
import Synchronization

/// `/v1/ws`: the client sends `{"type":"subscribe","jobId":…}` / `{"type":"unsubscribe",…}`;
/// the server pushes `{"type":"job_update",…}` (seed 002 §8.2) per change and ends a job's
/// subscription after its terminal update with `{"type":"unsubscribed","reason":"terminal"}`.
/// Each subscription is a `JobOperations.watch`, as WatchJob and SSE are.
///
/// Memory per connection is bounded whatever the client does: updates are coalesced per job
/// (a slow reader skips to the latest state), control replies are capped, subscriptions are
/// capped, and a write that waits longer than `socketWriteTimeout` drops the connection.
struct JobUpdatesSocket: Sendable {
    let api: JobAPI
    static let maxMessageBytes = 16 * 1024
    static let maxPendingReplies = 256

    func handle(_ inbound: WebSocketInboundStream, _ outbound: WebSocketOutboundWriter,
                _ context: WebSocketRouterContext<BasicWebSocketRequestContext>) async throws {
        let caller: Caller
        do {
            caller = try await api.caller(context.request, allowQueryToken: true)
        } catch {
            let s = GRPCStatus.from(error)
            try? await outbound.write(.text(Self.errorMessage(code: s.code.name, message: s.message, jobID: nil)))
            try? await outbound.close(.policyViolation, reason: s.message)
            return
        }
        let outbox = Outbox(maxReplies: Self.maxPendingReplies)
        let subscriptions = Subscriptions()
        let timeout = api.socketWriteTimeout
        let logger = context.logger
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    try await Self.drain(outbox, to: outbound, timeout: timeout)
                } catch {
                    logger.notice("WebSocket client dropped", metadata: ["error": "\(error)"])
                }
            }
            group.addTask {
                do {
                    for try await message in inbound.messages(maxSize: Self.maxMessageBytes) {
                        if !self.receive(message, caller: caller, outbox: outbox, subscriptions: subscriptions) { break }
                    }
                } catch {
                    _ = outbox.reply(Self.errorMessage(code: "INVALID_ARGUMENT", message: "bad WebSocket message: \(error)", jobID: nil))
                }
                outbox.finish()
            }
            // Either side ending (client gone, slow consumer, too many replies) ends both.
            await group.next()
            subscriptions.cancelAll()
            outbox.finish()
            group.cancelAll()
        }
        subscriptions.cancelAll()
    }

    /// Handles one client message; false ends the connection.
    func receive(_ message: WebSocketMessage, caller: Caller, outbox: Outbox, subscriptions: Subscriptions) -> Bool {
        func reply(_ code: String, _ text: String, _ jobID: String? = nil) -> Bool {
            outbox.reply(Self.errorMessage(code: code, message: text, jobID: jobID))
        }
        guard case .text(let text) = message else {
            return reply("INVALID_ARGUMENT", "binary messages are not supported: send JSON text")
        }
        guard let request = try? JSONCoding.decode(ClientMessage.self, from: Array(text.utf8)) else {
            return reply("INVALID_ARGUMENT", "message must be a JSON object like {\"type\":\"subscribe\",\"jobId\":\"…\"}")
        }
        guard let type = request.type else { return reply("INVALID_ARGUMENT", "type: must be a string") }
        if type == "ping" {
            return outbox.reply(Self.pong)
        }
        guard type == "subscribe" || type == "unsubscribe" else {
            return reply("INVALID_ARGUMENT", "type: must be subscribe, unsubscribe or ping")
        }
        guard let rawID = request.jobId else {
            return reply("INVALID_ARGUMENT", "jobId: must be a string")
        }
        let id: String
        do { id = try Validate.jobID(rawID, field: "jobId") } catch {
            return reply("INVALID_ARGUMENT", error.message, String(rawID.prefix(64)))
        }
        if type == "unsubscribe" {
            if subscriptions.cancel(id) {
                outbox.update(jobID: id, message: nil, end: "requested")
            }
            return true
        }
        guard subscriptions.count < api.maxSubscriptionsPerSocket || subscriptions.contains(id) else {
            return reply("RESOURCE_EXHAUSTED", "at most \(api.maxSubscriptionsPerSocket) subscriptions per connection", id)
        }
        let operations = api.operations
        subscriptions.start(id) { done in
            var after: Int64 = 0
            do {
                while !Task.isCancelled {
                    let end = try await operations.watch(id: id, afterSeq: after, caller: caller) { event in
                        after = event.seq
                        outbox.update(jobID: id, message: Self.jobUpdate(event), end: event.endsWatch ? "terminal" : nil)
                    }
                    // Fell behind the hub: resume from storage after the last seq sent.
                    guard case .fellBehind = end else { break }
                }
            } catch {
                let s = GRPCStatus.from(error)
                _ = outbox.reply(Self.errorMessage(code: s.code.name, message: s.message, jobID: id))
            }
            done()
        }
        return true
    }

    static func drain(_ outbox: Outbox, to outbound: WebSocketOutboundWriter, timeout: Duration) async throws {
        for await _ in outbox.wakeups {
            while let batch = outbox.take() {
                for text in batch {
                    try await withWriteTimeout(timeout) { try await outbound.write(.text(text)) }
                }
            }
            if outbox.isFinished { return }
        }
    }

    struct SlowConsumer: Error, CustomStringConvertible {
        let timeout: Duration
        var description: String { "client did not read for \(timeout): connection dropped" }
    }

    static func withWriteTimeout(_ timeout: Duration, _ write: @escaping @Sendable () async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask { try await write(); return true }
            group.addTask { try await Task.sleep(for: timeout); return false }
            let wrote = try await group.next() ?? false
            group.cancelAll()
            if !wrote { throw SlowConsumer(timeout: timeout) }
        }
    }
}

/// What a connection has yet to send: the latest update per job (older ones are skipped),
/// then the job's end marker, and a capped queue of replies.
final class Outbox: Sendable {
    private struct Pending {
        var update: String?
        var end: String?
    }
    private struct State {
        var replies: [String] = []
        var pending: [String: Pending] = [:]
        var order: [String] = []
        var finished = false
    }
    private let state = Mutex(State())
    private let wake: AsyncStream<Void>.Continuation
    let wakeups: AsyncStream<Void>
    let maxReplies: Int

    init(maxReplies: Int) {
        self.maxReplies = maxReplies
        (wakeups, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Queues a reply; false (and the connection ends) when the client lets too many pile up.
    func reply(_ text: String) -> Bool {
        let ok = state.withLock { s in
            guard !s.finished, s.replies.count < maxReplies else { return false }
            s.replies.append(text)
            return true
        }
        if ok { wake.yield() } else { finish() }
        return ok
    }

    /// Replaces the job's pending update with `message`; `end` (sent after it) is sticky.
    func update(jobID: String, message: String?, end: String?) {
        state.withLock { s in
            guard !s.finished else { return }
            if s.pending[jobID] == nil { s.order.append(jobID) }
            var p = s.pending[jobID] ?? Pending()
            if let message { p.update = message }
            if let end { p.end = end }
            s.pending[jobID] = p
        }
        wake.yield()
    }

    /// Everything pending, in order; nil when nothing is.
    func take() -> [String]? {
        state.withLock { s in
            var out = s.replies
            s.replies.removeAll()
            for id in s.order {
                guard let p = s.pending[id] else { continue }
                if let u = p.update { out.append(u) }
                if let e = p.end { out.append(JobUpdatesSocket.unsubscribed(id, reason: e)) }
            }
            s.pending.removeAll()
            s.order.removeAll()
            return out.isEmpty ? nil : out
        }
    }

    var isFinished: Bool { state.withLock { $0.finished } }

    func finish() {
        state.withLock { $0.finished = true }
        wake.yield()
        wake.finish()
    }
}

/// A connection's live subscriptions, one watching task per job.
final class Subscriptions: Sendable {
    private struct State {
        var tasks: [String: (token: Int, task: Task<Void, Never>)] = [:]
        var nextToken = 0
        var closed = false
    }
    private let state = Mutex(State())

    var count: Int { state.withLock { $0.tasks.count } }
    func contains(_ id: String) -> Bool { state.withLock { $0.tasks[id] != nil } }

    /// Starts (or restarts) the job's subscription; `body` calls `done` when it ends by itself.
    func start(_ id: String, _ body: @escaping @Sendable (_ done: @Sendable () -> Void) async -> Void) {
        state.withLock { s in
            guard !s.closed else { return }
            s.nextToken += 1
            let token = s.nextToken
            s.tasks[id]?.task.cancel()
            // The task holds `self` until it ends; `cancelAll` ends every task with the connection.
            let task = Task { await body { self.remove(id, token: token) } }
            s.tasks[id] = (token, task)
        }
    }

    private func remove(_ id: String, token: Int) {
        state.withLock { s in
            if s.tasks[id]?.token == token { s.tasks[id] = nil }
        }
    }

    /// True when there was a subscription to cancel.
    func cancel(_ id: String) -> Bool {
        state.withLock { s in
            guard let t = s.tasks.removeValue(forKey: id) else { return false }
            t.task.cancel()
            return true
        }
    }

    func cancelAll() {
        state.withLock { s in
            s.closed = true
            for t in s.tasks.values { t.task.cancel() }
            s.tasks.removeAll()
        }
    }
}
