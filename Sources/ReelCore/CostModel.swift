import Foundation

/// What a job costs, in one unit across providers (DESIGN §2 "Cost"): the provider's charge in
/// its own unit times that provider's weight (`--provider-cost-weight NAME=W,…`, default 1).
public struct CostModel: Sendable, Equatable {
    /// Weight per provider name; a provider not listed weighs 1.
    public var weights: [String: Double]

    public init(weights: [String: Double] = [:]) { self.weights = weights }

    public func weight(_ provider: String) -> Double { weights[provider] ?? 1 }

    /// The simulated provider's charge: 1 unit per started 5 s of `target_duration_seconds`
    /// (0 counts as 5 s), doubled for quality HIGH. Unweighted.
    public static func simulatedCharge(_ config: JobConfig) -> Double {
        let seconds = max(Int(config.targetDurationSeconds), 5)
        let units = Double((seconds + 4) / 5)
        return config.quality == .high ? units * 2 : units
    }

    /// A job's expected cost at `provider` before it runs, weighted. Providers that report their
    /// charge only afterwards (Kling's `final_unit_deduction`) are expected at the same figure
    /// as the simulated one: 1 unit per started 5 s, doubled for HIGH (`pro` mode).
    public func expectedCost(provider: String, config: JobConfig) -> Double {
        Self.simulatedCharge(config) * weight(provider)
    }

    /// `--provider-cost-weight`: `NAME=W,…` with W > 0. Throws a readable message.
    public static func parseWeights(_ text: String) throws(ReelError) -> [String: Double] {
        try namedNumbers(text, flag: "provider-cost-weight", shape: "NAME=W with W > 0") { $0 > 0 }
    }

    /// A flag's `NAME=NUMBER,…` list (finite numbers that `accept` takes), over `defaults`.
    /// Throws a readable message naming the flag and the `shape` it wants.
    public static func namedNumbers(_ text: String, flag: String, shape: String, defaults: [String: Double] = [:],
                                    accept: (Double) -> Bool) throws(ReelError) -> [String: Double] {
        var out = defaults
        for item in text.split(separator: ",") where !item.trimmingCharacters(in: .whitespaces).isEmpty {
            let parts = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, !parts[0].isEmpty, let v = Double(parts[1]), v.isFinite, accept(v) else {
                throw .invalid(flag, "expected \(shape), got '\(item)'")
            }
            out[parts[0]] = v
        }
        return out
    }
}
