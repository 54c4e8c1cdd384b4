import ReelCore

/// Any member name, for objects whose names are read by hand.
public struct JSONKey: CodingKey, Hashable, Sendable {
    public let stringValue: String
    public var intValue: Int? { nil }
    public init(_ name: String) { stringValue = name }
    public init(stringValue: String) { self.stringValue = stringValue }
    public init?(intValue: Int) { nil }
}

/// What kind of JSON value a decoder holds ("a string", "an array"…), for error messages.
struct JSONKind: Decodable {
    let name: String

    init(from decoder: any Decoder) {
        name = Self.name(decoder)
    }

    static func name(_ decoder: any Decoder) -> String {
        if let c = try? decoder.singleValueContainer() {
            if c.decodeNil() { return "null" }
            if (try? c.decode(Bool.self)) != nil { return "a boolean" }
            if (try? c.decode(String.self)) != nil { return "a string" }
        }
        if (try? decoder.unkeyedContainer()) != nil { return "an array" }
        if (try? decoder.container(keyedBy: JSONKey.self)) != nil { return "an object" }
        return "a number"
    }
}

/// A request object's members, read by their proto name (snake_case) or JSON name
/// (lowerCamelCase) and checked one by one; whatever is left over is an unknown field.
/// Integers are also read from numeric strings (protobuf's JSON mapping allows both).
struct JSONFields {
    private let container: KeyedDecodingContainer<JSONKey>
    private var unread: Set<String>
    /// Prepended to field names in errors (`config.`).
    let prefix: String

    init(_ decoder: any Decoder, what: String, prefix: String = "") throws {
        guard let c = try? decoder.container(keyedBy: JSONKey.self) else {
            throw ReelError(.invalidArgument, "\(what) must be a JSON object, not \(JSONKind.name(decoder))")
        }
        container = c
        unread = Set(c.allKeys.map(\.stringValue))
        self.prefix = prefix
    }

    /// The member's key, camelCase first; nil when absent or null.
    private mutating func take(_ snake: String, _ camel: String) -> JSONKey? {
        let key: JSONKey
        if unread.remove(camel) != nil { key = JSONKey(camel) } else if unread.remove(snake) != nil { key = JSONKey(snake) } else { return nil }
        return (try? container.decodeNil(forKey: key)) == true ? nil : key
    }

    private func kind(_ key: JSONKey) -> String {
        (try? container.decode(JSONKind.self, forKey: key).name) ?? "a value"
    }

    mutating func string(_ snake: String, _ camel: String) throws(ReelError) -> String? {
        guard let key = take(snake, camel) else { return nil }
        if let s = try? container.decode(String.self, forKey: key) { return s }
        throw .invalid(prefix + snake, "must be a string, not \(kind(key))")
    }

    mutating func int32(_ snake: String, _ camel: String) throws(ReelError) -> Int32? {
        guard let key = take(snake, camel) else { return nil }
        if let n = try? container.decode(Int32.self, forKey: key) { return n }
        if let s = try? container.decode(String.self, forKey: key), let n = Int32(s) { return n }
        let k = kind(key)
        if k == "a number" || k == "a string" { throw .invalid(prefix + snake, "must be a 32-bit integer") }
        throw .invalid(prefix + snake, "must be an integer, not \(k)")
    }

    /// int64: a JSON number or, as protobuf's JSON mapping writes it, a numeric string.
    mutating func int64(_ snake: String, _ camel: String) throws(ReelError) -> Int64? {
        guard let key = take(snake, camel) else { return nil }
        if let n = try? container.decode(Int64.self, forKey: key) { return n }
        if let s = try? container.decode(String.self, forKey: key), let n = Int64(s) { return n }
        let k = kind(key)
        if k == "a number" || k == "a string" { throw .invalid(prefix + snake, "must be a 64-bit integer") }
        throw .invalid(prefix + snake, "must be an integer, not \(k)")
    }

    mutating func enumValue<E: ProtoJSONEnum>(_ snake: String, _ camel: String, as: E.Type) throws(ReelError) -> E? {
        guard let key = take(snake, camel) else { return nil }
        if let s = try? container.decode(String.self, forKey: key) { return try E(protoJSON: s, field: prefix + snake) }
        if let n = try? container.decode(Int32.self, forKey: key) {
            guard let e = E(rawValue: n) else { throw .invalid(prefix + snake, "unknown value \(n)") }
            return e
        }
        let k = kind(key)
        if k == "a number" { throw .invalid(prefix + snake, "unknown value") }
        throw .invalid(prefix + snake, "must be an enum name or number, not \(k)")
    }

    mutating func stringMap(_ snake: String, _ camel: String) throws(ReelError) -> [String: String]? {
        guard let key = take(snake, camel) else { return nil }
        guard kind(key) == "an object" else { throw .invalid(prefix + snake, "must be an object of strings") }
        guard let m = try? container.decode([String: String].self, forKey: key) else {
            throw .invalid(prefix + snake, "values must be strings")
        }
        return m
    }

    /// A nested message; its own decoding reports its errors.
    mutating func message<T: Decodable>(_ snake: String, _ camel: String, as: T.Type) throws -> T? {
        guard let key = take(snake, camel) else { return nil }
        return try container.decode(T.self, forKey: key)
    }

    func rejectUnknown() throws(ReelError) {
        if let name = unread.sorted().first {
            throw ReelError(.invalidArgument, "unknown field '\(prefix)\(name.prefix(64))'", field: prefix + name)
        }
    }
}
