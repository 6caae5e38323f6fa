-- Each running service process (a replica) and when it last wrote here: its
-- heartbeat, which is also the write that readiness probes after a write
-- failed for want of disk space. A replica not seen for a while is gone.
CREATE TABLE service_replicas (
    id          uuid PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    seen_at     timestamptz NOT NULL
);
