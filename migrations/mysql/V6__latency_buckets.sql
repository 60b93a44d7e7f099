-- SETMOV on MySQL/MariaDB, schema 6: latency histograms in log-linear buckets, and how the
-- block probe paired requests with completions (see
-- migrations/sqlite/V9__latency_buckets.sql). vm_latency_hist rows carry their bucket's bounds
-- in ns, [low_ns, high_ns), high_ns NULL for the last, open-ended bucket; rows written before
-- this schema are converted from their log2 bucket b: [2^b, 2^(b+1)), bucket 0 [0, 2), bucket 39
-- open-ended.

ALTER TABLE host_ebpf_usage
    ADD COLUMN latency_collided BIGINT,
    ADD COLUMN latency_overflowed BIGINT,
    ADD COLUMN latency_unpaired BIGINT;

ALTER TABLE vm_latency_hist
    ADD COLUMN low_ns BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN high_ns BIGINT NULL;

UPDATE vm_latency_hist
SET low_ns = IF(bucket = 0, 0, 1 << bucket),
    high_ns = IF(bucket >= 39, NULL, 1 << (bucket + 1));

ALTER TABLE vm_latency_hist
    DROP PRIMARY KEY,
    ADD PRIMARY KEY (uuid, time, direction, low_ns),
    DROP COLUMN bucket,
    ALTER COLUMN low_ns DROP DEFAULT;
