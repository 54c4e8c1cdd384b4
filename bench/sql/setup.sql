-- bench/run: the pgbench baselines' tables, shaped like Reel's own (run after reeld has
-- migrated the database, so `jobs` and `job_events` exist). Same columns, defaults, checks
-- and indexes as `jobs` (the unique idempotency index and the partial ready-queue index too);
-- no triggers, no foreign keys.
SET client_min_messages = warning;
DROP TABLE IF EXISTS bench_jobs, bench_queue, bench_queue_events;
CREATE TABLE bench_jobs (LIKE jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
CREATE TABLE bench_queue (LIKE jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
CREATE TABLE bench_queue_events (LIKE job_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
