-- bench/run: the minimal queue a user would build instead of Reel (issue 14 item 6), fresh,
-- with :rows queued jobs (psql -v rows=N). One plain table (bigserial id, priority, status,
-- payload) with ONE partial index on the queued rows, and an append-only events table. No
-- triggers, no foreign keys, no leases, no history beyond one event per job.
SET client_min_messages = warning;
DROP TABLE IF EXISTS minq_jobs, minq_events;
CREATE TABLE minq_jobs (
    id bigserial PRIMARY KEY,
    priority int NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'queued',
    payload jsonb NOT NULL
);
CREATE TABLE minq_events (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL,
    status text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO minq_jobs (priority, payload)
SELECT g % 3, jsonb_build_object('user_id', 'bench-user-' || (g % 100), 'scene_id', 'bench-scene-' || (g % 100),
                                 'input_text', 'minimal queue job ' || g)
FROM generate_series(1, :rows) g;
-- Built after the load (as a user's migration would have built it before: same index).
CREATE INDEX minq_jobs_queued ON minq_jobs (priority, id) WHERE status = 'queued';
VACUUM ANALYZE minq_jobs, minq_events;
