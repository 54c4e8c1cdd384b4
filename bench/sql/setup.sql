-- bench/run: the pgbench baselines' tables, shaped like Reel's own (run after reeld has
-- migrated the database, so `jobs` and `job_events` exist). Same columns, defaults, checks
-- and indexes as `jobs` (the unique idempotency index and the partial ready-queue index too);
-- no triggers, no foreign keys.
SET client_min_messages = warning;
DROP TABLE IF EXISTS bench_jobs, bench_queue, bench_queue_events;
CREATE TABLE bench_jobs (LIKE jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
CREATE TABLE bench_queue (LIKE jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
-- jobs keeps its ready queue in job_queue now; the claim script scans this copy as Reel once did.
CREATE INDEX ON bench_queue (priority_key) WHERE status = 'queued';
CREATE TABLE bench_queue_events (LIKE job_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
-- The same insert with a per-row NOTIFY trigger, as reeld's job_events has: shows what the NOTIFY
-- queue lock (held from pre-commit until the commit is flushed) leaves of the insert rate.
DROP TABLE IF EXISTS bench_jobs_notify;
CREATE TABLE bench_jobs_notify (LIKE jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
CREATE OR REPLACE FUNCTION bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bench_jobs', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER bench_jobs_notify AFTER INSERT ON bench_jobs_notify FOR EACH ROW EXECUTE FUNCTION bench_notify();
