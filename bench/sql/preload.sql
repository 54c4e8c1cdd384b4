-- bench/run: :rows queued jobs for the claim baseline (psql -v rows=N).
TRUNCATE bench_queue, bench_queue_events;
INSERT INTO bench_queue (user_id, scene_id, type, status, stage, message, input_text, idempotency_key, tier, priority_key)
SELECT 'bench-user-' || (g % 100), 'bench-scene', 'scene_creation', 'queued', 'pending', 'queued',
       'claim bench job ' || g, 'idem_' || g, 'standard', g
FROM generate_series(1, :rows) g;
VACUUM ANALYZE bench_queue;
