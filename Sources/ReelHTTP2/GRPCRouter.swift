/// Paths (`/package.Service/Method`) to handlers. An unknown path answers UNIMPLEMENTED.
public struct GRPCRouter: Sendable {
    public var routes: [String: GRPCRoute] = [:]
    public init() {}
    public mutating func add(_ path: String, _ route: GRPCRoute) { routes[path] = route }
}
