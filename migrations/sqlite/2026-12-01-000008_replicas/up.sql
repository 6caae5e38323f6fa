-- Each running service process (a replica) and when it last wrote here: its
-- heartbeat, which is also the write that readiness probes after a write
-- failed for want of disk space. A replica not seen for a while is gone.
CREATE TABLE service_replicas (
    id          blob PRIMARY KEY CHECK (length(id) = 16),
    started_at  text NOT NULL,
    seen_at     text NOT NULL
) STRICT;
