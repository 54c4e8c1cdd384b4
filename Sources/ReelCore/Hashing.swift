import Crypto

/// SHA-256 from swift-crypto (BoringSSL's assembly on Linux), as lowercase hex: API keys are
/// stored as this hash, and derived idempotency keys are made from it.
public enum Hashing {
    private static let digits = Array("0123456789abcdef".utf8)

    /// Lowercase hex of SHA-256 over the string's UTF-8 bytes.
    public static func sha256Hex(_ s: String) -> String {
        var s = s
        let digest = s.withUTF8 { Crypto.SHA256.hash(data: $0) }
        return String(unsafeUninitializedCapacity: Crypto.SHA256.byteCount * 2) { out in
            var i = 0
            for b in digest {
                out[i] = digits[Int(b >> 4)]
                out[i + 1] = digits[Int(b & 0x0f)]
                i += 2
            }
            return i
        }
    }
}
