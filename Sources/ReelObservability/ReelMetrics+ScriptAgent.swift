import CoreMetrics

extension ReelMetrics {
    // MARK: script agent (DESIGN §2 "Cost": its tokens are counted here and in job events, not in cost_units)

    /// `reel_script_agent_tokens_total{kind}`: tokens the LLM reported (`usage`), kind prompt|completion|total.
    public static func scriptAgentTokens(prompt: Int, completion: Int, total: Int) {
        for (kind, n) in [("prompt", prompt), ("completion", completion), ("total", total)] where n > 0 {
            Counter(label: "reel_script_agent_tokens_total", dimensions: [("kind", kind)]).increment(by: Int64(n))
        }
    }

    /// `reel_script_agent_requests_total{purpose,outcome}`: each chat-completions request
    /// (purpose script|continuity; outcome ok, rate_limited, insufficient_quota, server_error,
    /// unreachable, malformed, unauthorized, rejected).
    public static func scriptAgentRequest(purpose: String, outcome: String) {
        Counter(label: "reel_script_agent_requests_total", dimensions: [("purpose", purpose), ("outcome", outcome)]).increment()
    }

    /// `reel_script_agent_quota_exhausted`: 1 after a 429 `insufficient_quota` until a request
    /// succeeds again (alert on it: the account needs credit).
    public static func scriptAgentQuotaExhausted(_ exhausted: Bool) {
        Gauge(label: "reel_script_agent_quota_exhausted").record(exhausted ? 1 : 0)
    }
}
