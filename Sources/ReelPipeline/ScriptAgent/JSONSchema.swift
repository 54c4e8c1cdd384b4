import Foundation

/// Any JSON value, decoded without Foundation's bridging (a boolean is never a number), so an
/// answer can be checked against a schema before it is mapped to types.
public enum JSONValue: Sendable, Equatable, Codable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let d = try? c.decode(Double.self) {
            self = .number(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let d):
            if d == d.rounded(), abs(d) < 1e15 { try c.encode(Int64(d)) } else { try c.encode(d) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// Parses JSON text; nil when it is not JSON.
    public static func parse(_ text: String) -> JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// Compact JSON text with sorted keys.
    public var text: String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? enc.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
    }
}

/// The subset of JSON Schema that OpenAI's structured outputs take in strict mode: every
/// object lists all its properties as required and allows no others. The same value is sent
/// in `response_format` and checked against the answer here (local servers may not enforce it).
public indirect enum JSONSchema: Sendable {
    case string(description: String = "")
    case number(description: String = "")
    case integer(description: String = "")
    case boolean(description: String = "")
    case array(JSONSchema, description: String = "")
    case object([(String, JSONSchema)], description: String = "")

    /// The schema as JSON (what `response_format.json_schema.schema` carries).
    public var json: JSONValue {
        func described(_ base: [String: JSONValue], _ d: String) -> JSONValue {
            var o = base
            if !d.isEmpty { o["description"] = .string(d) }
            return .object(o)
        }
        switch self {
        case .string(let d): return described(["type": .string("string")], d)
        case .number(let d): return described(["type": .string("number")], d)
        case .integer(let d): return described(["type": .string("integer")], d)
        case .boolean(let d): return described(["type": .string("boolean")], d)
        case .array(let items, let d): return described(["type": .string("array"), "items": items.json], d)
        case .object(let props, let d):
            var p: [String: JSONValue] = [:]
            for (name, s) in props { p[name] = s.json }
            return described(["type": .string("object"), "properties": .object(p),
                              "required": .array(props.map { .string($0.0) }),
                              "additionalProperties": .bool(false)], d)
        }
    }

    /// The first place where `value` does not fit, as "path: what is wrong"; nil when it fits.
    public func violation(of value: JSONValue, at path: String = "$") -> String? {
        switch (self, value) {
        case (.string, .string), (.number, .number), (.boolean, .bool):
            return nil
        case (.integer, .number(let d)):
            return d == d.rounded() ? nil : "\(path): \(d) is not an integer"
        case (.array(let items, _), .array(let elements)):
            for (i, e) in elements.enumerated() {
                if let v = items.violation(of: e, at: "\(path)[\(i)]") { return v }
            }
            return nil
        case (.object(let props, _), .object(let members)):
            for (name, s) in props {
                guard let m = members[name] else { return "\(path): required property \"\(name)\" is missing" }
                if let v = s.violation(of: m, at: "\(path).\(name)") { return v }
            }
            let known = Set(props.map { $0.0 })
            if let extra = members.keys.sorted().first(where: { !known.contains($0) }) {
                return "\(path): property \"\(extra)\" is not allowed"
            }
            return nil
        default:
            return "\(path): expected \(typeName), got \(value.typeName)"
        }
    }

    var typeName: String {
        switch self {
        case .string: "a string"
        case .number: "a number"
        case .integer: "an integer"
        case .boolean: "a boolean"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

extension JSONValue {
    var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}
