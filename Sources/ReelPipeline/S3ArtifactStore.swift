import Foundation
import ReelCore

/// Artifacts in an S3-compatible bucket (AWS, MinIO, moto…), under `s3://BUCKET/PREFIX/<job>/<file>`.
/// Requests are path-style (`<endpoint>/<bucket>/<key>`) and signed by libcurl itself
/// (`CURLOPT_AWS_SIGV4`); uploads stream from the local file.
public struct S3ArtifactStore: ArtifactStore {
    public let bucket: String
    /// Key prefix without leading or trailing slashes; may be empty.
    public let prefix: String
    public let endpoint: String
    public let region: String
    public let publicBaseURL: String?
    let accessKey: String
    let secretKey: String
    let client: CurlHTTPClient
    let maxObjectBytes: Int
    let timeout: Duration

    public struct ConfigError: Error, CustomStringConvertible {
        public let description: String
    }

    /// `artifactsURL` is `s3://BUCKET` or `s3://BUCKET/PREFIX`.
    public init(artifactsURL: String, endpoint: String, region: String, accessKey: String, secretKey: String,
                client: CurlHTTPClient, publicBaseURL: String? = nil, maxObjectBytes: Int = 1 << 30,
                timeout: Duration = .seconds(300)) throws {
        guard artifactsURL.hasPrefix("s3://") else {
            throw ConfigError(description: "artifacts URL must be s3://BUCKET[/PREFIX], not \(artifactsURL)")
        }
        let rest = artifactsURL.dropFirst("s3://".count)
        let bucket = String(rest.prefix { $0 != "/" })
        let bucketChars = Set("abcdefghijklmnopqrstuvwxyz0123456789.-")
        guard bucket.count >= 3, bucket.count <= 63, bucket.allSatisfy({ bucketChars.contains($0) }) else {
            throw ConfigError(description: "bad bucket name '\(bucket)' in \(artifactsURL)")
        }
        let prefix = rest.dropFirst(bucket.count).split(separator: "/").joined(separator: "/")
        let keyChars = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/")
        guard prefix.allSatisfy({ keyChars.contains($0) }) else {
            throw ConfigError(description: "the key prefix in \(artifactsURL) may only use letters, digits and ._-/")
        }
        var endpoint = endpoint
        while endpoint.hasSuffix("/") { endpoint.removeLast() }
        guard endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") else {
            throw ConfigError(description: "the S3 endpoint must be an http(s) URL, not \(endpoint)")
        }
        guard !accessKey.isEmpty, !secretKey.isEmpty, !region.isEmpty else {
            throw ConfigError(description: "an S3 artifact store needs an access key, a secret key and a region")
        }
        self.bucket = bucket; self.prefix = prefix; self.endpoint = endpoint; self.region = region
        self.accessKey = accessKey; self.secretKey = secretKey; self.client = client
        self.publicBaseURL = normalizedBaseURL(publicBaseURL)
        self.maxObjectBytes = maxObjectBytes; self.timeout = timeout
    }

    /// The default endpoint of AWS S3 in `region`.
    public static func awsEndpoint(region: String) -> String { "https://s3.\(region).amazonaws.com" }

    public func key(jobID: String, file: String) -> String {
        (prefix.isEmpty ? "" : prefix + "/") + jobID + "/" + file
    }

    public func url(jobID: String, file: String) -> String {
        if let publicBaseURL { return publicBaseURL + "/" + jobID + "/" + file }
        return "s3://\(bucket)/" + key(jobID: jobID, file: file)
    }

    public func locate(_ url: String) -> (jobID: String, file: String)? {
        let head = "s3://\(bucket)/" + (prefix.isEmpty ? "" : prefix + "/")
        guard url.hasPrefix(head) else { return nil }
        let rest = url.dropFirst(head.count)
        guard let slash = rest.firstIndex(of: "/") else { return nil }
        let (job, file) = (String(rest[..<slash]), String(rest[rest.index(after: slash)...]))
        return Self.isSafe(jobID: job, file: file) ? (job, file) : nil
    }

    public func publish(jobID: String, files: [String], from dir: String) async throws {
        for file in files {
            guard Self.isSafe(jobID: jobID, file: file) else { throw storeError("unsafe artifact name \(jobID)/\(file)") }
            var request = signed("PUT", jobID, file)
            request.headers["Content-Type"] = ArtifactMediaType.of(file)
            let response = try await client.upload(request, fromFile: dir + "/" + file)
            guard (200..<300).contains(response.status) else {
                throw storeError("PUT \(request.url): HTTP \(response.status) \(excerpt(response.body))")
            }
        }
    }

    public func read(jobID: String, file: String) async throws -> [UInt8]? {
        guard Self.isSafe(jobID: jobID, file: file) else { return nil }
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("reel-s3-\(UUID().uuidString)").path
        defer { unlink(tmp) }
        do {
            try await client.download(signed("GET", jobID, file), to: tmp, maxBytes: maxObjectBytes, timeout: timeout)
        } catch let e as HTTPClientError where e.code == .badStatus && e.message.hasSuffix(" 404") {
            return nil
        }
        return try await onOwnThread { FileManager.default.contents(atPath: tmp).map { Array($0) } ?? [] }
    }

    public func prune(jobID: String, keeping: Set<String>) async throws -> (files: Int, bytes: Int64) {
        guard Self.isSafe(jobID: jobID, file: "x") else { return (0, 0) }
        let jobPrefix = key(jobID: jobID, file: "")
        var files = 0
        var bytes: Int64 = 0
        var token: String? = nil
        repeat {
            // ListObjectsV2; query parameters in their canonical (sorted) order for SigV4.
            var query = token.map { "continuation-token=\(Self.queryEncode($0))&" } ?? ""
            query += "list-type=2&prefix=\(Self.queryEncode(jobPrefix))"
            var request = HTTPRequest(method: "GET", url: endpoint + "/" + bucket + "?" + query, timeout: timeout)
            request.sigV4 = SigV4(region: region, service: "s3", accessKey: accessKey, secretKey: secretKey)
            request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
            let response = try await client.send(request)
            guard (200..<300).contains(response.status) else {
                throw storeError("list \(jobPrefix): HTTP \(response.status) \(excerpt(response.body))")
            }
            let listing = Self.parseListing(String(decoding: response.body, as: UTF8.self))
            for (key, size) in listing.objects where key.hasPrefix(jobPrefix) {
                let file = String(key.dropFirst(jobPrefix.count))
                guard !keeping.contains(file), Self.isSafe(jobID: jobID, file: file) else { continue }
                let deleted = try await client.send(signed("DELETE", jobID, file))
                guard (200..<300).contains(deleted.status) || deleted.status == 404 else {
                    throw storeError("DELETE \(key): HTTP \(deleted.status) \(excerpt(deleted.body))")
                }
                files += 1
                bytes += size
            }
            token = listing.nextToken
        } while token != nil
        return (files, bytes)
    }

    /// Keys and sizes of a ListObjectsV2 answer, and its continuation token when truncated.
    static func parseListing(_ xml: String) -> (objects: [(key: String, size: Int64)], nextToken: String?) {
        func value(_ tag: String, in s: Substring) -> String? {
            guard let a = s.range(of: "<\(tag)>"), let b = s.range(of: "</\(tag)>", range: a.upperBound..<s.endIndex) else { return nil }
            return xmlUnescape(String(s[a.upperBound..<b.lowerBound]))
        }
        var objects: [(String, Int64)] = []
        var rest = xml[...]
        while let open = rest.range(of: "<Contents>"), let close = rest.range(of: "</Contents>", range: open.upperBound..<rest.endIndex) {
            let item = rest[open.upperBound..<close.lowerBound]
            if let key = value("Key", in: item) { objects.append((key, Int64(value("Size", in: item) ?? "") ?? 0)) }
            rest = rest[close.upperBound...]
        }
        let truncated = value("IsTruncated", in: xml[...]) == "true"
        return (objects, truncated ? value("NextContinuationToken", in: xml[...]) : nil)
    }

    static func xmlUnescape(_ s: String) -> String {
        s.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&amp;", with: "&")
    }

    /// RFC 3986 unreserved characters stay; everything else is %XX (SigV4's canonical query).
    static func queryEncode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.append(Character(UnicodeScalar(b)))
            default:
                out += String(format: "%%%02X", b)
            }
        }
        return out
    }

    /// Path-style, so any S3-compatible server works whatever its DNS.
    func signed(_ method: String, _ jobID: String, _ file: String) -> HTTPRequest {
        var request = HTTPRequest(method: method, url: endpoint + "/" + bucket + "/" + key(jobID: jobID, file: file),
                                  timeout: timeout)
        request.sigV4 = SigV4(region: region, service: "s3", accessKey: accessKey, secretKey: secretKey)
        // S3 wants the payload hash header; curl signs it as given. The transport (TLS) protects the body.
        request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
        return request
    }

    private func storeError(_ message: String) -> Pipeline.StageFailure {
        Pipeline.StageFailure(code: "ARTIFACT_STORE_FAILED", message: message, retryable: true)
    }

    private func excerpt(_ body: [UInt8]) -> String {
        String(decoding: body.prefix(300), as: UTF8.self).replacingOccurrences(of: "\n", with: " ")
    }
}
