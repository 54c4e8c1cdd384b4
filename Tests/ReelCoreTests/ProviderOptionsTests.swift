import Testing
import ReelCore

/// `--provider kling,runway` and its per-provider flags (DESIGN §8).
struct ProviderOptionsTests {
    @Test func namesAreAnOrderedListOfKnownProviders() throws {
        #expect(try ProviderOptions.names("kling") == ["kling"])
        #expect(try ProviderOptions.names("Kling, runway") == ["kling", "runway"])
        #expect(try ProviderOptions.names("runway,kling") == ["runway", "kling"])
        for bad in ["", "kling,", "http", "kling,kling", "simulated,kling"] {
            #expect(throws: ReelError.self, "\(bad)") { try ProviderOptions.names(bad) }
        }
    }

    @Test func perProviderValuesByNameOrOneBareValue() throws {
        let both = ["kling", "runway"]
        let n: (String) -> Int? = { Int($0).flatMap { $0 >= 1 ? $0 : nil } }
        #expect(try ProviderOptions.values("3", flag: "provider-concurrency", providers: both, bareAppliesToEach: true, parse: n)
                == ["kling": 3, "runway": 3])
        #expect(try ProviderOptions.values("kling=2,runway=5", flag: "c", providers: both, bareAppliesToEach: true, parse: n)
                == ["kling": 2, "runway": 5])
        #expect(try ProviderOptions.values("runway=5", flag: "c", providers: both, bareAppliesToEach: true, parse: n)
                == ["runway": 5], "a provider left out keeps its default")
        #expect(try ProviderOptions.values(nil, flag: "c", providers: both, bareAppliesToEach: true, parse: n).isEmpty)
        #expect(throws: ReelError.self) { try ProviderOptions.values("kling=0", flag: "c", providers: both, bareAppliesToEach: true, parse: n) }

        let url: (String) -> String? = { $0.hasPrefix("http://") || $0.hasPrefix("https://") ? $0 : nil }
        #expect(try ProviderOptions.values("http://a:1/x?k=v", flag: "provider-url", providers: ["kling"], bareAppliesToEach: false, parse: url)
                == ["kling": "http://a:1/x?k=v"])
        #expect(try ProviderOptions.values("kling=http://a:1,runway=http://b:2", flag: "provider-url", providers: both,
                                           bareAppliesToEach: false, parse: url) == ["kling": "http://a:1", "runway": "http://b:2"])
        do {
            _ = try ProviderOptions.values("http://a:1", flag: "provider-url", providers: both, bareAppliesToEach: false, parse: url)
            Issue.record("a bare URL with two providers is ambiguous")
        } catch {
            #expect(error.message.contains("kling=…,runway=…"), "\(error.message)")
        }
    }
}
