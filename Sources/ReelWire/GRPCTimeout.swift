/// `grpc-timeout`: 1–8 ASCII digits and a unit (H, M, S, m, u, n).
public enum GRPCTimeout {
    /// The timeout in nanoseconds, or nil when the header is malformed.
    public static func parse(_ value: String) -> UInt64? {
        let u = Array(value.utf8)
        guard u.count >= 2, u.count <= 9 else { return nil }
        var n: UInt64 = 0
        for c in u.dropLast() {
            guard c >= 48 && c <= 57 else { return nil }
            n = n * 10 + UInt64(c - 48)
        }
        let perUnit: UInt64
        switch u.last! {
        case UInt8(ascii: "H"): perUnit = 3_600_000_000_000
        case UInt8(ascii: "M"): perUnit = 60_000_000_000
        case UInt8(ascii: "S"): perUnit = 1_000_000_000
        case UInt8(ascii: "m"): perUnit = 1_000_000
        case UInt8(ascii: "u"): perUnit = 1_000
        case UInt8(ascii: "n"): perUnit = 1
        default: return nil
        }
        let (r, overflow) = n.multipliedReportingOverflow(by: perUnit)
        return overflow ? UInt64.max : r
    }

    /// Encodes a timeout for a request header, in the coarsest unit that keeps 8 digits.
    public static func encode(nanoseconds: UInt64) -> String {
        let units: [(UInt64, Character)] = [(1, "n"), (1_000, "u"), (1_000_000, "m"), (1_000_000_000, "S"), (60_000_000_000, "M"), (3_600_000_000_000, "H")]
        for (per, unit) in units {
            let v = (nanoseconds + per - 1) / per
            if v <= 99_999_999 { return "\(v)\(unit)" }
        }
        return "99999999H"
    }
}
