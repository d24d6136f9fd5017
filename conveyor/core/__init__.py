"""The job engine, in the order a job lives: payload, job, app, middleware, client (enqueue),
fetch, processor and execution (run), retry, finisher (acknowledge), housekeeping (heartbeat,
recovery, scheduled jobs), worker and supervisor (processes), testing."""
