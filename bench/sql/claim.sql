-- pgbench script: the claim-and-complete ceiling. One durable transaction (one statement) per
-- job: claim the best queued row with FOR UPDATE SKIP LOCKED, mark it done, append its event.
WITH c AS (
    SELECT id FROM bench_queue WHERE status = 'queued' ORDER BY priority_key LIMIT 1 FOR UPDATE SKIP LOCKED
), u AS (
    UPDATE bench_queue q SET status = 'final_ready', stage = 'completed', progress = 100, message = 'done',
        worker_id = 'pgbench-' || :client_id, started_at = now(), completed_at = now(),
        last_event_seq = q.last_event_seq + 1, updated_at = now()
    FROM c WHERE q.id = c.id
    RETURNING q.id, q.last_event_seq, q.status, q.stage, q.progress, q.message
)
INSERT INTO bench_queue_events (job_id, seq, status, stage, progress, message)
SELECT id, last_event_seq, status, stage, progress, message FROM u;
