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
    last_event_seq, tenant_id, provider_request_id
    """

    /// The event columns in the order `JobRow.decodeEvent` reads them.
    static let eventColumns = "job_id::text, seq, status, stage, progress, message, (extract(epoch FROM at) * 1000)::int8, dead_lettered"

    static let migrationsTable = "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    static let migrationLock = "SELECT pg_advisory_xact_lock(7365726565)"
    static let appliedVersions = "SELECT version FROM schema_migrations"
    static let recordMigration = "INSERT INTO schema_migrations (version, name) VALUES ($1::int, $2)"

    /// `createJob`, for one call or a batch of concurrent ones (`GroupCommit`): one statement,
    /// one commit, one fsync shared by all. Inputs come as parallel arrays ($1…$15, `ord` = the
    /// position in the batch), the initial state (`JobStatus.initial`) as $16…$19; insert-or-nothing on (tenant, user, idempotency key), event seq 1
    /// in the same statement. A user's first job today is the first of theirs in the batch whose
    /// statement inserts the user's `user_days` row for today: the unique key makes that true
    /// for exactly one create however many batches run at once, and later creates that day
    /// conflict with a committed row, which takes no lock. Missing scenes are inserted without locking existing ones (a scene
    /// another transaction is creating this instant starts at version 1, as every scene does).
    static let createJobs = """
    WITH input AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[],
                             $8::text[], $9::text[], $10::text[], $11::int[], $12::int8[], $13::int8[], $14::text[], $15::int[])
            AS t(user_id, scene_id, type, input_text, target_duration_seconds, quality, model, style_overrides,
                 idempotency_key, tier, max_retries, first_key, later_key, tenant_id, ord)
    ), new_scenes AS (
        INSERT INTO scenes (tenant_id, id) SELECT DISTINCT tenant_id, scene_id FROM input
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
                          priority_key, tenant_id)
        SELECT i.user_id, i.scene_id, i.type, $16, $17, $18::int, $19, i.input_text,
               COALESCE((SELECT n.bible_version FROM new_scenes n WHERE n.tenant_id = i.tenant_id AND n.id = i.scene_id),
                        (SELECT s.bible_version FROM scenes s WHERE s.tenant_id = i.tenant_id AND s.id = i.scene_id), 1),
               i.target_duration_seconds, i.quality, i.model, i.style_overrides::jsonb, i.idempotency_key, i.tier, i.max_retries,
               CASE WHEN NOT EXISTS (SELECT 1 FROM first_today f WHERE f.user_id = i.user_id AND f.tenant_id = i.tenant_id)
                      OR EXISTS (SELECT 1 FROM input e WHERE e.user_id = i.user_id AND e.tenant_id = i.tenant_id AND e.ord < i.ord)
                    THEN i.later_key ELSE i.first_key END,
               i.tenant_id
        FROM input i ORDER BY i.ord
        ON CONFLICT (tenant_id, user_id, idempotency_key) DO NOTHING
        RETURNING *
    ), ev AS (
        INSERT INTO job_events (job_id, seq, status, stage, progress, message, at)
        SELECT id, 1, status, stage, progress, message, created_at FROM ins
        RETURNING \(eventColumns)
    )
    SELECT j.*, ev.* FROM (SELECT \(jobColumns) FROM ins) j JOIN ev ON ev.job_id = j.id
    """

    static let jobByIdempotencyKey = "SELECT \(jobColumns) FROM jobs WHERE user_id = $1 AND idempotency_key = $2 AND tenant_id = $3"
    static let jobByID = "SELECT \(jobColumns) FROM jobs WHERE id = $1::uuid"
    static let statusByID = "SELECT status, worker_id, (lease_expires_at > now())::text FROM jobs WHERE id = $1::uuid"

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

    /// A state change and its event in one statement. Conditions: the current status is one
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
            lease_expires_at = CASE WHEN $27::bool THEN lease_expires_at ELSE NULL END,
            completed_at = CASE WHEN $28::bool THEN now() ELSE NULL END,
            last_event_seq = last_event_seq + 1,
            updated_at = now()
        WHERE id = $1::uuid AND status = ANY($6::text[])
          AND ($7::text IS NULL OR (worker_id = $7 AND lease_expires_at > now()))
        RETURNING *
    ), ev AS (
        INSERT INTO job_events (job_id, seq, status, stage, progress, message, dead_lettered, at)
        SELECT id, last_event_seq, status, stage, progress, message, dead_lettered, updated_at FROM u
    )
    SELECT \(jobColumns), (extract(epoch FROM updated_at) * 1000)::int8 FROM u
    """

    /// A run of steps of one running job (`PostgresJobStore.isChain`) in one statement: the row
    /// takes the last step's state (`$4`–`$14`, artifacts of the last step that had them) once,
    /// and each step ($16–$19, in order) gets its event row with the next seq. The first step
    /// must be allowed from the stored status ($2) under the worker's unexpired lease ($3), as
    /// in `applyChange`; the steps after it were checked against the transition table by the
    /// caller. Answers one row per event: the job as it ends up, then the event's columns.
    static let applyChain = """
    WITH u AS (
        UPDATE jobs SET
            status = $4, stage = COALESCE($5, stage), progress = COALESCE($6::int, progress), message = $7,
            \(setArtifacts(requestIDParam: 20)),
            completed_at = NULL,
            last_event_seq = last_event_seq + $15::int,
            updated_at = now()
        WHERE id = $1::uuid AND status = ANY($2::text[]) AND worker_id = $3 AND lease_expires_at > now()
        RETURNING *
    ), ev AS (
        INSERT INTO job_events (job_id, seq, status, stage, progress, message, dead_lettered, at)
        SELECT u.id, u.last_event_seq - $15::int + e.ord, e.status, e.stage, e.progress, e.message, u.dead_lettered, u.updated_at
        FROM u, unnest($16::text[], $17::text[], $18::int[], $19::text[]) WITH ORDINALITY AS e(status, stage, progress, message, ord)
        RETURNING job_id, seq, status, stage, progress, message, at, dead_lettered
    )
    SELECT j.*, ev.job_id::text, ev.seq, ev.status, ev.stage, ev.progress, ev.message,
           (extract(epoch FROM ev.at) * 1000)::int8, ev.dead_lettered
    FROM (SELECT \(jobColumns) FROM u) j, ev ORDER BY ev.seq
    """

    /// Claims ready jobs for `$1`, `$2` at most, under a lease of `$3` ms. Fair first: every
    /// user's best ready job (a loose index scan over `jobs_ready_user`) goes ahead of any
    /// user's second, so one user's flood can't starve another's single job; the rest follow
    /// in plain `priority_key` order. SKIP LOCKED lets several claimers share the queue.
    static let claim = """
    WITH RECURSIVE users AS (
        (SELECT user_id FROM jobs WHERE status = 'queued' ORDER BY user_id LIMIT 1)
        UNION ALL
        SELECT (SELECT j.user_id FROM jobs j WHERE j.status = 'queued' AND j.user_id > u.user_id
                ORDER BY j.user_id LIMIT 1)
        FROM users u WHERE u.user_id IS NOT NULL
    ), heads AS (
        SELECT h.id, h.priority_key FROM users u
        CROSS JOIN LATERAL (
            SELECT id, priority_key FROM jobs j
            WHERE j.status = 'queued' AND j.user_id = u.user_id AND j.run_at <= now()
              AND ($5::text[] IS NULL OR j.type = ANY($5::text[]))
            ORDER BY j.priority_key LIMIT 1) h
        WHERE u.user_id IS NOT NULL
        ORDER BY h.priority_key LIMIT $4::int
    ), rest AS (
        SELECT id, priority_key FROM jobs WHERE status = 'queued' AND run_at <= now()
          AND ($5::text[] IS NULL OR type = ANY($5::text[]))
        ORDER BY priority_key LIMIT $4::int
    ), ranked AS (
        SELECT id, min(round) AS round, min(priority_key) AS priority_key FROM (
            SELECT id, 0 AS round, priority_key FROM heads
            UNION ALL SELECT id, 1, priority_key FROM rest) both_rounds
        GROUP BY id
    ), c AS (
        -- More candidates ($4) than slots ($2), so concurrent claimers skip each other's locks.
        SELECT j.id FROM jobs j JOIN ranked r ON r.id = j.id WHERE j.status = 'queued'
        ORDER BY r.round, r.priority_key LIMIT $2::int
        FOR UPDATE OF j SKIP LOCKED
    ), u AS (
        UPDATE jobs j SET status = 'processing', stage = 'script_expansion',
            message = 'claimed by ' || $1 || CASE WHEN j.retry_count > 0 THEN ' (attempt ' || (j.retry_count + 1) || ')' ELSE '' END,
            worker_id = $1, lease_expires_at = now() + make_interval(secs => $3::int8 / 1000.0),
            started_at = COALESCE(j.started_at, now()), last_event_seq = j.last_event_seq + 1, updated_at = now()
        FROM c WHERE j.id = c.id
        RETURNING j.*
    ), ev AS (
        INSERT INTO job_events (job_id, seq, status, stage, progress, message, dead_lettered, at)
        SELECT id, last_event_seq, status, stage, progress, message, dead_lettered, updated_at FROM u
    )
    SELECT \(jobColumns), (extract(epoch FROM updated_at) * 1000)::int8 FROM u
    JOIN ranked USING (id) ORDER BY ranked.round, ranked.priority_key
    """

    /// Only an unexpired lease is extended: once it ran out the job is the reaper's.
    static let renewLease = """
    UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3::int8 / 1000.0)
    WHERE id = $1::uuid AND worker_id = $2 AND status = ANY($4::text[]) AND lease_expires_at > now()
    RETURNING 1
    """

    /// Running jobs whose lease has run out ($2 = true), or that this worker hands back ($1 prefix):
    /// back to the queue, the attempt counted ($3) or not.
    static let requeueLeases = """
    WITH x AS (
        SELECT id FROM jobs
        WHERE status = ANY($4::text[])
          AND (($2::bool AND lease_expires_at < now()) OR ($1::text IS NOT NULL AND worker_id LIKE $1 || '%'))
        ORDER BY lease_expires_at LIMIT 500 FOR UPDATE SKIP LOCKED
    ), u AS (
        UPDATE jobs j SET status = 'queued', stage = 'pending',
            message = CASE WHEN $3::bool THEN 'lease of ' || j.worker_id || ' expired; requeued'
                           ELSE 'handed back by ' || j.worker_id || ' at shutdown; requeued' END,
            retry_count = j.retry_count + CASE WHEN $3::bool THEN 1 ELSE 0 END,
            lease_expires_at = NULL, run_at = now(), last_event_seq = j.last_event_seq + 1, updated_at = now()
        FROM x WHERE j.id = x.id
        RETURNING j.*
    ), ev AS (
        INSERT INTO job_events (job_id, seq, status, stage, progress, message, dead_lettered, at)
        SELECT id, last_event_seq, status, stage, progress, message, dead_lettered, updated_at FROM u
    )
    SELECT \(jobColumns), (extract(epoch FROM updated_at) * 1000)::int8 FROM u
    """

    static let insertSegment = """
    INSERT INTO segments (job_id, tenant_id, scene_id, video_url, thumbnail_url, duration_seconds, script)
    SELECT id, tenant_id, scene_id, $2, $3, $4::float8, expanded_script FROM jobs WHERE id = $1::uuid
    ON CONFLICT (job_id) DO NOTHING
    RETURNING id::text, scene_id, tenant_id
    """
    static let bumpScene = """
    UPDATE scenes SET segment_count = segment_count + 1, total_duration_seconds = total_duration_seconds + $2::float8,
        bible_version = bible_version + 1, updated_at = now()
    WHERE tenant_id = $3 AND id = $1 RETURNING bible_version
    """
    static let lockJob = "SELECT status FROM jobs WHERE id = $1::uuid FOR UPDATE"
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
    FROM jobs WHERE status = 'queued' GROUP BY tier
    """
    static let ping = "SELECT 1"

    /// reeld processes alive on this database (the event trigger NOTIFYs only while there are two or more).
    /// Every few seconds, so it also does the housekeeping: instances long gone, and the
    /// first-job-of-the-day rows of days past.
    static let touchInstance = """
    WITH gone AS (DELETE FROM reel_instances WHERE last_seen < now() - interval '1 hour'),
         past_days AS (DELETE FROM user_days WHERE day < current_date - 1)
    INSERT INTO reel_instances (id) VALUES ($1) ON CONFLICT (id) DO UPDATE SET last_seen = now()
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

    static let heldBy = """
    SELECT id::text FROM jobs WHERE worker_id = $1 AND status = ANY($2::text[]) AND lease_expires_at > now()
    """

    // MARK: provider tasks (DESIGN §5): attempts, account slots, callback tokens

    static let providerTaskColumns = "provider, job_id::text, attempt, external_task_id, task_id, kind, callback_token, live, status"
    static let latestProviderTask = """
    SELECT \(providerTaskColumns) FROM provider_tasks WHERE job_id = $1::uuid ORDER BY attempt DESC LIMIT 1
    """
    /// $1 provider, $2 job, $3 attempt, $4 external id, $5 kind, $6 token, $7 cap.
    static let acquireProviderSlot = "SELECT reel_acquire_provider_slot($1, $2::uuid, $3::int, $4, $5, $6, $7::int)"
    static let releaseProviderSlot = """
    UPDATE provider_tasks SET live = false, updated_at = now() WHERE job_id = $1::uuid AND attempt = $2::int
    """
    static let recordProviderTaskID = """
    UPDATE provider_tasks SET task_id = $3, kind = $4, status = 'submitted', updated_at = now()
    WHERE job_id = $1::uuid AND attempt = $2::int
    """
    static let endProviderTask = """
    UPDATE provider_tasks SET live = false, status = $3, updated_at = now() WHERE job_id = $1::uuid AND attempt = $2::int
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
}
