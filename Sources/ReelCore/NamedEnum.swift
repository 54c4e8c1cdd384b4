/// Lookup by stored name, shared by the domain enums (JobType, Tier, Quality, JobStatus, Stage).
public protocol NamedEnum: CaseIterable, RawRepresentable {
    var name: String { get }
}

extension NamedEnum {
    public init?(name: String) {
        guard let match = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = match
    }
}
