import ReelCore

/// Script expansion and continuity checks by an LLM (DESIGN §5 item 1 and 2). Its token usage
/// goes into the job's events and metrics, never into `cost_units` (DESIGN §2 "Cost").
extension Pipeline {
    /// The script and the step's message: the agent's when one is set (the template's after
    /// it failed, with `--script-agent-fallback template`), else the template's.
    func expandScript(_ job: Job, context: SceneContext) async throws -> (String, String) {
        guard let agent = scriptAgent else { return (ScriptWriter.expand(job, context: context), "script expanded") }
        do {
            let x = try await agent.expand(job, context: context)
            let retries = x.attempts > 1 ? " after \(x.attempts) requests" : ""
            return (x.script, "script expanded by \(x.model)\(retries); \(x.usage.summary)")
        } catch let e as ScriptAgentError {
            let used = e.usage.totalTokens > 0 ? "; \(e.usage.summary)" : ""
            guard agent.fallbackToTemplate else {
                throw StageFailure(code: "SCRIPT_AGENT", message: "script agent: \(e.message)\(used)", retryable: e.jobRetryable)
            }
            logger.warning("script agent failed; the template writes the script",
                           metadata: ["reel.job_id": "\(job.id)", "error": "\(e)"])
            return (ScriptWriter.expand(job, context: context),
                    "script expanded by the template (fallback: the script agent failed: \(e.message)\(used))")
        }
    }

    /// After the rule-based check passed: asks the agent. Its verdict and reasons join the
    /// `validation_result`; a violation is saved with them, then fails with `CONTINUITY_VIOLATION`.
    /// Returns the addition to the step's message.
    func checkContinuityByAgent(_ agent: ScriptAgent, _ run: RunState, _ a: inout Artifacts,
                                context: SceneContext) async throws -> String {
        let job = run.writer.job
        let answer: StructuredAnswer<ContinuityVerdict>
        do {
            answer = try await agent.checkContinuity(a.expandedScript, job: job, context: context)
        } catch let e as ScriptAgentError {
            let used = e.usage.totalTokens > 0 ? "; \(e.usage.summary)" : ""
            throw StageFailure(code: "SCRIPT_AGENT", message: "continuity agent: \(e.message)\(used)", retryable: e.jobRetryable)
        }
        let v = answer.value
        a.validationResult = Self.withVerdict(a.validationResult, v, model: answer.model, usage: answer.usage)
        guard v.passed else {
            let what = v.violations.isEmpty ? "the script contradicts the scene bible" : v.violations.joined(separator: "; ")
            try await step(run, .scriptReady, .continuityValidation, 33,
                           "continuity agent (\(answer.model)) found violations; \(answer.usage.summary)", artifacts: a,
                           checkpoint: true)
            throw StageFailure(code: "CONTINUITY_VIOLATION", message: "continuity agent: \(what)" + (v.reasons.isEmpty ? "" : " (\(v.reasons))"),
                               retryable: false)
        }
        return "; agent \(answer.model) agrees; \(answer.usage.summary)"
    }

    /// The rule-based result with the agent's verdict under "agent" (and its violations added).
    static func withVerdict(_ result: String, _ v: ContinuityVerdict, model: String, usage: TokenUsage) -> String {
        guard case .object(var o)? = JSONValue.parse(result) else { return result }
        o["agent"] = .object([
            "model": .string(model),
            "consistent": .bool(v.passed),
            "violations": .array(v.violations.map { .string($0) }),
            "reasons": .string(v.reasons),
            "tokens": .object(["prompt": .number(Double(usage.promptTokens)), "completion": .number(Double(usage.completionTokens)),
                               "total": .number(Double(usage.totalTokens))]),
        ])
        if !v.passed {
            o["valid"] = .bool(false)
            var all: [JSONValue] = []
            if case .array(let old)? = o["violations"] { all = old }
            let added = v.violations.isEmpty ? ["the script contradicts the scene bible"] : v.violations
            o["violations"] = .array(all + added.map { .string($0) })
        }
        return JSONValue.object(o).text
    }
}
