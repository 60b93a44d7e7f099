-- SETMOV embedded store, schema 9: latency histograms in log-linear buckets, and how the block
-- probe paired requests with completions.
--
-- The eBPF latency histograms were log2 (a value known to within a factor of 2); they now split
-- each power of two into 8 linear sub-buckets (a value known to within 12.5 %; see
-- setmov-common/src/lat_hist.rs). vm_latency_hist rows now say what they count: the bucket's
-- bounds in nanoseconds, [low_ns, high_ns), high_ns NULL for the last, open-ended bucket. Rows
-- written before this schema are converted from their log2 bucket b: [2^b, 2^(b+1)), bucket 0
-- [0, 2), and the last log2 bucket (39, from 2^39 ns on) open-ended.
--
-- host_ebpf_usage gets the interval's pairing counts (NULL before this schema):
-- latency_collided   requests started while another to the same device, direction and first
--                    sector was in flight (both kept, up to 8 per sector);
-- latency_overflowed those of them that found all 8 slots taken (one latency lost each);
-- latency_unpaired   completions with no request to pair, so in no histogram.

ALTER TABLE host_ebpf_usage ADD COLUMN latency_collided INTEGER;
ALTER TABLE host_ebpf_usage ADD COLUMN latency_overflowed INTEGER;
ALTER TABLE host_ebpf_usage ADD COLUMN latency_unpaired INTEGER;

ALTER TABLE vm_latency_hist RENAME TO vm_latency_hist_v8;

CREATE TABLE vm_latency_hist (
    time       TEXT NOT NULL,
    uuid       TEXT NOT NULL,
    direction  TEXT NOT NULL,
    low_ns     INTEGER NOT NULL,    -- the bucket's lower bound (inclusive), ns
    high_ns    INTEGER,             -- its upper bound (exclusive), ns; NULL: no upper bound
    requests   INTEGER NOT NULL,
    PRIMARY KEY (time, uuid, direction, low_ns),
    FOREIGN KEY (time, uuid) REFERENCES vm_ebpf_usage (time, uuid) ON DELETE CASCADE
) WITHOUT ROWID;

INSERT INTO vm_latency_hist (time, uuid, direction, low_ns, high_ns, requests)
SELECT time, uuid, direction,
       CASE WHEN bucket = 0 THEN 0 ELSE 1 << bucket END,
       CASE WHEN bucket >= 39 THEN NULL ELSE 1 << (bucket + 1) END,
       requests
FROM vm_latency_hist_v8;

DROP TABLE vm_latency_hist_v8;
