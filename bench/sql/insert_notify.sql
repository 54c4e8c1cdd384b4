-- pgbench script: insert.sql into bench_jobs_notify (a per-row NOTIFY trigger, like job_events),
-- a new idempotency key each time; not a goal, it shows what bounds a notifying commit.
\set u random(0, 99)
INSERT INTO bench_jobs_notify (user_id, scene_id, type, status, stage, message, input_text, idempotency_key, tier, priority_key)
VALUES ('bench-user-' || :u, 'bench-scene', 'scene_creation', 'queued', 'pending', 'queued',
        'pgbench insert: a short no-op scene', md5(:client_id || ' ' || clock_timestamp()::text || random()::text),
        'standard', (extract(epoch FROM clock_timestamp()) * 1000)::int8)
RETURNING id, created_at;
