import ReelCore
import ReelWire
import Synchronization

/// The request each closed-loop mode repeats.
enum Operations {
    /// CreateJob with inputs no earlier request used (so each one is a new durable job),
    /// spread over `users` user ids and `scenes` scene ids.
    static func create(runID: String, users: Int, scenes: Int = 1) -> ClosedLoop.Operation {
        let counterBox = SendableCounter()
        return { calls, _ in
            let n = counterBox.next()
            do {
                let job = try await calls.createJob(newJob(runID: runID, n: n, users: users, scenes: scenes))
                return job.id.isEmpty ? .failed("EMPTY_JOB", detail: "CreateJob answered a job without an id") : .ok
            } catch {
                return .from(error)
            }
        }
    }

    /// CreateJobs with `batch` new jobs per call (inputs no earlier request used), spread like
    /// `create`'s. The call is OK when every item came back with a job; the jobs it returned count
    /// as committed items either way (the server commits a batch's valid items together).
    static func createBatch(runID: String, batch: Int, users: Int, scenes: Int = 1) -> ClosedLoop.CountedOperation {
        let counterBox = SendableCounter()
        return { calls, _ in
            let first = counterBox.next(batch)
            let inputs = (0..<batch).map { newJob(runID: runID, n: first + $0, users: users, scenes: scenes) }
            let answer: CreateJobsAnswer
            do {
                answer = try await calls.createJobs(inputs)
            } catch {
                return (.from(error), 0)
            }
            if answer.results != batch {
                return (.failed("WRONG_COUNT", detail: "CreateJobs answered \(answer.results) results for \(batch) jobs"),
                        answer.jobs)
            }
            if let f = answer.failures.first {
                let key = "ITEM_" + GRPCStatus.Code(rawValue: f.code).name
                return (.failed(key, detail: "\(answer.failures.count) of \(batch) items failed; jobs[\(f.index)]: \(f.message)"),
                        answer.jobs)
            }
            return (.ok, answer.jobs)
        }
    }

    /// GetJob of one job, again and again.
    static func get(id: String) -> ClosedLoop.Operation {
        { calls, _ in
            do {
                let job = try await calls.getJob(id: id)
                return job.id == id ? .ok : .failed("WRONG_JOB", detail: "GetJob(\(id)) answered job \(job.id)")
            } catch {
                return .from(error)
            }
        }
    }

    /// CreateJob, then WatchJob until the stream ends: OK when the last event is FINAL_READY.
    static func endToEnd(runID: String, users: Int, scenes: Int = 1, watchTimeout: Duration?) -> ClosedLoop.Operation {
        let counterBox = SendableCounter()
        return { calls, _ in
            let n = counterBox.next()
            let id: String
            do {
                id = try await calls.createJob(newJob(runID: runID, n: n, users: users, scenes: scenes)).id
            } catch {
                return .from(error)
            }
            let last = LastEvent()
            do {
                try await calls.watchJob(id: id, timeout: watchTimeout) { last.record($0) }
            } catch {
                return .from(error)
            }
            return last.outcome()
        }
    }

    /// With `scenes` 1 every job's scene is `bench-scene` (so every create and finalization
    /// updates that one scenes row); otherwise `bench-scene-0` … spread like the users.
    static func newJob(runID: String, n: Int, users: Int, scenes: Int = 1) -> CreateJobInput {
        let scene = scenes <= 1 ? "bench-scene" : "bench-scene-\(((n % scenes) + scenes) % scenes)"
        return CreateJobInput(userID: "bench-user-\(n % users)", sceneID: scene, type: .sceneCreation,
                              inputText: "reel-bench run \(runID) job \(n): a short no-op scene")
    }
}

/// A counter shared by every worker of a mode.
final class SendableCounter: Sendable {
    private let counter = Atomic<Int>(0)
    func next() -> Int { counter.wrappingAdd(1, ordering: .relaxed).oldValue }
    /// Reserves `n` consecutive numbers; returns the first.
    func next(_ n: Int) -> Int { counter.wrappingAdd(n, ordering: .relaxed).oldValue }
}

/// The newest event of one watch stream (written on the loop thread, read after the stream ends).
final class LastEvent: Sendable {
    private let state = Mutex<(event: JobEvent?, undecodable: Int)>((nil, 0))

    func record(_ event: JobEvent?) {
        state.withLock { s in
            if let event { s.event = event } else { s.undecodable += 1 }
        }
    }

    func outcome() -> Outcome {
        state.withLock { s in
            if s.undecodable > 0 { return .failed("UNDECODABLE_EVENT", detail: "a WatchJob message did not decode") }
            guard let event = s.event else { return .failed("NO_EVENTS", detail: "the watch ended without events") }
            if event.status == .finalReady { return .ok }
            let detail = "job \(event.jobID) ended the watch at \(event.status.name)/\(event.stage.name): \(event.message)"
            if event.endsWatch { return .failed("JOB_" + event.status.name.uppercased(), detail: detail) }
            return .failed("STREAM_ENDED_AT_" + event.status.name.uppercased(), detail: detail)
        }
    }
}
