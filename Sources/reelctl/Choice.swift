import ArgumentParser
import ReelCore

/// A domain enum as a command-line value: its lowercase name, with `-` or `_` between words.
struct Choice<E: NamedEnum & Sendable>: ExpressibleByArgument, Sendable {
    let value: E

    init?(argument: String) {
        let name = argument.lowercased().replacingOccurrences(of: "-", with: "_")
        guard name != "unspecified", let value = E(name: name) else { return nil }
        self.value = value
    }

    static var allValueStrings: [String] {
        E.allCases.map(\.name).filter { $0 != "unspecified" }.map { E.self == JobType.self ? $0.replacingOccurrences(of: "_", with: "-") : $0 }
    }
}
