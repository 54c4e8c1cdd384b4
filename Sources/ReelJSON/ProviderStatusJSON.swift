import ReelCore

/// `GET /v1/providers`: `{"providers": […]}` in order of preference, each provider's fields
/// in camelCase plus its `state` (`up`, `parked`, `failing` or `unhealthy`).
public struct ProvidersJSON: Encodable, Sendable {
    public var providers: [ProviderStatus]
    public init(_ p: [ProviderStatus]) { providers = p }
}

extension ProviderStatus: Encodable {
    enum CodingKeys: String, CodingKey {
        case name, order, state, parked, parkedReason, circuitOpen, healthy, liveTasks, concurrency
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(order, forKey: .order)
        try c.encode(state, forKey: .state)
        try c.encode(parked, forKey: .parked)
        try c.encode(parkedReason, forKey: .parkedReason)
        try c.encode(circuitOpen, forKey: .circuitOpen)
        try c.encode(healthy, forKey: .healthy)
        try c.encode(liveTasks, forKey: .liveTasks)
        try c.encode(concurrency, forKey: .concurrency)
    }
}
