import Foundation
import ReelPipeline

extension Reeld {
    /// The script agent and the continuity agent from `--script-agent*` and `--continuity-agent`
    /// (DESIGN §5, §8); nil where the template writer / the rule-based checker alone serve.
    /// A bad value ends reeld with a one-line error.
    func scriptAgents(client: @autoclosure () -> CurlHTTPClient, promptLimit: Int) -> (ScriptAgent?, ScriptAgent?) {
        let script = scriptAgentKind, continuity = continuityAgentKind
        guard ["template", "openai"].contains(script) else { refuse("unknown --script-agent '\(script)': use template or openai") }
        guard ["none", "openai"].contains(continuity) else { refuse("unknown --continuity-agent '\(continuity)': use none or openai") }
        guard ["none", "template"].contains(scriptAgentFallback) else {
            refuse("unknown --script-agent-fallback '\(scriptAgentFallback)': use none or template")
        }
        guard script == "openai" || continuity == "openai" else { return (nil, nil) }
        let url = scriptAgentURL
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
            refuse("--script-agent-url must be an http(s) URL (the API base including /v1)")
        }
        guard !scriptAgentModel.isEmpty else { refuse("--script-agent-model must not be empty") }
        guard scriptAgentTimeoutMs >= 1 else { refuse("--script-agent-timeout-ms must be at least 1") }
        var settings = ChatCompletionsClient.Settings(baseURL: url, model: scriptAgentModel,
                                                      apiKey: ProcessInfo.processInfo.environment["OPENAI_API_KEY"])
        settings.requestTimeout = .milliseconds(Int64(scriptAgentTimeoutMs))
        // The stage's limit (--stage-timeout-seconds) less a margin for writing the outcome.
        settings.callBudget = .milliseconds(Int64(max(stageTimeoutSeconds * 1000 * 0.9, 1000)))
        settings.backoffBase = .milliseconds(Int64(min(max(retryBaseMs, 1), 1000)))
        var agent = ScriptAgent(chat: ChatCompletionsClient(settings: settings, client: client()))
        agent.fallbackToTemplate = scriptAgentFallback == "template"
        agent.promptLimit = promptLimit
        return (script == "openai" ? agent : nil, continuity == "openai" ? agent : nil)
    }
}

private func refuse(_ message: String) -> Never {
    FileHandle.standardError.write(Data("reeld: \(message)\n".utf8))
    exit(1)
}
