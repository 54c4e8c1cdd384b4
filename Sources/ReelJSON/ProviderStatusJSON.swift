import ReelCore

/// `GET /v1/providers`: `{"providers": […]}` in order of preference.
public struct ProvidersJSON: Codable, Sendable, Equatable {
    public var providers: [ProviderStatusJSON]
    public init(_ p: [ProviderStatus]) { providers = p.map(ProviderStatusJSON.init) }
}

public struct ProviderStatusJSON: Codable, Sendable, Equatable {
    public var name: String
    public var order: Int
    /// `up`, `parked`, `failing` (circuit open) or `unhealthy` (credentials refused).
    public var state: String
    public var parked: Bool
    public var parkedReason: String
    public var circuitOpen: Bool
    public var healthy: Bool
    public var liveTasks: Int
    public var concurrency: Int

    public init(_ p: ProviderStatus) {
        name = p.name; order = p.order; state = p.state; parked = p.parked; parkedReason = p.parkedReason
        circuitOpen = p.circuitOpen; healthy = p.healthy; liveTasks = p.liveTasks; concurrency = p.concurrency
    }
}
