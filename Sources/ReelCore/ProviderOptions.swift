import Foundation

/// `--provider` and the per-provider flags that go with a list of providers (DESIGN §8):
/// `--provider kling,runway` names them in order of preference; `--provider-url`,
/// `--provider-concurrency` and `--provider-poll-ms` take `NAME=VALUE,…` (a bare value applies
/// to each provider; for `--provider-url` only when there is one).
public enum ProviderOptions {
    public static let known = ["simulated", "kling", "runway"]

    /// The providers in order of preference. `simulated` stands alone.
    public static func names(_ text: String) throws(ReelError) -> [String] {
        let names = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard !names.isEmpty, !names.contains("") else { throw .invalid("provider", "expected a name or a list like kling,runway") }
        for n in names where !known.contains(n) {
            throw .invalid("provider", "unknown provider '\(n)': use simulated, kling, runway or a list like kling,runway")
        }
        guard Set(names).count == names.count else { throw .invalid("provider", "'\(text)' names a provider twice") }
        guard names.count == 1 || !names.contains("simulated") else {
            throw .invalid("provider", "simulated can't be routed with real providers")
        }
        return names
    }

    /// A per-provider flag's values by provider name (a provider left out: nil, the default).
    /// `bareAppliesToEach`: a value without a name applies to every provider (numbers); else
    /// it is accepted only with one provider (URLs).
    public static func values<T>(_ text: String?, flag: String, providers: [String], bareAppliesToEach: Bool,
                                 parse: (String) -> T?) throws(ReelError) -> [String: T] {
        guard let text, !text.trimmingCharacters(in: .whitespaces).isEmpty else { return [:] }
        var out: [String: T] = [:]
        for raw in text.split(separator: ",") {
            let item = raw.trimmingCharacters(in: .whitespaces)
            let named = providers.first { item.lowercased().hasPrefix($0 + "=") }
            let valueText = named.map { String(item.dropFirst($0.count + 1)) } ?? item
            guard let value = parse(valueText) else { throw .invalid(flag, "'\(valueText)' is not a valid value") }
            if let named {
                out[named] = value
            } else if bareAppliesToEach || providers.count == 1 {
                for p in providers where out[p] == nil { out[p] = value }
            } else {
                throw .invalid(flag, "with several providers, give NAME=VALUE for each (\(providers.map { "\($0)=…" }.joined(separator: ",")))")
            }
        }
        return out
    }
}

/// A real provider's state as this reeld sees it (`GET /v1/providers`, the dashboard): routing
/// passes by one that is parked or whose circuit is open.
public struct ProviderStatus: Sendable, Equatable {
    public var name: String
    /// Its place in `--provider` (0 is preferred).
    public var order: Int
    public var parked: Bool
    public var parkedReason: String
    public var circuitOpen: Bool
    /// False after the provider refused Reel's credentials, until a submission goes through.
    public var healthy: Bool
    /// Live tasks of the account (every reeld on the database) and the cap on them.
    public var liveTasks: Int
    public var concurrency: Int

    public init(name: String, order: Int, parked: Bool, parkedReason: String, circuitOpen: Bool, healthy: Bool,
                liveTasks: Int, concurrency: Int) {
        self.name = name; self.order = order; self.parked = parked; self.parkedReason = parkedReason
        self.circuitOpen = circuitOpen; self.healthy = healthy; self.liveTasks = liveTasks; self.concurrency = concurrency
    }

    /// `up`, `parked`, `failing` (circuit open) or `unhealthy` (credentials refused).
    public var state: String { !healthy ? "unhealthy" : parked ? "parked" : circuitOpen ? "failing" : "up" }
}
