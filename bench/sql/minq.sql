-- pgbench script: the minimal queue (bench/sql/minq_setup.sql), one durable transaction per job:
-- claim the best queued row FOR UPDATE SKIP LOCKED, mark it done, append one event row. One
-- statement (so one round trip and one commit): the fastest way to write that transaction.
WITH c AS (
    SELECT id FROM minq_jobs WHERE status = 'queued' ORDER BY priority, id LIMIT 1 FOR UPDATE SKIP LOCKED
), u AS (
    UPDATE minq_jobs j SET status = 'done' FROM c WHERE j.id = c.id RETURNING j.id
)
INSERT INTO minq_events (job_id, status) SELECT id, 'done' FROM u;
