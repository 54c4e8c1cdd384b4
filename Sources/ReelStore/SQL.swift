import ReelCore

/// Every SQL statement Reel runs, in one place.
enum SQL {
    /// The job columns in the order `JobRow.decode` reads them.
    static let jobColumns = """
    id::text, user_id, scene_id, type, status, stage, progress, message, input_text, bible_version,
    target_duration_seconds, quality, model, style_overrides::text,
    expanded_script, validation_result, preview_video_url, final_video_url, thumbnail_url, hls_playlist_url, provider_job_id,
    result_segment_id, result_video_url, result_thumbnail_url, result_duration_seconds, result_bible_version,
    error_code, error_message, error_details, error_stage,
    retry_count, max_retries, idempotency_key, tier, dead_lettered, worker_id,
    (extract(epoch FROM created_at) * 1000)::int8,
    COALESCE((extract(epoch FROM started_at) * 1000)::int8, 0),
    COALESCE((extract(epoch FROM completed_at) * 1000)::int8, 0),
    last_event_seq, tenant_id, provider_request_id, fence,
    COALESCE((extract(epoch FROM scheduled_at) * 1000)::int8, 0),
    COALESCE((extract(epoch FROM deadline_at) * 1000)::int8, 0),
    webhook_url, provider, cost_units
    """

    /// The event columns in the order `JobRow.decodeEvent` reads them.
    static let eventColumns = "job_id::text, seq, status, stage, progress, message, (extract(epoch FROM at) * 1000)::int8, dead_lettered"

    static let migrationsTable = "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    static let migrationLock = "SELECT pg_advisory_xact_lock(7365726565)"
    static let appliedVersions = "SELECT version FROM schema_migrations"
    static let recordMigration = "INSERT INTO schema_migrations (version, name) VALUES ($1::int, $2)"

    /// `createJob`, for one call or a batch of concurrent ones (`GroupCommit`): one statement,
    /// one commit, one fsync shared by all. Inputs come as parallel arrays ($1…$15, `ord` = the
    /// position in the batch; $20…$23: run-at and deadline in ms (0: none), webhook URL, expected
    /// cost), the initial state (`JobStatus.initial`) as $16…$19; insert-or-nothing on (tenant, user, idempotency key), event seq 1
    /// in the same statement. A user's first job today is the first of theirs in the batch whose
    /// statement inserts the user's `user_days` row for today: the unique key makes that true
    /// for exactly one create however many batches run at once, and later creates that day
    /// conflict with a committed row, which takes no lock. Missing scenes are inserted without locking existing ones (a scene
    /// another transaction is creating this instant starts at version 1, as every scene does).
    static let createJobs = """
    WITH input AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[],
                             $8::text[], $9::text[], $10::text[], $11::int[], $12::int8[], $13::int8[], $14::text[], $15::int[],
                             $20::int8[], $21::int8[], $22::text[], $23::float8[])
            AS t(user_id, scene_id, type, input_text, target_duration_seconds, quality, model, style_overrides,
                 idempotency_key, tier, max_retries, first_key, later_key, tenant_id, ord,
                 scheduled_ms, deadline_ms, webhook_url, expected_cost_units)
    ), budgets AS (
        -- The batch's tenants' budgets with a limit, locked in tenant order: a create for such a
        -- tenant, on any instance, waits here, so its check and its reservation are one step.
        SELECT b.tenant_id, b.limit_units,
               b.limit_units - b.reserved_units
                 - CASE WHEN reel_budget_period(b.period_start, b.period_seconds) > b.period_start THEN 0 ELSE b.spent_units END AS room
        FROM tenant_budgets b WHERE b.tenant_id IN (SELECT tenant_id FROM input) AND b.limit_units > 0
        ORDER BY b.tenant_id FOR NO KEY UPDATE OF b
    ), fits AS (
        -- Per budgeted tenant, its new items in order (a key already used takes no room).
        SELECT g.ords[f.k] AS ord, f.ok, f.room_before, b.tenant_id, b.limit_units, g.costs[f.k] AS cost
        FROM budgets b
        CROSS JOIN LATERAL (
            SELECT array_agg(i.ord ORDER BY i.ord) AS ords, array_agg(i.expected_cost_units ORDER BY i.ord) AS costs
            FROM input i WHERE i.tenant_id = b.tenant_id
              AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.tenant_id = i.tenant_id AND e.user_id = i.user_id
                                                     AND e.idempotency_key = i.idempotency_key)) g
        CROSS JOIN LATERAL reel_budget_fit(b.room, g.costs) f
        WHERE g.ords IS NOT NULL
    ), new_scenes AS (
        -- In key order, so two batches making the same new scenes wait for each other, never deadlock.
        INSERT INTO scenes (tenant_id, id) SELECT DISTINCT tenant_id, scene_id FROM input ORDER BY 1, 2
        ON CONFLICT (tenant_id, id) DO NOTHING
        RETURNING tenant_id, id, bible_version
    ), first_today AS (
        INSERT INTO user_days (tenant_id, user_id, day)
        SELECT DISTINCT tenant_id, user_id, current_date FROM input ORDER BY 1, 2
        ON CONFLICT DO NOTHING
        RETURNING tenant_id, user_id
    ), ins AS (
        INSERT INTO jobs (user_id, scene_id, type, status, stage, progress, message, input_text, bible_version,
                          target_duration_seconds, quality, model, style_overrides, idempotency_key, tier, max_retries,
                          priority_key, tenant_id, scheduled_at, run_at, deadline_at, webhook_url, expected_cost_units,
                          reserved_units)
        SELECT i.user_id, i.scene_id, i.type, $16, $17, $18::int, $19, i.input_text,
               COALESCE((SELECT n.bible_version FROM new_scenes n WHERE n.tenant_id = i.tenant_id AND n.id = i.scene_id),
                        (SELECT s.bible_version FROM scenes s WHERE s.tenant_id = i.tenant_id AND s.id = i.scene_id), 1),
               i.target_duration_seconds, i.quality, i.model, i.style_overrides::jsonb, i.idempotency_key, i.tier, i.max_retries,
               CASE WHEN NOT EXISTS (SELECT 1 FROM first_today f WHERE f.user_id = i.user_id AND f.tenant_id = i.tenant_id)
                      OR EXISTS (SELECT 1 FROM input e WHERE e.user_id = i.user_id AND e.tenant_id = i.tenant_id AND e.ord < i.ord)
                    THEN i.later_key ELSE i.first_key END,
               i.tenant_id,
               CASE WHEN i.scheduled_ms > 0 THEN to_timestamp(i.scheduled_ms / 1000.0) END,
               CASE WHEN i.scheduled_ms > 0 THEN greatest(now(), to_timestamp(i.scheduled_ms / 1000.0)) ELSE now() END,
               CASE WHEN i.deadline_ms > 0 THEN to_timestamp(i.deadline_ms / 1000.0) END,
               i.webhook_url, i.expected_cost_units, COALESCE(f.cost, 0)
        FROM input i LEFT JOIN fits f ON f.ord = i.ord
        WHERE f.ok IS NOT FALSE
        ORDER BY i.ord
        ON CONFLICT (tenant_id, user_id, idempotency_key) DO NOTHING
        RETURNING *
    ), q AS (
        INSERT INTO job_queue (job_id, tenant_id, user_id, type, tier, priority_key, run_at, waiting, cost_units)
        SELECT id, tenant_id, user_id, type, tier, priority_key, run_at, run_at > now(), expected_cost_units FROM ins
    ), ev AS (
        INSERT INTO job_events (job_id, seq, status, stage, progress, message, at)
        SELECT id, 1, status, stage, progress, message, created_at FROM ins
        RETURNING \(eventColumns)
    ), reserve AS (
        UPDATE tenant_budgets b SET
            spent_units = CASE WHEN reel_budget_period(b.period_start, b.period_seconds) > b.period_start THEN 0 ELSE b.spent_units END,
            period_start = reel_budget_period(b.period_start, b.period_seconds),
            reserved_units = b.reserved_units + r.total
        FROM (SELECT tenant_id, sum(reserved_units) AS total FROM ins GROUP BY tenant_id) r
        WHERE b.tenant_id = r.tenant_id AND r.total > 0
    )
    -- The jobs made, then the items refused by their tenant's budget (no job; their `ord`, the
    -- budget and the room each had): the last five columns (`JobRow.budgetRefusal`).
    SELECT j.*, ev.*, r.* FROM ((SELECT \(jobColumns) FROM ins) j JOIN ev ON ev.job_id = j.id)
    FULL JOIN (SELECT ord, tenant_id, limit_units, room_before, cost FROM fits WHERE NOT ok) r ON false
    """

    static let jobByIdempotencyKey = "SELECT \(jobColumns) FROM jobs WHERE user_id = $1 AND idempotency_key = $2 AND tenant_id = $3"
    static let jobByID = "SELECT \(jobColumns) FROM jobs WHERE id = $1::uuid"
    /// Status, holder, whether the holder's lease is live, and the claim's fencing number.
    static let statusByID = """
    SELECT j.status, j.worker_id,
           EXISTS (SELECT 1 FROM worker_leases l WHERE l.worker_id = j.worker_id AND l.expires_at > now())::text, j.fence
    FROM jobs j WHERE j.id = $1::uuid
    """

    /// The condition under which a worker's write counts: it holds the job under the claim
    /// `fence` names (nil: any of its claims) and its lease is live.
    static func heldBy(worker: String, fence: String, alias j: String = "jobs") -> String {
        """
        \(j).worker_id = \(worker) AND (\(fence)::int8 IS NULL OR \(j).fence = \(fence)::int8)
              AND EXISTS (SELECT 1 FROM worker_leases l WHERE l.worker_id = \(worker) AND l.expires_at > now())
        """
    }

    /// What a change does to the job's row in `job_queue` ($n: `JobRow.queueAction`): a job back
    /// to `queued` gets its row (ready again at `run_at`; `waiting` until then), a job that ends loses it.
    static func queueEffects(actionParam n: Int) -> String {
        """
        , qi AS (
            INSERT INTO job_queue (job_id, tenant_id, user_id, type, tier, priority_key, run_at, waiting, cost_units)
            SELECT id, tenant_id, user_id, type, tier, priority_key, run_at, run_at > now(), expected_cost_units
            FROM u WHERE $\(n) = 'enqueue'
            ON CONFLICT (job_id) DO UPDATE SET worker_id = NULL, run_at = EXCLUDED.run_at, waiting = EXCLUDED.waiting
        ), qd AS (
            DELETE FROM job_queue q USING u WHERE q.job_id = u.id AND $\(n) = 'dequeue'
        )
        """
    }

    /// Newest first; keyset pagination on (created_at, id). Empty filters match everything.
    static let listJobs = """
    SELECT \(jobColumns) FROM jobs
    WHERE ($1 = '' OR user_id = $1) AND ($2 = '' OR scene_id = $2) AND ($3 = '' OR status = $3)
      AND (NOT $4::bool OR dead_lettered) AND ($8::text IS NULL OR tenant_id = $8)
      AND ($5::int8 IS NULL OR (created_at, id) < (to_timestamp($5::int8 / 1000000.0), $6::uuid))
    ORDER BY created_at DESC, id DESC
    LIMIT $7::int
    """
    static let listCursor = "SELECT (extract(epoch FROM created_at) * 1000000)::int8 FROM jobs WHERE id = $1::uuid"

    static let eventsAfter = "SELECT \(eventColumns) FROM job_events WHERE job_id = $1::uuid AND seq > $2::int8 ORDER BY seq"

    /// The artifact columns a change writes, from parameters $8–$14 in `JobRow.artifactParams`
    /// order (nil keeps the stored value) and the request id from `$n` (`JobRow.requestIDParam`,
    /// the last parameter of `applyChange` and `applyChain`).
    static func setArtifacts(requestIDParam n: Int) -> String {
        """
        expanded_script = COALESCE($8, expanded_script), validation_result = COALESCE($9, validation_result),
                preview_video_url = COALESCE($10, preview_video_url), final_video_url = COALESCE($11, final_video_url),
                thumbnail_url = COALESCE($12, thumbnail_url), hls_playlist_url = COALESCE($13, hls_playlist_url),
                provider_job_id = COALESCE($14, provider_job_id), provider_request_id = COALESCE($\(n), provider_request_id)
        """
    }

    /// A state change and its event in one statement ($31, $32: the provider that runs the
    /// attempt and a weighted charge to add to `cost_units`, `JobRow.chargeParams`). Conditions: the current status is one
    /// the transition table allows ($6), and the caller still holds an unexpired lease when it
    /// says so ($7): a worker whose lease ran out writes nothing, even before the reaper requeues.
    static let applyChange = """
    WITH u AS (
        UPDATE jobs SET
            status = $2, stage = COALESCE($3, stage), progress = COALESCE($4::int, progress), message = $5,
            \(setArtifacts(requestIDParam: 29)),
            result_segment_id = COALESCE($15, result_segment_id), result_video_url = COALESCE($16, result_video_url),
            result_thumbnail_url = COALESCE($17, result_thumbnail_url),
            result_duration_seconds = COALESCE($18::float8, result_duration_seconds),
            result_bible_version = COALESCE($19::int, result_bible_version),
            error_code = CASE WHEN $20::text IS NULL THEN error_code ELSE NULLIF($20, '') END,
            error_message = CASE WHEN $20::text IS NULL THEN error_message ELSE NULLIF($21, '') END,
            error_details = CASE WHEN $20::text IS NULL THEN error_details ELSE NULLIF($22, '') END,
            error_stage = CASE WHEN $20::text IS NULL THEN error_stage ELSE NULLIF($23, '') END,
            dead_lettered = COALESCE($24::bool, dead_lettered),
            retry_count = COALESCE($25::int, retry_count),
            run_at = CASE WHEN $2 = 'queued' THEN now() + make_interval(secs => COALESCE($26::int8, 0) / 1000.0) ELSE run_at END,
            completed_at = CASE WHEN $28::bool THEN now() ELSE NULL END,
            provider = COALESCE($31, provider), cost_units = cost_units + COALESCE($32::float8, 0),
            last_event_seq = last_event_seq + 1,
            updated_at = now()
        WHERE id = $1::uuid AND status = ANY($6::text[])
          AND ($7::text IS NULL OR (\(heldBy(worker: "$7", fence: "$30"))))
        RETURNING *
    )\(queueEffects(actionParam: 27)), ev AS (
        INSERT INTO job_events (job_id, seq, status, stage, progress, message, dead_lettered, at)
        SELECT id, last_event_seq, status, stage, progress, message, dead_lettered, updated_at FROM u
    )
    SELECT \(jobColumns), (extract(epoch FROM updated_at) * 1000)::int8 FROM u
    """

    /// Runs of steps of many running jobs (`PostgresJobStore.isChain`) in one statement: one
    /// `UPDATE … FROM unnest` for the rows and one `INSERT … SELECT FROM unnest` for the events.
    /// Per job ($1–$18, one element each): its row takes the last step's state once (artifacts
    /// of the last step that had them; NULL keeps a column), and `n` steps get event rows with
    /// the next seqs. The first step must be allowed from the stored status (`sources`, the
    /// names joined by commas) under the worker's claim and live lease, as in `applyChange`;
    /// the steps after it were checked against the transition table by the caller. The steps
    /// themselves come flattened ($19–$24: the job's `ord`, the step's 1-based index `k`).
    /// $25, $26: the provider the steps name and the sum of their weighted charges (NULL: none).
    /// Rows are locked in id order, so two batches never deadlock. Answers one row per job
    /// written: its `ord`, the job as it ends up, and the time of the change.
    static let applyChains = """
    WITH input AS (
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::int[], $8::text[],
                             $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                             $16::text[], $17::int[], $18::int[], $25::text[], $26::float8[])
            AS t(id, sources, worker, fence, status, stage, progress, message,
                 expanded_script, validation_result, preview_video_url, final_video_url, thumbnail_url, hls_playlist_url,
                 provider_job_id, provider_request_id, n, ord, provider, charge)
    ), locked AS (
        SELECT j.id FROM jobs j JOIN input i ON i.id = j.id
        WHERE j.status = ANY(string_to_array(i.sources, ',')) AND \(heldBy(worker: "i.worker", fence: "i.fence", alias: "j"))
        ORDER BY j.id FOR UPDATE OF j
    ), u AS (
        UPDATE jobs j SET
            status = i.status, stage = i.stage, progress = i.progress, message = i.message,
            expanded_script = COALESCE(i.expanded_script, j.expanded_script),
            validation_result = COALESCE(i.validation_result, j.validation_result),
            preview_video_url = COALESCE(i.preview_video_url, j.preview_video_url),
            final_video_url = COALESCE(i.final_video_url, j.final_video_url),
            thumbnail_url = COALESCE(i.thumbnail_url, j.thumbnail_url),
            hls_playlist_url = COALESCE(i.hls_playlist_url, j.hls_playlist_url),
            provider_job_id = COALESCE(i.provider_job_id, j.provider_job_id),
            provider_request_id = COALESCE(i.provider_request_id, j.provider_request_id),
            provider = COALESCE(i.provider, j.provider), cost_units = j.cost_units + COALESCE(i.charge, 0),
            completed_at = NULL, last_event_seq = j.last_event_seq + i.n, updated_at = now()
        FROM input i JOIN locked l ON l.id = i.id
        WHERE j.id = i.id
        RETURNING j.*, i.n AS steps, i.ord AS ord
    ), ev AS (
        INSERT INTO job_events (job_id, seq, status, stage, progress, message, dead_lettered, at)
        SELECT u.id, u.last_event_seq - u.steps + e.k, e.status, e.stage, e.progress, e.message, u.dead_lettered, u.updated_at
        FROM unnest($19::int[], $20::int[], $21::text[], $22::text[], $23::int[], $24::text[])
            AS e(ord, k, status, stage, progress, message)
        JOIN u ON u.ord = e.ord
    )
    SELECT ord, \(jobColumns), (extract(epoch FROM updated_at) * 1000)::int8 FROM u
    """

    /// Claims ready jobs for `$1`, `$2` at most, under the worker's lease of `$3` ms, in one
    /// statement over the narrow `job_queue`, in fair-share order (issue #17 item 3):
    /// - candidates: the best few ready jobs (`$2` + 2, at most 6) of every (tenant, user) with
    ///   any (a loose index scan over `job_queue_ready_user`; more than one each, so concurrent
    ///   claimers skipping each other's locks still find every user's jobs), plus the `$4` best ready jobs overall (`job_queue_ready`);
    /// - claimed in `fairOrder` (the tenant with the least weighted cost first, then its user
    ///   with the least cost, then `priority_key`), and the claimed cost is added to the
    ///   claimer's `fair_usage` rows. With costs all equal (or 0) this is round-robin: every
    ///   user's best job before anyone's second.
    /// `$6`: the half-life of the usage in seconds. Delayed jobs are `waiting` rows the ready
    /// indexes leave out (`promoteDueJobs`); `run_at <= now()` still guards.
    /// SKIP LOCKED lets several claimers share the queue. Each claim bumps the job's `fence`.
    /// The claim renews the worker's lease, or takes it afresh when it had none or holds nothing;
    /// a worker whose lease lapsed while it held jobs claims nothing until those are requeued
    /// (`workerHeartbeat`), so no job is left held by a lease that came back to life.
    static let claim = """
    WITH RECURSIVE lease AS (
        INSERT INTO worker_leases (worker_id, expires_at) VALUES ($1, now() + make_interval(secs => $3::int8 / 1000.0))
        ON CONFLICT (worker_id) DO UPDATE SET expires_at = EXCLUDED.expires_at
        WHERE worker_leases.expires_at > now() OR NOT EXISTS (SELECT 1 FROM job_queue q WHERE q.worker_id = $1)
        RETURNING 1
    ), users AS (
        (SELECT tenant_id, user_id FROM job_queue WHERE worker_id IS NULL AND NOT waiting ORDER BY tenant_id, user_id LIMIT 1)
        UNION ALL
        SELECT n.tenant_id, n.user_id FROM users u CROSS JOIN LATERAL (
            SELECT q.tenant_id, q.user_id FROM job_queue q
            WHERE q.worker_id IS NULL AND NOT q.waiting AND (q.tenant_id, q.user_id) > (u.tenant_id, u.user_id)
            ORDER BY q.tenant_id, q.user_id LIMIT 1) n
    ), heads AS (
        SELECT h.* FROM users u CROSS JOIN LATERAL (
            SELECT job_id, tenant_id, user_id, priority_key, cost_units FROM job_queue q
            WHERE q.worker_id IS NULL AND NOT q.waiting AND q.tenant_id = u.tenant_id AND q.user_id = u.user_id
              AND q.run_at <= now() AND ($5::text[] IS NULL OR q.type = ANY($5::text[]))
            ORDER BY q.priority_key LIMIT least($2::int + 2, 6)) h
    ), rest AS (
        SELECT job_id, tenant_id, user_id, priority_key, cost_units FROM job_queue
        WHERE worker_id IS NULL AND NOT waiting AND run_at <= now() AND ($5::text[] IS NULL OR type = ANY($5::text[]))
        ORDER BY priority_key LIMIT $4::int
    ), cand AS (
        SELECT * FROM heads UNION SELECT * FROM rest
    ), \(fairOrder(halfLife: "$6", limit: "$4::int", discountWaiting: false)), c AS (
        -- More candidates than slots ($2), so concurrent claimers skip each other's locks. The
        -- job's row is locked here too, skipped when a change holds it (a CancelJob locks the
        -- job, then its queue row: waiting for it while holding the queue row would deadlock).
        SELECT q.job_id FROM job_queue q JOIN ordered r ON r.job_id = q.job_id JOIN jobs j ON j.id = q.job_id
        WHERE q.worker_id IS NULL AND NOT q.waiting AND EXISTS (SELECT 1 FROM lease)
        ORDER BY r.rn LIMIT $2::int
        FOR UPDATE OF q, j SKIP LOCKED
    ), qu AS (
        UPDATE job_queue q SET worker_id = $1, fence = q.fence + 1 FROM c WHERE q.job_id = c.job_id
        RETURNING q.job_id, q.fence, q.tenant_id, q.user_id, q.cost_units
    ), charged AS (
        INSERT INTO fair_usage AS f (tenant_id, user_id, claimer, units, at)
        SELECT tenant_id, user_id, $1, sum(cost_units), now() FROM qu GROUP BY tenant_id, user_id HAVING sum(cost_units) > 0
        UNION ALL
        SELECT tenant_id, '', $1, sum(cost_units), now() FROM qu GROUP BY tenant_id HAVING sum(cost_units) > 0
        ON CONFLICT (tenant_id, user_id, claimer) DO UPDATE SET units = \(decayed("f", halfLife: "$6")) + EXCLUDED.units, at = now()
    ), u AS (
        UPDATE jobs j SET status = 'processing', stage = 'script_expansion',
            message = 'claimed by ' || $1 || CASE WHEN j.retry_count > 0 THEN ' (attempt ' || (j.retry_count + 1) || ')' ELSE '' END,
            worker_id = $1, fence = qu.fence,
            started_at = COALESCE(j.started_at, now()), last_event_seq = j.last_event_seq + 1, updated_at = now()
        FROM qu WHERE j.id = qu.job_id AND j.status = 'queued'
        RETURNING j.*
    ), ev AS (
        INSERT INTO job_events (job_id, seq, status, stage, progress, message, dead_lettered, at)
        SELECT id, last_event_seq, status, stage, progress, message, dead_lettered, updated_at FROM u
    )
    SELECT \(jobColumns), (extract(epoch FROM updated_at) * 1000)::int8 FROM u
    JOIN ordered ON ordered.job_id = u.id ORDER BY ordered.rn
    """

    /// A `fair_usage` row's units decayed to now with the half-life `halfLife` (a parameter, in
    /// seconds). The exponent is bounded: `exp` of a large negative number is an error in
    /// PostgreSQL, not 0.
    static func decayed(_ f: String, halfLife: String) -> String {
        "\(f).units * exp(greatest(-40, -0.6931471805599453 * extract(epoch FROM now() - \(f).at) / \(halfLife)::float8))"
    }

    /// The fair-share order by cost (issue #17 item 3), the one rule for both a worker's claim
    /// and a provider's next account slot: CTEs `usage`, `by_user`, `ranked` and `ordered`
    /// (`job_id`, `rn`: 1 goes first; `limit` rows at most) over a CTE `cand` of candidate
    /// jobs (`job_id, tenant_id, user_id, priority_key, cost_units`).
    /// - a candidate's place in its user's line: the user's decayed cost so far (`fair_usage`)
    ///   plus the expected cost of the user's candidates ahead of it (by `priority_key`);
    /// - its place in its tenant's line: the tenant's decayed cost plus the cost of the tenant's
    ///   candidates ahead of it (ordered by their users' places), divided by `tenants.weight`;
    /// - the order: (tenant place, user place, rank within the user, `priority_key`).
    /// So the tenant with the least weighted cost goes next, its user with the least cost within
    /// the tenant, and `priority_key` orders one user's jobs; with costs all equal (or 0) it is
    /// round-robin. `discountWaiting`: the candidates' own cost is already in the usage (it was
    /// counted when they were claimed) and is taken out again, so the usage is the cost that
    /// went ahead of them (the provider-slot waiters: claimed, not yet at the provider).
    static func fairOrder(halfLife: String, limit: String, discountWaiting: Bool) -> String {
        func consumed(_ usage: String, _ partition: String) -> String {
            discountWaiting
                ? "greatest(0, COALESCE(\(usage).units, 0) - sum(c.cost_units) OVER (PARTITION BY \(partition)))"
                : "COALESCE(\(usage).units, 0)"
        }
        return """
        usage AS (
            SELECT f.tenant_id, f.user_id, sum(\(decayed("f", halfLife: halfLife))) AS units FROM fair_usage f
            WHERE (f.tenant_id, f.user_id) IN (SELECT tenant_id, user_id FROM cand UNION SELECT tenant_id, '' FROM cand)
            GROUP BY f.tenant_id, f.user_id
        ), by_user AS (
            SELECT c.*, row_number() OVER w AS user_rank,
                   \(consumed("u", "c.tenant_id, c.user_id"))
                     + COALESCE(sum(c.cost_units) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS user_place,
                   \(consumed("t", "c.tenant_id")) AS tenant_used
            FROM cand c LEFT JOIN usage u ON u.tenant_id = c.tenant_id AND u.user_id = c.user_id
            LEFT JOIN usage t ON t.tenant_id = c.tenant_id AND t.user_id = ''
            WINDOW w AS (PARTITION BY c.tenant_id, c.user_id ORDER BY c.priority_key, c.job_id)
        ), ranked AS (
            SELECT b.job_id, b.user_place, b.user_rank, b.priority_key,
                   (b.tenant_used + COALESCE(sum(b.cost_units) OVER (
                        PARTITION BY b.tenant_id ORDER BY b.user_place, b.user_rank, b.priority_key, b.job_id
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)) / COALESCE(tw.weight, 1) AS tenant_place
            FROM by_user b LEFT JOIN tenants tw ON tw.tenant_id = b.tenant_id
        ), ordered AS (
            SELECT job_id, row_number() OVER (ORDER BY tenant_place, user_place, user_rank, priority_key, job_id) AS rn FROM ranked
            -- Bounded (and so estimated small), a join with it probes an index, not scans a table.
            ORDER BY rn LIMIT \(limit)
        )
        """
    }

    /// Delayed jobs (and retries backing off) whose time has come leave `waiting` and join the
    /// ready indexes, `$1` at most. Answers how many, and in how many ms the next waiting job is
    /// due (0 or less when more are due already; NULL when none waits), by the database's clock.
    static let promoteDueJobs = """
    WITH due AS (
        SELECT job_id FROM job_queue WHERE waiting AND run_at <= now() ORDER BY run_at LIMIT $1::int FOR UPDATE SKIP LOCKED
    ), p AS (
        UPDATE job_queue q SET waiting = false FROM due WHERE q.job_id = due.job_id RETURNING 1
    )
    SELECT (SELECT count(*) FROM p),
           (SELECT ceil(extract(epoch FROM min(run_at) - now()) * 1000)::int8 FROM job_queue
            WHERE waiting AND job_id NOT IN (SELECT job_id FROM due))
    """

    /// Usage rows that have decayed to nothing ($1: the half-life in seconds; 20 half-lives).
    static let pruneFairUsage = "DELETE FROM fair_usage WHERE at < now() - make_interval(secs => 20 * $1::float8)"

    /// A worker's heartbeat (`PostgresJobStore.workerHeartbeat`, one transaction): the lease row
    /// made if missing and locked; if it had lapsed, what the worker held is requeued; then the
    /// lease is extended.
    static let ensureWorkerLease = "INSERT INTO worker_leases (worker_id, expires_at) VALUES ($1, '-infinity') ON CONFLICT DO NOTHING"
    static let lockWorkerLease = "SELECT expires_at > now() FROM worker_leases WHERE worker_id = $1 FOR UPDATE"
    static let takeWorkerLease = """
    INSERT INTO worker_leases (worker_id, expires_at) VALUES ($1, now() + make_interval(secs => $2::int8 / 1000.0))
    ON CONFLICT (worker_id) DO UPDATE SET expires_at = EXCLUDED.expires_at
    """
    /// Leases of workers long gone that hold nothing any more.
    static let pruneWorkerLeases = """
    DELETE FROM worker_leases l WHERE l.expires_at < now() - interval '1 minute'
      AND NOT EXISTS (SELECT 1 FROM job_queue q WHERE q.worker_id = l.worker_id)
    """

    /// Running jobs whose worker's lease has run out ($2 = true), that this worker hands back
    /// ($1 prefix), or that one worker held when its lease lapsed ($5): back to the queue, the
    /// attempt counted ($3) or not.
    static let requeueLeases = """
    WITH x AS (
        SELECT q.job_id FROM job_queue q
        WHERE q.worker_id IS NOT NULL
          AND (($2::bool AND NOT EXISTS (SELECT 1 FROM worker_leases l WHERE l.worker_id = q.worker_id AND l.expires_at > now()))
               OR ($1::text IS NOT NULL AND q.worker_id LIKE $1 || '%') OR q.worker_id = $5::text)
        ORDER BY q.job_id LIMIT 500 FOR UPDATE OF q SKIP LOCKED
    ), u AS (
        UPDATE jobs j SET status = 'queued', stage = 'pending',
            message = CASE WHEN $3::bool THEN 'lease of ' || j.worker_id || ' expired; requeued'
                           ELSE 'handed back by ' || j.worker_id || ' at shutdown; requeued' END,
            retry_count = j.retry_count + CASE WHEN $3::bool THEN 1 ELSE 0 END,
            run_at = now(), last_event_seq = j.last_event_seq + 1, updated_at = now()
        FROM x WHERE j.id = x.job_id AND j.status = ANY($4::text[])
        RETURNING j.*
    ), qu AS (
        UPDATE job_queue q SET worker_id = NULL, run_at = u.run_at FROM u WHERE q.job_id = u.id
    ), ev AS (
        INSERT INTO job_events (job_id, seq, status, stage, progress, message, dead_lettered, at)
        SELECT id, last_event_seq, status, stage, progress, message, dead_lettered, updated_at FROM u
    )
    SELECT \(jobColumns), (extract(epoch FROM updated_at) * 1000)::int8 FROM u
    """

    /// Finalization of many jobs in one statement (DESIGN §5): each job held by its worker
    /// gets its segment (once per job), the scene counters move once per scene for all of its
    /// jobs in the batch (each job gets its own bible version, in job-id order), the job goes
    /// to `final_ready` with its event, and leaves the queue. Scenes and jobs are locked in key
    /// order first, so batches never deadlock. Per job ($1–$6): id, worker, fence (NULL: any
    /// claim), video and thumbnail URLs, duration; $7 the statuses final_ready may follow,
    /// $8–$11 the final state. Answers the jobs finalized; a job missing was refused.
    static let finalizeJobs = """
    WITH input AS (
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::float8[])
            AS t(id, worker, fence, video_url, thumbnail_url, duration)
    ), locked AS (
        SELECT j.id, j.tenant_id, j.scene_id, j.expanded_script, i.video_url, i.thumbnail_url, i.duration
        FROM jobs j JOIN input i ON i.id = j.id
        WHERE j.status = ANY($7::text[]) AND \(heldBy(worker: "i.worker", fence: "i.fence", alias: "j"))
        ORDER BY j.id FOR UPDATE OF j
    ), budgets_locked AS (
        -- The settlement trigger updates the tenants' budgets: locked here in tenant order, before
        -- the scenes (creates lock budgets, then insert scenes), so batches never deadlock.
        SELECT b.tenant_id FROM tenant_budgets b WHERE b.tenant_id IN (SELECT tenant_id FROM locked)
        ORDER BY b.tenant_id FOR NO KEY UPDATE OF b
    ), scenes_locked AS (
        SELECT s.tenant_id, s.id FROM scenes s
        WHERE (s.tenant_id, s.id) IN (SELECT tenant_id, scene_id FROM locked) AND (SELECT count(*) FROM budgets_locked) >= 0
        ORDER BY s.tenant_id, s.id FOR NO KEY UPDATE OF s
    ), seg AS (
        INSERT INTO segments (job_id, tenant_id, scene_id, video_url, thumbnail_url, duration_seconds, script)
        SELECT id, tenant_id, scene_id, video_url, thumbnail_url, duration, expanded_script FROM locked
        WHERE (SELECT count(*) FROM scenes_locked) >= 0
        ON CONFLICT (job_id) DO NOTHING
        RETURNING id, job_id, tenant_id, scene_id, video_url, thumbnail_url, duration_seconds
    ), per_scene AS (
        SELECT tenant_id, scene_id, count(*)::int AS n, sum(duration_seconds) AS total FROM seg GROUP BY tenant_id, scene_id
    ), sc AS (
        UPDATE scenes s SET segment_count = s.segment_count + p.n, total_duration_seconds = s.total_duration_seconds + p.total,
            bible_version = s.bible_version + p.n, updated_at = now()
        FROM per_scene p WHERE s.tenant_id = p.tenant_id AND s.id = p.scene_id
        RETURNING s.tenant_id, s.id, s.bible_version - p.n AS base
    ), numbered AS (
        SELECT seg.*, row_number() OVER (PARTITION BY seg.tenant_id, seg.scene_id ORDER BY seg.job_id) AS rn FROM seg
    ), u AS (
        UPDATE jobs j SET status = $8, stage = $9, progress = $10::int, message = $11,
            result_segment_id = n.id::text, result_video_url = n.video_url, result_thumbnail_url = n.thumbnail_url,
            result_duration_seconds = n.duration_seconds, result_bible_version = sc.base + n.rn,
            completed_at = now(), last_event_seq = j.last_event_seq + 1, updated_at = now()
        FROM numbered n JOIN sc ON sc.tenant_id = n.tenant_id AND sc.id = n.scene_id
        WHERE j.id = n.job_id
        RETURNING j.*
    ), qd AS (
        DELETE FROM job_queue q USING u WHERE q.job_id = u.id
    ), ev AS (
        INSERT INTO job_events (job_id, seq, status, stage, progress, message, dead_lettered, at)
        SELECT id, last_event_seq, status, stage, progress, message, dead_lettered, updated_at FROM u
    )
    SELECT \(jobColumns), (extract(epoch FROM updated_at) * 1000)::int8 FROM u
    """

    static let segmentCount = "SELECT count(*) FROM segments WHERE job_id = $1::uuid"

    /// A new bible version: the scene is created at version 1 or moves to the next version.
    /// Scenes, their bibles and segments belong to a tenant ($3): two tenants' "s1" are two scenes.
    static let putSceneBible = """
    WITH s AS (
        INSERT INTO scenes (tenant_id, id, bible) VALUES ($3, $1, $2::jsonb)
        ON CONFLICT (tenant_id, id) DO UPDATE SET bible_version = scenes.bible_version + 1, bible = EXCLUDED.bible, updated_at = now()
        RETURNING id, bible_version, bible::text, segment_count, total_duration_seconds
    ), v AS (
        INSERT INTO scene_bibles (tenant_id, scene_id, version, bible) SELECT $3, id, bible_version, $2::jsonb FROM s
    )
    SELECT * FROM s
    """
    static let sceneByID = "SELECT id, bible_version, bible::text, segment_count, total_duration_seconds FROM scenes WHERE tenant_id = $2 AND id = $1"
    /// The newest bible at or before a version (finalization bumps versions without a new bible).
    static let bibleAtVersion = """
    SELECT bible::text FROM scene_bibles WHERE tenant_id = $3 AND scene_id = $1 AND version <= $2::int ORDER BY version DESC LIMIT 1
    """
    static let recentScripts = "SELECT script, job_id::text FROM segments WHERE tenant_id = $3 AND scene_id = $1 ORDER BY created_at DESC LIMIT $2::int"

    /// Ready-queue depth and the longest wait (since the job became runnable) per tier.
    static let queueStats = """
    SELECT tier, count(*), COALESCE(extract(epoch FROM now() - min(run_at)), 0)::float8
    FROM job_queue WHERE worker_id IS NULL AND NOT waiting AND run_at <= now() GROUP BY tier
    """
    static let ping = "SELECT 1"

    /// reeld processes alive on this database (the event trigger NOTIFYs only while there are two or more).
    /// Every few seconds, so it also does the housekeeping: instances long gone, and the
    /// first-job-of-the-day rows of days past.
    static let touchInstance = """
    WITH gone AS (DELETE FROM reel_instances WHERE last_seen < now() - interval '1 hour'),
         past_days AS (DELETE FROM user_days WHERE day < current_date - 1)
    INSERT INTO reel_instances (id, slots) VALUES ($1, $2::int) ON CONFLICT (id) DO UPDATE SET last_seen = now(), slots = EXCLUDED.slots
    """
    static let liveInstances = "SELECT count(*) FROM reel_instances WHERE last_seen > now() - interval '30 seconds'"
    static let removeInstance = "DELETE FROM reel_instances WHERE id = $1"

    static let createKey = """
    INSERT INTO api_keys (tenant_id, key_hash, prefix, admin, rate_limit_per_second) VALUES ($1, $2, $3, $4::bool, $5::int)
    ON CONFLICT (key_hash) DO UPDATE SET revoked_at = NULL
    RETURNING id::text, tenant_id, prefix, admin, rate_limit_per_second, (extract(epoch FROM created_at) * 1000)::int8, revoked_at IS NOT NULL
    """
    static let keyByHash = """
    SELECT id::text, tenant_id, prefix, admin, rate_limit_per_second, (extract(epoch FROM created_at) * 1000)::int8, revoked_at IS NOT NULL
    FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL
    """
    static let listKeys = """
    SELECT id::text, tenant_id, prefix, admin, rate_limit_per_second, (extract(epoch FROM created_at) * 1000)::int8, revoked_at IS NOT NULL
    FROM api_keys WHERE ($1::text IS NULL OR tenant_id = $1) ORDER BY created_at
    """
    static let revokeKey = """
    UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1::uuid
    RETURNING id::text, tenant_id, prefix, admin, rate_limit_per_second, (extract(epoch FROM created_at) * 1000)::int8, revoked_at IS NOT NULL
    """

    static let heldByWorker = """
    SELECT q.job_id::text FROM job_queue q
    WHERE q.worker_id = $1 AND EXISTS (SELECT 1 FROM worker_leases l WHERE l.worker_id = $1 AND l.expires_at > now())
    """

    // MARK: provider tasks (DESIGN §5): attempts, account slots, callback tokens

    static let providerTaskColumns = "provider, job_id::text, attempt, external_task_id, task_id, kind, callback_token, live, status"
    static let latestProviderTask = """
    SELECT \(providerTaskColumns) FROM provider_tasks WHERE job_id = $1::uuid ORDER BY attempt DESC LIMIT 1
    """
    /// Taking one of the account's task slots is two statements in one round trip and one
    /// transaction: this lock on the provider's slots, then `acquireProviderSlot`, which then
    /// sees every slot taken or freed before it.
    static let lockProviderSlots = "SELECT pg_advisory_xact_lock(hashtext('reel.provider_slots'), hashtext($1))"
    /// A slot for attempt $3 of job $2 at provider $1 ($4 external id, $5 kind, $6 callback
    /// token; $7 the cap, lowered by `provider_limits` while another client holds slots; $8 the
    /// fair-share half-life in seconds). When the job already holds it: yes. When slots are
    /// free, they go in fair-share order by cost (issue #17 item 3, `fairOrder`) among the jobs
    /// waiting for one (`provider_slot_waiters`, each seen within the last 5 s — a waiter asks
    /// again at least every second, so one whose reeld died drops out), so the job gets a slot
    /// only when its place in that order is within the free slots. Otherwise it is (still) a
    /// waiter. Answers whether the job holds the slot now. Waiters gone a minute are cleared.
    static let acquireProviderSlot = """
    WITH held AS (
        SELECT 1 FROM provider_tasks WHERE job_id = $2::uuid AND attempt = $3::int AND live AND provider = $1
    ), room AS (
        SELECT least($7::int, COALESCE((SELECT l.cap FROM provider_limits l WHERE l.provider = $1 AND l.until > now()), $7::int))
               - (SELECT count(*) FROM provider_tasks t WHERE t.provider = $1 AND t.live) AS free
    ), cand AS (
        SELECT q.job_id, q.tenant_id, q.user_id, q.priority_key, q.cost_units
        FROM provider_slot_waiters w JOIN job_queue q ON q.job_id = w.job_id
        WHERE w.provider = $1 AND w.seen_at > now() - interval '5 seconds'
        UNION
        SELECT job_id, tenant_id, user_id, priority_key, cost_units FROM job_queue WHERE job_id = $2::uuid
    ), \(fairOrder(halfLife: "$8", limit: "1000", discountWaiting: true)), granted AS (
        INSERT INTO provider_tasks (job_id, attempt, provider, external_task_id, kind, callback_token, live, status)
        SELECT $2::uuid, $3::int, $1, $4, $5, $6, true, 'pending'
        WHERE NOT EXISTS (SELECT 1 FROM held)
          AND COALESCE((SELECT rn FROM ordered WHERE job_id = $2::uuid), 1) <= (SELECT free FROM room)
        -- An attempt that made no task yet may move to another provider (routing, DESIGN §5).
        ON CONFLICT (job_id, attempt) DO UPDATE SET live = true, updated_at = now(),
            provider = CASE WHEN provider_tasks.task_id = '' THEN EXCLUDED.provider ELSE provider_tasks.provider END,
            kind = CASE WHEN provider_tasks.task_id = '' THEN EXCLUDED.kind ELSE provider_tasks.kind END
        RETURNING 1
    ), waiting AS (
        INSERT INTO provider_slot_waiters (provider, job_id, seen_at)
        SELECT $1, $2::uuid, now() WHERE NOT EXISTS (SELECT 1 FROM held) AND NOT EXISTS (SELECT 1 FROM granted)
        ON CONFLICT (provider, job_id) DO UPDATE SET seen_at = now()
    ), cleared AS (
        DELETE FROM provider_slot_waiters w
        WHERE w.provider = $1 AND CASE WHEN w.job_id = $2::uuid THEN EXISTS (SELECT 1 FROM held) OR EXISTS (SELECT 1 FROM granted)
                                       ELSE w.seen_at < now() - interval '1 minute' END
    )
    SELECT EXISTS (SELECT 1 FROM held) OR EXISTS (SELECT 1 FROM granted)
    """
    /// A job no longer waits for a slot at provider $1 (it was cancelled, or gave up).
    static let leaveProviderSlotQueue = "DELETE FROM provider_slot_waiters WHERE provider = $1 AND job_id = $2::uuid"
    static let releaseProviderSlot = """
    UPDATE provider_tasks SET live = false, updated_at = now() WHERE job_id = $1::uuid AND attempt = $2::int
    """
    static let recordProviderTaskID = """
    UPDATE provider_tasks SET task_id = $3, kind = $4, status = 'submitted', updated_at = now()
    WHERE job_id = $1::uuid AND attempt = $2::int
    """
    /// The attempt ended ($3 how); $4 the provider's charge for it if it said (Kling's
    /// `final_unit_deduction`), recorded once per attempt and added, times the weight $5, to the
    /// job's `cost_units` in the same statement (a failed task the provider charged still costs).
    /// Answers the charge added (none: no row).
    static let endProviderTask = """
    WITH before AS (
        SELECT cost_units FROM provider_tasks WHERE job_id = $1::uuid AND attempt = $2::int FOR UPDATE
    ), t AS (
        UPDATE provider_tasks SET live = false, status = $3, cost_units = COALESCE(cost_units, $4::float8), updated_at = now()
        WHERE job_id = $1::uuid AND attempt = $2::int AND EXISTS (SELECT 1 FROM before)
        RETURNING provider
    ), j AS (
        UPDATE jobs SET cost_units = cost_units + $4::float8 * $5::float8, provider = t.provider
        FROM t WHERE jobs.id = $1::uuid AND $4::float8 IS NOT NULL AND (SELECT cost_units FROM before) IS NULL
        RETURNING jobs.tenant_id, jobs.user_id, $4::float8 * $5::float8
    )
    SELECT * FROM j
    """
    static let providerTaskByToken = "SELECT \(providerTaskColumns) FROM provider_tasks WHERE callback_token = $1"
    static let liveProviderTasks = "SELECT count(*) FROM provider_tasks WHERE provider = $1 AND live"
    static let limitProviderCap = """
    INSERT INTO provider_limits (provider, cap, until) VALUES ($1, $2::int, now() + make_interval(secs => $3::int8 / 1000.0))
    ON CONFLICT (provider) DO UPDATE SET cap = EXCLUDED.cap, until = EXCLUDED.until
    """
    /// Live tasks whose job no longer follows them: the job ended or was cancelled, or a newer
    /// attempt exists.
    static let unfollowedProviderTasks = """
    SELECT \(providerTaskColumns.split(separator: ",").map { "t." + $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", "))
    FROM provider_tasks t JOIN jobs j ON j.id = t.job_id
    WHERE t.provider = $1 AND t.live
      AND (j.status IN ('cancelled', 'final_ready') OR (j.status = 'failed' AND j.dead_lettered)
           OR EXISTS (SELECT 1 FROM provider_tasks n WHERE n.job_id = t.job_id AND n.attempt > t.attempt))
    ORDER BY t.updated_at LIMIT $2::int
    """

    /// The queue as the ETA sees it: the first `$1` runnable queued jobs in key order, then the
    /// counts of runnable queued and of running jobs (one scan of the narrow `job_queue`) and
    /// the worker slots of the live instances.
    static let queueOrder = """
    SELECT job_id::text FROM job_queue WHERE worker_id IS NULL AND run_at <= now() ORDER BY priority_key LIMIT $1::int
    """
    static let queueCounts = """
    SELECT count(*) FILTER (WHERE worker_id IS NULL AND run_at <= now()), count(*) FILTER (WHERE worker_id IS NOT NULL),
           (SELECT COALESCE(sum(slots), 0) FROM reel_instances WHERE last_seen > now() - interval '30 seconds')
    FROM job_queue
    """

    // MARK: completion webhooks (DESIGN §8): the outbox `webhook_deliveries` (migration 15)

    /// Claims due deliveries ($1 at most) for one attempt each, pushing their next attempt $2 ms
    /// away so that no other reeld takes them meanwhile. Answers the delivery's columns (7), then
    /// the job: the stored row while it is still at the seq it ended with, else the snapshot.
    static let claimWebhookDeliveries = """
    WITH c AS (
        SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= now()
        ORDER BY next_attempt_at LIMIT $1::int FOR UPDATE SKIP LOCKED
    ), u AS (
        UPDATE webhook_deliveries d SET attempts = d.attempts + 1, last_attempt_at = now(),
            next_attempt_at = now() + make_interval(secs => $2::int8 / 1000.0)
        FROM c WHERE d.id = c.id
        RETURNING d.*
    )
    SELECT u.id::text, u.url, u.attempts, (extract(epoch FROM u.created_at) * 1000)::int8, u.body, t.webhook_secret,
           u.job_id::text, j.*
    FROM u LEFT JOIN tenants t ON t.tenant_id = u.tenant_id
    CROSS JOIN LATERAL (
        SELECT \(jobColumns) FROM (
            SELECT 0 AS pick, * FROM jobs WHERE id = u.job_id AND last_event_seq = u.event_seq
            UNION ALL
            SELECT 1, * FROM jsonb_populate_record(NULL::jobs, u.snapshot)
        ) r ORDER BY pick LIMIT 1
    ) j
    """
    /// The outcome of attempt $2 of delivery $1: $3 the new state, $4 the HTTP status (NULL:
    /// none), $5 the error, $6 the body sent, $7 ms until the next attempt (pending only) — and,
    /// in the same statement, the job's next event (DESIGN §2: dense seq, `last_event_seq`)
    /// telling it: message $8, with "; next attempt at <UTC time>" for one that will be retried.
    /// The event copies the job's status, stage and progress, so it changes no state: neither the
    /// outbox trigger (a status change) nor the budget settlement (nothing left to settle) fires.
    /// Answers the outbox row's state, then the event (NULLs: the job is gone); no row for a stale attempt.
    static let finishWebhookDelivery = """
    WITH d AS (
        UPDATE webhook_deliveries SET state = $3, last_status = $4::int, last_error = $5, body = COALESCE(body, $6),
            next_attempt_at = CASE WHEN $3 = 'pending' THEN now() + make_interval(secs => $7::int8 / 1000.0) ELSE next_attempt_at END,
            finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END
        WHERE id = $1::uuid AND attempts = $2::int AND state = 'pending'
        RETURNING job_id, state, next_attempt_at
    ), u AS (
        UPDATE jobs j SET last_event_seq = j.last_event_seq + 1, updated_at = now()
        FROM d WHERE j.id = d.job_id
        RETURNING j.id, j.last_event_seq, j.status, j.stage, j.progress, j.dead_lettered, j.updated_at,
            $8::text || CASE WHEN d.state = 'pending'
                THEN '; next attempt at ' || to_char(d.next_attempt_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                ELSE '' END AS message
    ), e AS (
        INSERT INTO job_events (job_id, seq, status, stage, progress, message, dead_lettered, at)
        SELECT id, last_event_seq, status, stage, progress, message, dead_lettered, updated_at FROM u
        RETURNING \(eventColumns)
    )
    SELECT d.state, e.* FROM d LEFT JOIN e ON true
    """
    static let webhookDeliveriesOfJob = """
    SELECT id::text, job_id::text, url, job_status, state, attempts, COALESCE(last_status, 0), last_error,
           (extract(epoch FROM created_at) * 1000)::int8, COALESCE((extract(epoch FROM last_attempt_at) * 1000)::int8, 0),
           CASE WHEN state = 'pending' THEN (extract(epoch FROM next_attempt_at) * 1000)::int8 ELSE 0 END,
           COALESCE((extract(epoch FROM finished_at) * 1000)::int8, 0)
    FROM webhook_deliveries WHERE job_id = $1::uuid ORDER BY created_at, id
    """
    static let pendingWebhookDeliveries = "SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'"
    /// A tenant's completion-webhook signing secret, set only if it has none yet: answers a row
    /// when this call set it (the tenant's first key).
    static let makeWebhookSecret = """
    INSERT INTO tenants (tenant_id, webhook_secret) VALUES ($1, $2)
    ON CONFLICT (tenant_id) DO UPDATE SET webhook_secret = EXCLUDED.webhook_secret WHERE tenants.webhook_secret IS NULL
    RETURNING webhook_secret
    """

    // MARK: retention (issue #17 item 7): small batches, short transactions

    /// The next $2 jobs that ended (`completed_at`, set by the terminal transition and cleared
    /// by a retry) more than $1 days ago, after the cursor, in the order they ended (the
    /// `jobs_completed` index, migration 18): the cursor for each (`completed_at|id`), whether
    /// it is terminal, whether it may go (failed dead-lettered or cancelled, no segment), and
    /// its segment's URLs. A job still running at one pass has no `completed_at` yet; when it
    /// ends (again, after a retry) it gets one later than any cursor, so a later pass sees it.
    static let retentionBatch = """
    WITH cur AS (
        SELECT COALESCE(r.completed_at, '-infinity'::timestamptz) AS completed_at,
               COALESCE(r.job_id, '00000000-0000-0000-0000-000000000000'::uuid) AS job_id
        FROM (SELECT 1) one LEFT JOIN retention_cursor r ON r.id = 1
    ), b AS (
        -- The row comparison against two scalars is an index condition: a batch starts at the
        -- cursor, never re-reading the index entries of the jobs passes went past.
        SELECT j.id, j.completed_at, j.status, j.dead_lettered FROM jobs j
        WHERE j.completed_at IS NOT NULL AND j.completed_at < now() - make_interval(days => $1::int)
          AND (j.completed_at, j.id) > ((SELECT completed_at FROM cur), (SELECT job_id FROM cur))
        ORDER BY j.completed_at, j.id LIMIT $2::int
    )
    SELECT b.id::text, b.completed_at::text || '|' || b.id::text,
           (b.status IN ('final_ready', 'cancelled') OR (b.status = 'failed' AND b.dead_lettered))::text,
           (b.status = 'cancelled' OR (b.status = 'failed' AND b.dead_lettered)) AND s.id IS NULL,
           s.video_url, s.thumbnail_url
    FROM b LEFT JOIN segments s ON s.job_id = b.id
    ORDER BY b.completed_at, b.id
    """
    static let saveRetentionCursor = """
    INSERT INTO retention_cursor (id, completed_at, job_id) VALUES (1, $1::timestamptz, $2::uuid)
    ON CONFLICT (id) DO UPDATE SET completed_at = EXCLUDED.completed_at, job_id = EXCLUDED.job_id
    """
    /// The first statement of a prune of events (one short transaction per few jobs, with
    /// `pruneEvents`, `renumberEventsDown` and `renumberEventsUp`): locks those of jobs $1 that
    /// are still terminal and ended more than $2 days ago (a job retried meanwhile is left alone:
    /// its writers wait on this lock, then go on from the renumbered `last_event_seq`).
    static let lockPrunableJobs = """
    SELECT id::text FROM jobs
    WHERE id = ANY($1::uuid[]) AND (status IN ('final_ready', 'cancelled') OR (status = 'failed' AND dead_lettered))
      AND completed_at < now() - make_interval(days => $2::int)
    ORDER BY id FOR NO KEY UPDATE
    """
    /// The events of jobs $1 that change neither status nor dead-lettering from the event
    /// before them (a job's first event always stays): deleted, answering how many.
    static let pruneEvents = """
    WITH e AS (
        SELECT job_id, seq,
               lag(status) OVER w IS NULL OR status <> lag(status) OVER w OR dead_lettered <> lag(dead_lettered) OVER w AS transition
        FROM job_events WHERE job_id = ANY($1::uuid[])
        WINDOW w AS (PARTITION BY job_id ORDER BY seq)
    ), gone AS (
        DELETE FROM job_events x USING e WHERE x.job_id = e.job_id AND x.seq = e.seq AND NOT e.transition RETURNING 1
    )
    SELECT count(*) FROM gone
    """
    /// DESIGN §2: `seq` stays dense over the events that exist. The events of jobs $1 that are
    /// not at their rank (1, 2, 3 … in seq order) move to minus their rank (no clash with the
    /// unique (job_id, seq) on the way), and a webhook delivery naming one of them follows it.
    static let renumberEventsDown = """
    WITH r AS (
        SELECT job_id, seq, row_number() OVER (PARTITION BY job_id ORDER BY seq) AS rn
        FROM job_events WHERE job_id = ANY($1::uuid[])
    ), w AS (
        UPDATE webhook_deliveries d SET event_seq = r.rn FROM r
        WHERE d.job_id = r.job_id AND d.event_seq = r.seq AND r.seq <> r.rn
    ), m AS (
        UPDATE job_events e SET seq = -r.rn FROM r WHERE e.job_id = r.job_id AND e.seq = r.seq AND r.seq <> r.rn
        RETURNING e.job_id
    )
    SELECT count(DISTINCT job_id) FROM m
    """
    /// Then back to their rank, and each job's `last_event_seq` to its number of events (the
    /// seq of its last one). Answers how many jobs' `last_event_seq` changed.
    static let renumberEventsUp = """
    WITH up AS (
        UPDATE job_events SET seq = -seq WHERE job_id = ANY($1::uuid[]) AND seq < 0 RETURNING job_id
    ), n AS (
        SELECT job_id, count(*) AS k FROM job_events WHERE job_id = ANY($1::uuid[]) GROUP BY job_id
    ), j AS (
        UPDATE jobs SET last_event_seq = n.k FROM n WHERE jobs.id = n.job_id AND jobs.last_event_seq <> n.k RETURNING 1
    )
    SELECT (SELECT count(*) FROM j)
    """
    /// Jobs $1 that are (still) failed dead-lettered or cancelled, with no segment, no queue row
    /// and no pending webhook delivery, go with their events and deliveries (provider_tasks
    /// cascade). Locked rows are skipped: the next pass gets them.
    static let deleteRetainedJobs = """
    WITH j AS (
        SELECT id FROM jobs
        WHERE id = ANY($1::uuid[]) AND (status = 'cancelled' OR (status = 'failed' AND dead_lettered))
          AND NOT EXISTS (SELECT 1 FROM segments s WHERE s.job_id = jobs.id)
          AND NOT EXISTS (SELECT 1 FROM job_queue q WHERE q.job_id = jobs.id)
          AND NOT EXISTS (SELECT 1 FROM webhook_deliveries w WHERE w.job_id = jobs.id AND w.state = 'pending')
        ORDER BY id FOR UPDATE SKIP LOCKED
    ), ev AS (
        DELETE FROM job_events e USING j WHERE e.job_id = j.id RETURNING 1
    ), wh AS (
        DELETE FROM webhook_deliveries w USING j WHERE w.job_id = j.id RETURNING 1
    ), del AS (
        DELETE FROM jobs x USING j WHERE x.id = j.id RETURNING 1
    )
    SELECT (SELECT count(*) FROM del), (SELECT count(*) FROM ev), (SELECT count(*) FROM wh)
    """
    static let pruneWebhookDeliveries = """
    WITH gone AS (
        DELETE FROM webhook_deliveries WHERE id IN (
            SELECT id FROM webhook_deliveries
            WHERE state <> 'pending' AND finished_at < now() - make_interval(days => $1::int) LIMIT $2::int)
        RETURNING 1
    )
    SELECT count(*) FROM gone
    """
}

extension SQL {
    // MARK: tenant budgets (DESIGN §2 "Budgets")

    static let budgetColumns = """
    tenant_id, limit_units, spent_units, reserved_units, (extract(epoch FROM period_start) * 1000)::int8, period_seconds
    """
    /// A new budget's period starts now; an existing one keeps its period start (rolled over if
    /// passed), its spending and its reservations, and takes the new limit and period length.
    static let setBudget = """
    INSERT INTO tenant_budgets AS b (tenant_id, limit_units, period_seconds, period_start)
    VALUES ($1, $2::float8, $3::int8, now())
    ON CONFLICT (tenant_id) DO UPDATE SET limit_units = EXCLUDED.limit_units, period_seconds = EXCLUDED.period_seconds,
        spent_units = CASE WHEN reel_budget_period(b.period_start, b.period_seconds) > b.period_start THEN 0 ELSE b.spent_units END,
        period_start = reel_budget_period(b.period_start, b.period_seconds)
    RETURNING \(budgetColumns)
    """
    /// The budget as of now: a period that has passed reads as rolled over (spent 0).
    static let budgetByTenant = """
    SELECT tenant_id, limit_units,
           CASE WHEN reel_budget_period(period_start, period_seconds) > period_start THEN 0 ELSE spent_units END,
           reserved_units, (extract(epoch FROM reel_budget_period(period_start, period_seconds)) * 1000)::int8, period_seconds
    FROM tenant_budgets WHERE tenant_id = $1
    """

    /// A tenant's fair-share weight (`tenants.weight`, read by `fairOrder`).
    static let setTenantWeight = """
    INSERT INTO tenants (tenant_id, weight) VALUES ($1, $2::float8)
    ON CONFLICT (tenant_id) DO UPDATE SET weight = EXCLUDED.weight
    RETURNING weight
    """
    static let tenantWeight = "SELECT weight FROM tenants WHERE tenant_id = $1"
}
