-- pgbench script: one durable single-row INSERT … RETURNING into bench_jobs (jobs' shape),
-- a new idempotency key each time; the baseline for CreateJob throughput.
\set u random(0, 99)
INSERT INTO bench_jobs (user_id, scene_id, type, status, stage, message, input_text, idempotency_key, tier, priority_key)
VALUES ('bench-user-' || :u, 'bench-scene', 'scene_creation', 'queued', 'pending', 'queued',
        'pgbench insert: a short no-op scene', md5(:client_id || ' ' || clock_timestamp()::text || random()::text),
        'standard', (extract(epoch FROM clock_timestamp()) * 1000)::int8)
RETURNING id, created_at;
