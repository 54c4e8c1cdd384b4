/// Versioned schema migrations, applied in order at start under an advisory lock so that
/// several reeld processes starting together apply each one once.
enum Migrations {
    static let all: [(version: Int, name: String, sql: String)] = [
        (1, "jobs, events, scenes, segments", """
        CREATE TABLE scenes (
            id              text PRIMARY KEY,
            bible_version   integer NOT NULL DEFAULT 1,
            bible           jsonb NOT NULL DEFAULT '{}'::jsonb,
            segment_count   integer NOT NULL DEFAULT 0,
            total_duration_seconds double precision NOT NULL DEFAULT 0,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE jobs (
            id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id         text NOT NULL,
            scene_id        text NOT NULL,
            type            text NOT NULL,
            status          text NOT NULL,
            stage           text NOT NULL,
            progress        integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
            message         text NOT NULL DEFAULT '',
            input_text      text NOT NULL,
            bible_version   integer NOT NULL DEFAULT 1,
            target_duration_seconds integer NOT NULL DEFAULT 0,
            quality         text NOT NULL DEFAULT 'unspecified',
            model           text NOT NULL DEFAULT '',
            style_overrides jsonb NOT NULL DEFAULT '{}'::jsonb,
            expanded_script text NOT NULL DEFAULT '',
            validation_result text NOT NULL DEFAULT '',
            preview_video_url text NOT NULL DEFAULT '',
            final_video_url text NOT NULL DEFAULT '',
            thumbnail_url   text NOT NULL DEFAULT '',
            hls_playlist_url text NOT NULL DEFAULT '',
            provider_job_id text NOT NULL DEFAULT '',
            result_segment_id text,
            result_video_url text,
            result_thumbnail_url text,
            result_duration_seconds double precision,
            result_bible_version integer,
            error_code      text,
            error_message   text,
            error_details   text,
            error_stage     text,
            retry_count     integer NOT NULL DEFAULT 0,
            max_retries     integer NOT NULL DEFAULT 3,
            idempotency_key text NOT NULL,
            tier            text NOT NULL,
            dead_lettered   boolean NOT NULL DEFAULT false,
            worker_id       text NOT NULL DEFAULT '',
            lease_expires_at timestamptz,
            run_at          timestamptz NOT NULL DEFAULT now(),
            priority_key    bigint NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now(),
            started_at      timestamptz,
            completed_at    timestamptz,
            updated_at      timestamptz NOT NULL DEFAULT now(),
            last_event_seq  bigint NOT NULL DEFAULT 1
        );
        -- Idempotency is decided here, not by a read-then-write.
        CREATE UNIQUE INDEX jobs_user_idempotency ON jobs (user_id, idempotency_key);
        -- The claim order: a partial index over the ready queue.
        CREATE INDEX jobs_ready ON jobs (priority_key) WHERE status = 'queued';
        CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
        CREATE INDEX jobs_user_created ON jobs (user_id, created_at DESC, id DESC);
        CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);
        CREATE TABLE job_events (
            job_id          uuid NOT NULL REFERENCES jobs(id),
            seq             bigint NOT NULL,
            status          text NOT NULL,
            stage           text NOT NULL,
            progress        integer NOT NULL,
            message         text NOT NULL,
            dead_lettered   boolean NOT NULL DEFAULT false,
            at              timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job_id, seq)
        );
        CREATE TABLE segments (
            id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            job_id          uuid NOT NULL UNIQUE REFERENCES jobs(id),
            scene_id        text NOT NULL REFERENCES scenes(id),
            video_url       text NOT NULL,
            thumbnail_url   text NOT NULL,
            duration_seconds double precision NOT NULL,
            script          text NOT NULL DEFAULT '',
            created_at      timestamptz NOT NULL DEFAULT now()
        );
        """),
        (2, "fair claims: each user's ready head", """
        CREATE INDEX jobs_ready_user ON jobs (user_id, priority_key) WHERE status = 'queued';
        """),
        (3, "versioned scene bibles", """
        CREATE TABLE scene_bibles (
            scene_id    text NOT NULL REFERENCES scenes(id),
            version     integer NOT NULL,
            bible       jsonb NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (scene_id, version)
        );
        CREATE INDEX segments_scene_created ON segments (scene_id, created_at DESC);
        """),
        (4, "events reach every reeld through LISTEN/NOTIFY", """
        CREATE FUNCTION reel_notify_job_event() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('reel_job_events', json_build_object(
                'job_id', NEW.job_id, 'seq', NEW.seq, 'status', NEW.status, 'stage', NEW.stage,
                'progress', NEW.progress, 'message', left(NEW.message, 1500), 'dead_lettered', NEW.dead_lettered,
                'at_unix_ms', (extract(epoch FROM NEW.at) * 1000)::int8)::text);
            RETURN NULL;
        END $$;
        CREATE TRIGGER job_events_notify AFTER INSERT ON job_events
            FOR EACH ROW EXECUTE FUNCTION reel_notify_job_event();
        """),
        (5, "tenants and API keys", """
        ALTER TABLE jobs ADD COLUMN tenant_id text NOT NULL DEFAULT '';
        DROP INDEX jobs_user_idempotency;
        CREATE UNIQUE INDEX jobs_tenant_user_idempotency ON jobs (tenant_id, user_id, idempotency_key);
        CREATE INDEX jobs_tenant_created ON jobs (tenant_id, created_at DESC, id DESC);
        CREATE TABLE api_keys (
            id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            tenant_id       text NOT NULL,
            key_hash        text NOT NULL UNIQUE,   -- sha256 hex of the secret; the secret is never stored
            prefix          text NOT NULL,          -- the secret's first characters, to tell keys apart
            admin           boolean NOT NULL DEFAULT false,
            rate_limit_per_second integer NOT NULL DEFAULT 0,
            created_at      timestamptz NOT NULL DEFAULT now(),
            revoked_at      timestamptz
        );
        """),
        (6, "scenes belong to a tenant", """
        ALTER TABLE scenes ADD COLUMN tenant_id text NOT NULL DEFAULT '';
        ALTER TABLE scene_bibles ADD COLUMN tenant_id text NOT NULL DEFAULT '';
        ALTER TABLE segments ADD COLUMN tenant_id text NOT NULL DEFAULT '';
        ALTER TABLE scene_bibles DROP CONSTRAINT scene_bibles_scene_id_fkey;
        ALTER TABLE segments DROP CONSTRAINT segments_scene_id_fkey;
        ALTER TABLE scene_bibles DROP CONSTRAINT scene_bibles_pkey;
        ALTER TABLE scenes DROP CONSTRAINT scenes_pkey;
        ALTER TABLE scenes ADD PRIMARY KEY (tenant_id, id);
        ALTER TABLE scene_bibles ADD PRIMARY KEY (tenant_id, scene_id, version);
        -- Scenes shared before tenants existed: each tenant with jobs in one gets its own copy.
        INSERT INTO scenes (tenant_id, id, bible_version, bible, segment_count, total_duration_seconds)
        SELECT DISTINCT j.tenant_id, s.id, s.bible_version, s.bible, 0, 0
        FROM jobs j JOIN scenes s ON s.tenant_id = '' AND s.id = j.scene_id WHERE j.tenant_id <> ''
        ON CONFLICT DO NOTHING;
        INSERT INTO scene_bibles (tenant_id, scene_id, version, bible, created_at)
        SELECT t.tenant_id, b.scene_id, b.version, b.bible, b.created_at
        FROM scene_bibles b JOIN (SELECT DISTINCT tenant_id, scene_id FROM jobs WHERE tenant_id <> '') t
          ON t.scene_id = b.scene_id AND b.tenant_id = ''
        ON CONFLICT DO NOTHING;
        UPDATE segments g SET tenant_id = j.tenant_id FROM jobs j WHERE j.id = g.job_id AND j.tenant_id <> '';
        ALTER TABLE scene_bibles ADD FOREIGN KEY (tenant_id, scene_id) REFERENCES scenes (tenant_id, id);
        ALTER TABLE segments ADD FOREIGN KEY (tenant_id, scene_id) REFERENCES scenes (tenant_id, id);
        DROP INDEX segments_scene_created;
        CREATE INDEX segments_scene_created ON segments (tenant_id, scene_id, created_at DESC);
        """),
        (7, "NOTIFY only while another reeld listens", """
        -- A transaction that NOTIFYs holds PostgreSQL's notify-queue lock from pre-commit until its
        -- commit record is flushed, so notifying commits can't share a flush. The events only
        -- matter to other reeld processes (each publishes its own directly), so the trigger
        -- notifies only while more than one reeld is alive on this database.
        CREATE TABLE reel_instances (
            id          text PRIMARY KEY,
            last_seen   timestamptz NOT NULL DEFAULT now()
        );
        CREATE OR REPLACE FUNCTION reel_notify_job_event() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF (SELECT count(*) FROM reel_instances WHERE last_seen > now() - interval '30 seconds') > 1 THEN
                PERFORM pg_notify('reel_job_events', json_build_object(
                    'job_id', NEW.job_id, 'seq', NEW.seq, 'status', NEW.status, 'stage', NEW.stage,
                    'progress', NEW.progress, 'message', left(NEW.message, 1500), 'dead_lettered', NEW.dead_lettered,
                    'at_unix_ms', (extract(epoch FROM NEW.at) * 1000)::int8)::text);
            END IF;
            RETURN NULL;
        END $$;
        """),
        (8, "first job of the day decided by a unique row", """
        -- Whose job is a user's first of the day was decided by looking for their earlier jobs,
        -- which two concurrent create batches could both miss. A row per (tenant, user, day)
        -- now decides it: the create whose insert makes the row is the first that day (a
        -- concurrent insert of the same key waits for it and then does nothing). Rows of past
        -- days are pruned by reeld's housekeeping.
        CREATE TABLE user_days (
            tenant_id   text NOT NULL,
            user_id     text NOT NULL,
            day         date NOT NULL,
            PRIMARY KEY (tenant_id, user_id, day)
        );
        INSERT INTO user_days (tenant_id, user_id, day)
        SELECT DISTINCT tenant_id, user_id, created_at::date FROM jobs WHERE created_at >= current_date;
        """),
        (9, "room on each jobs page for updates in place", """
        -- A running job's row is rewritten at every progress report. With room left on its page,
        -- PostgreSQL can update it in place (a HOT update: no new entry in any of the indexes, far
        -- less WAL), as long as no indexed column changes, which a progress report never does.
        ALTER TABLE jobs SET (fillfactor = 70);
        """),
        (10, "provider tasks: attempts, account slots, callback tokens", """
        -- One row per attempt of a job at a real provider (DESIGN §5). A live row holds one of
        -- the provider account's task slots, for every reeld on this database; the cap is decided
        -- by reel_acquire_provider_slot under an advisory lock, never by a read-then-write.
        CREATE TABLE provider_tasks (
            job_id           uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            attempt          integer NOT NULL,
            provider         text NOT NULL,
            external_task_id text NOT NULL UNIQUE,
            task_id          text NOT NULL DEFAULT '',
            kind             text NOT NULL,
            callback_token   text NOT NULL UNIQUE,
            live             boolean NOT NULL,
            status           text NOT NULL,
            created_at       timestamptz NOT NULL DEFAULT now(),
            updated_at       timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job_id, attempt)
        );
        CREATE INDEX provider_tasks_live ON provider_tasks (provider) WHERE live;
        -- A lower cap for a while, after the provider refused a task for the account's
        -- concurrency (another client of the same account holds slots).
        CREATE TABLE provider_limits (
            provider text PRIMARY KEY,
            cap      integer NOT NULL,
            until    timestamptz NOT NULL
        );
        CREATE FUNCTION reel_acquire_provider_slot(p_provider text, p_job uuid, p_attempt int, p_ext text,
                                                   p_kind text, p_token text, p_cap int) RETURNS boolean
        LANGUAGE plpgsql AS $$
        DECLARE
            effective int;
            n int;
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext('reel.provider_slots'), hashtext(p_provider));
            IF EXISTS (SELECT 1 FROM provider_tasks WHERE job_id = p_job AND attempt = p_attempt AND live) THEN
                RETURN true;
            END IF;
            SELECT LEAST(p_cap, l.cap) INTO effective FROM provider_limits l
            WHERE l.provider = p_provider AND l.until > now();
            IF effective IS NULL THEN effective := p_cap; END IF;
            SELECT count(*) INTO n FROM provider_tasks WHERE provider = p_provider AND live;
            IF n >= effective THEN RETURN false; END IF;
            INSERT INTO provider_tasks (job_id, attempt, provider, external_task_id, kind, callback_token, live, status)
            VALUES (p_job, p_attempt, p_provider, p_ext, p_kind, p_token, true, 'pending')
            ON CONFLICT (job_id, attempt) DO UPDATE SET live = true, updated_at = now();
            RETURN true;
        END $$;
        -- The provider's request id of the submit that made the job's task (support tickets name it).
        ALTER TABLE jobs ADD COLUMN provider_request_id text NOT NULL DEFAULT '';
        """),
        (11, "one NOTIFY per statement of events; no foreign key on events", """
        -- The per-row trigger ran once per event row and NOTIFYed each one. A statement-level
        -- trigger sees all of a statement's rows at once (its transition table) and sends them in
        -- one notification, a JSON array of the events (more than one only when the array would
        -- pass pg_notify's 8000-byte limit), and still only while more than one reeld is alive.
        DROP TRIGGER job_events_notify ON job_events;
        DROP FUNCTION reel_notify_job_event();
        CREATE FUNCTION reel_notify_job_events() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            e record;
            msg text;
            item text;
            chunk text := '';
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM new_events)
               OR (SELECT count(*) FROM reel_instances WHERE last_seen > now() - interval '30 seconds') < 2 THEN
                RETURN NULL;
            END IF;
            FOR e IN SELECT * FROM new_events ORDER BY job_id, seq LOOP
                -- A message is cut to 1500 characters, or to 200 when those escape to too many bytes.
                msg := left(e.message, 1500);
                IF octet_length(to_json(msg)::text) > 7000 THEN msg := left(e.message, 200); END IF;
                item := json_build_object(
                    'job_id', e.job_id, 'seq', e.seq, 'status', e.status, 'stage', e.stage,
                    'progress', e.progress, 'message', msg, 'dead_lettered', e.dead_lettered,
                    'at_unix_ms', (extract(epoch FROM e.at) * 1000)::int8)::text;
                -- A payload is shorter than 8000 bytes: "[" chunk "," item "]".
                IF chunk <> '' AND octet_length(chunk) + octet_length(item) + 3 > 7999 THEN
                    PERFORM pg_notify('reel_job_events', '[' || chunk || ']');
                    chunk := '';
                END IF;
                chunk := CASE WHEN chunk = '' THEN item ELSE chunk || ',' || item END;
            END LOOP;
            IF chunk <> '' THEN
                PERFORM pg_notify('reel_job_events', '[' || chunk || ']');
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER job_events_notify AFTER INSERT ON job_events
            REFERENCING NEW TABLE AS new_events
            FOR EACH STATEMENT EXECUTE FUNCTION reel_notify_job_events();
        -- Every event insert paid a foreign-key check on jobs; events are only written by the
        -- statements that update (or insert) their job, which is check enough.
        ALTER TABLE job_events DROP CONSTRAINT IF EXISTS job_events_job_id_fkey;
        """),
        (12, "a narrow queue beside the wide job record; leases per worker with a fencing number", """
        -- What a claim scans, and what a reaper needs, lives in a narrow table of its own: one row per
        -- job that is queued (worker_id NULL) or running (worker_id set), removed when the job ends.
        -- No index of `jobs` covers a column that changes after create, so every later update of
        -- the wide record is a HOT update (no index entries, little WAL).
        CREATE TABLE job_queue (
            job_id        uuid PRIMARY KEY,
            tenant_id     text NOT NULL,
            user_id       text NOT NULL,
            type          text NOT NULL,
            tier          text NOT NULL,
            priority_key  bigint NOT NULL,
            run_at        timestamptz NOT NULL,
            worker_id     text,
            fence         bigint NOT NULL DEFAULT 0
        ) WITH (fillfactor = 80);
        CREATE INDEX job_queue_ready ON job_queue (priority_key) WHERE worker_id IS NULL;
        CREATE INDEX job_queue_ready_user ON job_queue (user_id, priority_key) WHERE worker_id IS NULL;
        CREATE INDEX job_queue_running ON job_queue (worker_id) WHERE worker_id IS NOT NULL;
        -- A lease is held by a worker (a reeld's in-process workers, or one external worker) and
        -- renewed by its heartbeat, not per job; a job's `fence` is bumped by every claim, so a
        -- worker writing for a claim that has been superseded changes nothing.
        CREATE TABLE worker_leases (
            worker_id   text PRIMARY KEY,
            expires_at  timestamptz NOT NULL
        );
        ALTER TABLE jobs ADD COLUMN fence bigint NOT NULL DEFAULT 0;
        -- A job's row takes ~8 versions in its life, each HOT only if its page has room: half of
        -- each new page is left for them (pruning reclaims the dead versions as it goes).
        ALTER TABLE jobs SET (fillfactor = 50);
        INSERT INTO worker_leases (worker_id, expires_at)
        SELECT worker_id, max(lease_expires_at) FROM jobs
        WHERE lease_expires_at IS NOT NULL AND status IN ('processing', 'script_ready', 'continuity_checked', 'preview_ready')
        GROUP BY worker_id;
        INSERT INTO job_queue (job_id, tenant_id, user_id, type, tier, priority_key, run_at, worker_id)
        SELECT id, tenant_id, user_id, type, tier, priority_key, run_at,
               CASE WHEN status = 'queued' THEN NULL ELSE worker_id END
        FROM jobs WHERE status IN ('queued', 'processing', 'script_ready', 'continuity_checked', 'preview_ready');
        DROP INDEX jobs_ready;
        DROP INDEX jobs_ready_user;
        DROP INDEX jobs_leases;
        ALTER TABLE jobs DROP COLUMN lease_expires_at;
        """),
            (13, "money and time: schedule, deadline, webhook, provider and cost per job; budgets; tenants", """
        -- Issue #17 (DESIGN §2 "Added 2026-12-04"). `scheduled_at` is the time the caller asked the
        -- job to wait for (NULL: none; `run_at` stays the queue's own, moved by retry backoff).
        ALTER TABLE jobs ADD COLUMN scheduled_at timestamptz;
        ALTER TABLE jobs ADD COLUMN deadline_at timestamptz;
        ALTER TABLE jobs ADD COLUMN webhook_url text NOT NULL DEFAULT '';
        ALTER TABLE jobs ADD COLUMN provider text NOT NULL DEFAULT '';
        -- The provider's charge times its weight, summed over attempts; and what the job was
        -- expected to cost when it was accepted (reserved against the tenant's budget).
        ALTER TABLE jobs ADD COLUMN cost_units double precision NOT NULL DEFAULT 0;
        ALTER TABLE jobs ADD COLUMN expected_cost_units double precision NOT NULL DEFAULT 0;
        -- Each attempt's charge (NULL until the provider reports it).
        ALTER TABLE provider_tasks ADD COLUMN cost_units double precision;
        -- A tenant's own settings: its completion-webhook signing secret and its fair-share weight.
        CREATE TABLE tenants (
            tenant_id       text PRIMARY KEY,
            webhook_secret  text,
            weight          double precision NOT NULL DEFAULT 1 CHECK (weight > 0),
            created_at      timestamptz NOT NULL DEFAULT now()
        );
        -- A tenant's budget in provider units per period; no row: unlimited.
        CREATE TABLE tenant_budgets (
            tenant_id       text PRIMARY KEY,
            limit_units     double precision NOT NULL CHECK (limit_units > 0),
            period_seconds  bigint NOT NULL CHECK (period_seconds > 0),
            period_start    timestamptz NOT NULL,
            spent_units     double precision NOT NULL DEFAULT 0,
            reserved_units  double precision NOT NULL DEFAULT 0
        );
        """),
        (14, "cost per job and tenant budgets: reservations at create, settlement when a job ends", """
        -- Issue #17 items 1 and 2 (DESIGN §2 "Budgets"). A job's reservation against its tenant's
        -- budget (0: none, or settled), and how much of its cost_units is already in spent_units.
        ALTER TABLE jobs ADD COLUMN reserved_units double precision NOT NULL DEFAULT 0;
        ALTER TABLE jobs ADD COLUMN settled_units double precision NOT NULL DEFAULT 0;
        -- limit_units 0: the budget was removed (unlimited); the row keeps counting what is spent.
        ALTER TABLE tenant_budgets DROP CONSTRAINT IF EXISTS tenant_budgets_limit_units_check;
        ALTER TABLE tenant_budgets ADD CONSTRAINT tenant_budgets_limit_units_check CHECK (limit_units >= 0);
        -- The start of the period `now()` falls in, for a budget whose period began at `start`.
        CREATE FUNCTION reel_budget_period(start timestamptz, secs bigint) RETURNS timestamptz
        LANGUAGE sql STABLE AS $$
            SELECT CASE WHEN now() < start + make_interval(secs => secs) THEN start
                        ELSE start + make_interval(secs => floor(extract(epoch FROM now() - start) / secs) * secs) END
        $$;
        -- Which of a tenant's creates fit in `room`, in order: an item that fits is taken, one
        -- that does not fails alone and the next may still fit. `room_before`: what was left for it.
        CREATE FUNCTION reel_budget_fit(room double precision, costs double precision[])
        RETURNS TABLE (k int, ok boolean, room_before double precision)
        LANGUAGE plpgsql IMMUTABLE AS $$
        DECLARE c double precision;
        BEGIN
            k := 0;
            FOREACH c IN ARRAY costs LOOP
                k := k + 1;
                room_before := room;
                ok := c <= room + 1e-9;
                IF ok THEN room := room - c; END IF;
                RETURN NEXT;
            END LOOP;
        END $$;
        -- How a budget figure reads in a message: 10, 1.5.
        CREATE FUNCTION reel_units_text(v double precision) RETURNS text LANGUAGE sql IMMUTABLE AS $$
            SELECT trim_scale(round(v::numeric, 6))::text
        $$;
        -- A job's end settles its reservation: the reservation leaves reserved_units and the real
        -- charge (what is not settled yet) goes into spent_units; a charge that arrives after the
        -- end (a cancelled job's task that the provider still billed) is settled when it arrives.
        -- RetryJob of a dead-lettered job reserves again, or fails with RESOURCE_EXHAUSTED (RLB01).
        CREATE FUNCTION reel_settle_job() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE b tenant_budgets%ROWTYPE; period timestamptz; spent double precision;
        BEGIN
            SELECT * INTO b FROM tenant_budgets WHERE tenant_id = NEW.tenant_id FOR NO KEY UPDATE;
            IF NOT FOUND THEN
                IF NEW.status <> 'queued' THEN
                    NEW.reserved_units := 0;
                    NEW.settled_units := NEW.cost_units;
                END IF;
                RETURN NEW;
            END IF;
            period := reel_budget_period(b.period_start, b.period_seconds);
            spent := CASE WHEN period > b.period_start THEN 0 ELSE b.spent_units END;
            IF NEW.status = 'queued' THEN
                IF b.limit_units > 0 THEN
                    IF NEW.expected_cost_units > b.limit_units - spent - b.reserved_units + 1e-9 THEN
                        RAISE EXCEPTION USING ERRCODE = 'RLB01', MESSAGE = format(
                            '%s budget of %s units has %s left; this job is expected to cost %s',
                            CASE WHEN NEW.tenant_id = '' THEN 'the default tenant''s' ELSE 'tenant ' || NEW.tenant_id || '''s' END,
                            reel_units_text(b.limit_units), reel_units_text(greatest(b.limit_units - spent - b.reserved_units, 0)),
                            reel_units_text(NEW.expected_cost_units));
                    END IF;
                    UPDATE tenant_budgets SET period_start = period, spent_units = spent,
                        reserved_units = reserved_units + NEW.expected_cost_units
                    WHERE tenant_id = NEW.tenant_id;
                    NEW.reserved_units := NEW.expected_cost_units;
                END IF;
                RETURN NEW;
            END IF;
            UPDATE tenant_budgets SET period_start = period,
                spent_units = spent + (NEW.cost_units - NEW.settled_units),
                reserved_units = greatest(reserved_units - NEW.reserved_units, 0)
            WHERE tenant_id = NEW.tenant_id;
            NEW.reserved_units := 0;
            NEW.settled_units := NEW.cost_units;
            RETURN NEW;
        END $$;
        -- Fires only for an end that has something to settle, and for a retry out of the dead
        -- letters: every other update of a job (its running steps) pays only the WHEN test.
        CREATE TRIGGER jobs_budget_settlement BEFORE UPDATE ON jobs FOR EACH ROW
        WHEN (((NEW.status IN ('final_ready', 'cancelled') OR (NEW.status = 'failed' AND NEW.dead_lettered))
                AND (NEW.reserved_units <> 0 OR NEW.cost_units <> NEW.settled_units))
              OR (NEW.status = 'queued' AND OLD.status = 'failed' AND OLD.dead_lettered AND NEW.expected_cost_units > 0))
        EXECUTE FUNCTION reel_settle_job();
        """),
        (15, "completion webhooks: a durable outbox filled by the job's final transition", """
        -- Issue #17 item 6 (DESIGN §8). A row per delivery of a job's end (final_ready, cancelled,
        -- failed and dead-lettered), written by a trigger in the same transaction as the final
        -- transition, whichever statement makes it. `snapshot` is the job as it ended; `body` the
        -- JSON sent, rendered at the first attempt and sent unchanged on every retry. `id` is the
        -- Reel-Delivery-Id. state: pending | delivered | failed (for good).
        CREATE TABLE webhook_deliveries (
            id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            job_id          uuid NOT NULL,
            tenant_id       text NOT NULL,
            url             text NOT NULL,
            job_status      text NOT NULL,
            event_seq       bigint NOT NULL,
            snapshot        jsonb NOT NULL,
            body            text,
            state           text NOT NULL DEFAULT 'pending',
            attempts        integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            created_at      timestamptz NOT NULL DEFAULT now(),
            last_attempt_at timestamptz,
            last_status     integer,
            last_error      text NOT NULL DEFAULT '',
            finished_at     timestamptz
        );
        CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
        CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id, created_at);
        CREATE FUNCTION reel_enqueue_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO webhook_deliveries (job_id, tenant_id, url, job_status, event_seq, snapshot)
            VALUES (NEW.id, NEW.tenant_id, NEW.webhook_url, NEW.status, NEW.last_event_seq, to_jsonb(NEW));
            RETURN NULL;
        END $$;
        -- Evaluated per updated row and cheap when false: most jobs have no webhook, and most
        -- updates are steps that keep a job running.
        CREATE TRIGGER jobs_webhook_outbox AFTER UPDATE ON jobs FOR EACH ROW
            WHEN (NEW.webhook_url <> ''
                  AND (NEW.status IN ('final_ready', 'cancelled') OR (NEW.status = 'failed' AND NEW.dead_lettered))
                  AND (OLD.status IS DISTINCT FROM NEW.status OR (NEW.dead_lettered AND NOT OLD.dead_lettered)))
            EXECUTE FUNCTION reel_enqueue_webhook();
        -- Retention (issue #17 item 7) walks jobs in creation order (the jobs_created index, no
        -- index on a column that changes after create); how far it got, so each pass goes on.
        CREATE TABLE retention_cursor (
            id          integer PRIMARY KEY CHECK (id = 1),
            created_at  timestamptz NOT NULL,
            job_id      uuid NOT NULL
        );
        """),
        (16, "delayed jobs out of the ready indexes; fair share by cost across tenants and users", """
        -- Issue #17 items 5 and 3. A queued job whose run time is still ahead (a delayed job, or a
        -- retry backing off) is `waiting`: the ready indexes leave it out, so a claim never walks
        -- future rows; `job_queue_waiting` finds the due ones, which the scheduler promotes.
        ALTER TABLE job_queue ADD COLUMN waiting boolean NOT NULL DEFAULT false;
        -- What the job is expected to cost (jobs.expected_cost_units), charged to the fair share at claim.
        ALTER TABLE job_queue ADD COLUMN cost_units double precision NOT NULL DEFAULT 0;
        UPDATE job_queue q SET waiting = (q.worker_id IS NULL AND q.run_at > now()), cost_units = j.expected_cost_units
        FROM jobs j WHERE j.id = q.job_id;
        DROP INDEX job_queue_ready;
        DROP INDEX job_queue_ready_user;
        CREATE INDEX job_queue_ready ON job_queue (priority_key) WHERE worker_id IS NULL AND NOT waiting;
        -- Users are per tenant: the claim's loose scan walks (tenant, user) pairs.
        CREATE INDEX job_queue_ready_user ON job_queue (tenant_id, user_id, priority_key) WHERE worker_id IS NULL AND NOT waiting;
        CREATE INDEX job_queue_waiting ON job_queue (run_at) WHERE waiting;
        -- Cost claimed per tenant (user_id '') and per user, decayed with a half-life (a sliding
        -- window without buckets). One row per claimer (a worker id), so concurrent claimers on
        -- several reeld never wait on each other's row; readers sum a key's rows.
        CREATE TABLE fair_usage (
            tenant_id   text NOT NULL,
            user_id     text NOT NULL,
            claimer     text NOT NULL,
            units       double precision NOT NULL,
            at          timestamptz NOT NULL,
            PRIMARY KEY (tenant_id, user_id, claimer)
        );
        """),
        (18, "retention walks jobs in the order they ended", """
        -- Issue #17 item 7. Retention walked jobs in creation order and saved its cursor past jobs
        -- still running (or ended too recently), which were then never pruned. It walks instead
        -- the jobs that ended, by `completed_at` (set by the terminal transition, cleared by a
        -- retry): a job that ends, or ends again after a retry, later comes after any cursor.
        -- The column changes only at a job's end and at a retry (NULL to NULL keeps every running
        -- step's update HOT), and the partial index leaves running and queued jobs out.
        CREATE INDEX jobs_completed ON jobs (completed_at, id) WHERE completed_at IS NOT NULL;
        -- A job that ended before completed_at was kept everywhere gets its last change as its end.
        UPDATE jobs SET completed_at = updated_at
        WHERE completed_at IS NULL AND (status IN ('final_ready', 'cancelled') OR (status = 'failed' AND dead_lettered));
        -- The cursor is now (completed_at, job_id); the walk starts again from the oldest end.
        DELETE FROM retention_cursor;
        ALTER TABLE retention_cursor RENAME COLUMN created_at TO completed_at;
        """),
        (19, "provider slots in fair-share order among the jobs waiting for one", """
        -- Issue #17 item 3: when a provider account's slots are scarce, the next free one goes to
        -- the waiting job first in fair-share order by cost (SQL.acquireProviderSlot), not to
        -- whichever asks first. A waiter asks again at least every second (seen_at).
        CREATE TABLE provider_slot_waiters (
            provider  text NOT NULL,
            job_id    uuid NOT NULL,
            seen_at   timestamptz NOT NULL,
            PRIMARY KEY (provider, job_id)
        );
        -- The slot is now taken by a statement of SQL.swift after a lock of its own.
        DROP FUNCTION reel_acquire_provider_slot(text, uuid, int, text, text, text, int);
        """),
        (20, "each live reeld's worker slots, for ETAs across instances", """
        -- Issue #17 item 4: a queued job's ETA counts the slots of every live reeld (its workers
        -- and the external workers connected to it), not only those of the one answering.
        ALTER TABLE reel_instances ADD COLUMN slots integer NOT NULL DEFAULT 0;
        """),
    ]
}
