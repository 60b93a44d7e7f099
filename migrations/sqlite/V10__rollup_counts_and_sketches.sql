-- SETMOV embedded store, schema 10: rollups that merge honestly. Each rolled-up figure gets
--   <figure>_n       how many of the bucket's ticks had the figure (NULL: none had it);
--   <figure>_secs    the seconds those ticks cover (the sum of their Δt);
--   <figure>_sketch  their distribution, a DDSketch-style log-linear histogram whose quantiles
--                    are within 0.75 % of the raw ticks' (format: setmov-user/src/store/sketch.rs).
-- and <figure>_avg is from now on weighted by Δt over the ticks that had the figure. A report
-- over many buckets weighs each bucket's mean by its <figure>_secs and reads its percentiles from
-- the merged sketches, so an intermittent figure is not diluted by the ticks that lack it and
-- p95 over a month is the month's p95, not a percentile of bucket p95s.
--
-- Rollups whose raw ticks are still kept are deleted, so that the monitor rolls them up again
-- with the new columns; older ones keep NULL in the new columns and a report reads them as
-- before (their mean, weighted by their tick count).


ALTER TABLE host_usage_1m ADD COLUMN cpu_pct_n INTEGER;
ALTER TABLE host_usage_1m ADD COLUMN cpu_pct_secs REAL;
ALTER TABLE host_usage_1m ADD COLUMN cpu_pct_sketch BLOB;
ALTER TABLE host_usage_1m ADD COLUMN mem_used_pct_n INTEGER;
ALTER TABLE host_usage_1m ADD COLUMN mem_used_pct_secs REAL;
ALTER TABLE host_usage_1m ADD COLUMN mem_used_pct_sketch BLOB;
ALTER TABLE host_usage_1m ADD COLUMN disk_read_bytes_s_n INTEGER;
ALTER TABLE host_usage_1m ADD COLUMN disk_read_bytes_s_secs REAL;
ALTER TABLE host_usage_1m ADD COLUMN disk_read_bytes_s_sketch BLOB;
ALTER TABLE host_usage_1m ADD COLUMN disk_write_bytes_s_n INTEGER;
ALTER TABLE host_usage_1m ADD COLUMN disk_write_bytes_s_secs REAL;
ALTER TABLE host_usage_1m ADD COLUMN disk_write_bytes_s_sketch BLOB;
ALTER TABLE host_usage_1m ADD COLUMN disk_read_iops_n INTEGER;
ALTER TABLE host_usage_1m ADD COLUMN disk_read_iops_secs REAL;
ALTER TABLE host_usage_1m ADD COLUMN disk_read_iops_sketch BLOB;
ALTER TABLE host_usage_1m ADD COLUMN disk_write_iops_n INTEGER;
ALTER TABLE host_usage_1m ADD COLUMN disk_write_iops_secs REAL;
ALTER TABLE host_usage_1m ADD COLUMN disk_write_iops_sketch BLOB;
ALTER TABLE host_usage_1m ADD COLUMN net_rx_bps_n INTEGER;
ALTER TABLE host_usage_1m ADD COLUMN net_rx_bps_secs REAL;
ALTER TABLE host_usage_1m ADD COLUMN net_rx_bps_sketch BLOB;
ALTER TABLE host_usage_1m ADD COLUMN net_tx_bps_n INTEGER;
ALTER TABLE host_usage_1m ADD COLUMN net_tx_bps_secs REAL;
ALTER TABLE host_usage_1m ADD COLUMN net_tx_bps_sketch BLOB;

ALTER TABLE host_usage_1h ADD COLUMN cpu_pct_n INTEGER;
ALTER TABLE host_usage_1h ADD COLUMN cpu_pct_secs REAL;
ALTER TABLE host_usage_1h ADD COLUMN cpu_pct_sketch BLOB;
ALTER TABLE host_usage_1h ADD COLUMN mem_used_pct_n INTEGER;
ALTER TABLE host_usage_1h ADD COLUMN mem_used_pct_secs REAL;
ALTER TABLE host_usage_1h ADD COLUMN mem_used_pct_sketch BLOB;
ALTER TABLE host_usage_1h ADD COLUMN disk_read_bytes_s_n INTEGER;
ALTER TABLE host_usage_1h ADD COLUMN disk_read_bytes_s_secs REAL;
ALTER TABLE host_usage_1h ADD COLUMN disk_read_bytes_s_sketch BLOB;
ALTER TABLE host_usage_1h ADD COLUMN disk_write_bytes_s_n INTEGER;
ALTER TABLE host_usage_1h ADD COLUMN disk_write_bytes_s_secs REAL;
ALTER TABLE host_usage_1h ADD COLUMN disk_write_bytes_s_sketch BLOB;
ALTER TABLE host_usage_1h ADD COLUMN disk_read_iops_n INTEGER;
ALTER TABLE host_usage_1h ADD COLUMN disk_read_iops_secs REAL;
ALTER TABLE host_usage_1h ADD COLUMN disk_read_iops_sketch BLOB;
ALTER TABLE host_usage_1h ADD COLUMN disk_write_iops_n INTEGER;
ALTER TABLE host_usage_1h ADD COLUMN disk_write_iops_secs REAL;
ALTER TABLE host_usage_1h ADD COLUMN disk_write_iops_sketch BLOB;
ALTER TABLE host_usage_1h ADD COLUMN net_rx_bps_n INTEGER;
ALTER TABLE host_usage_1h ADD COLUMN net_rx_bps_secs REAL;
ALTER TABLE host_usage_1h ADD COLUMN net_rx_bps_sketch BLOB;
ALTER TABLE host_usage_1h ADD COLUMN net_tx_bps_n INTEGER;
ALTER TABLE host_usage_1h ADD COLUMN net_tx_bps_secs REAL;
ALTER TABLE host_usage_1h ADD COLUMN net_tx_bps_sketch BLOB;

ALTER TABLE vm_usage_1m ADD COLUMN cpu_pct_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN cpu_pct_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN cpu_pct_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN cpu_vcpu_pct_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN cpu_vcpu_pct_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN cpu_vcpu_pct_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN cpu_vcpu_threads_pct_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN cpu_vcpu_threads_pct_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN cpu_vcpu_threads_pct_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN steal_pct_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN steal_pct_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN steal_pct_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN mem_used_pct_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN mem_used_pct_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN mem_used_pct_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN disk_read_bytes_s_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN disk_read_bytes_s_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN disk_read_bytes_s_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN disk_write_bytes_s_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN disk_write_bytes_s_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN disk_write_bytes_s_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN disk_read_iops_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN disk_read_iops_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN disk_read_iops_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN disk_write_iops_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN disk_write_iops_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN disk_write_iops_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN net_rx_bps_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN net_rx_bps_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN net_rx_bps_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN net_tx_bps_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN net_tx_bps_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN net_tx_bps_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN vcpus_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN vcpus_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN vcpus_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN mem_alloc_bytes_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN mem_alloc_bytes_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN mem_alloc_bytes_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN mem_used_bytes_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN mem_used_bytes_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN mem_used_bytes_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN mem_usable_bytes_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN mem_usable_bytes_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN mem_usable_bytes_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN mem_actual_less_usable_bytes_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN mem_actual_less_usable_bytes_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN mem_actual_less_usable_bytes_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN mem_guest_cache_bytes_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN mem_guest_cache_bytes_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN mem_guest_cache_bytes_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN swap_in_bytes_s_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN swap_in_bytes_s_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN swap_in_bytes_s_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN major_faults_s_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN major_faults_s_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN major_faults_s_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN cpu_ready_pct_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN cpu_ready_pct_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN cpu_ready_pct_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN read_latency_p99_us_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN read_latency_p99_us_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN read_latency_p99_us_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN write_latency_p99_us_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN write_latency_p99_us_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN write_latency_p99_us_sketch BLOB;
ALTER TABLE vm_usage_1m ADD COLUMN kvm_events_s_n INTEGER;
ALTER TABLE vm_usage_1m ADD COLUMN kvm_events_s_secs REAL;
ALTER TABLE vm_usage_1m ADD COLUMN kvm_events_s_sketch BLOB;

ALTER TABLE vm_usage_1h ADD COLUMN cpu_pct_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN cpu_pct_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN cpu_pct_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN cpu_vcpu_pct_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN cpu_vcpu_pct_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN cpu_vcpu_pct_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN cpu_vcpu_threads_pct_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN cpu_vcpu_threads_pct_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN cpu_vcpu_threads_pct_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN steal_pct_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN steal_pct_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN steal_pct_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN mem_used_pct_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN mem_used_pct_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN mem_used_pct_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN disk_read_bytes_s_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN disk_read_bytes_s_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN disk_read_bytes_s_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN disk_write_bytes_s_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN disk_write_bytes_s_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN disk_write_bytes_s_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN disk_read_iops_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN disk_read_iops_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN disk_read_iops_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN disk_write_iops_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN disk_write_iops_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN disk_write_iops_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN net_rx_bps_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN net_rx_bps_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN net_rx_bps_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN net_tx_bps_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN net_tx_bps_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN net_tx_bps_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN vcpus_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN vcpus_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN vcpus_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN mem_alloc_bytes_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN mem_alloc_bytes_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN mem_alloc_bytes_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN mem_used_bytes_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN mem_used_bytes_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN mem_used_bytes_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN mem_usable_bytes_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN mem_usable_bytes_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN mem_usable_bytes_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN mem_actual_less_usable_bytes_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN mem_actual_less_usable_bytes_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN mem_actual_less_usable_bytes_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN mem_guest_cache_bytes_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN mem_guest_cache_bytes_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN mem_guest_cache_bytes_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN swap_in_bytes_s_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN swap_in_bytes_s_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN swap_in_bytes_s_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN major_faults_s_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN major_faults_s_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN major_faults_s_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN cpu_ready_pct_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN cpu_ready_pct_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN cpu_ready_pct_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN read_latency_p99_us_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN read_latency_p99_us_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN read_latency_p99_us_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN write_latency_p99_us_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN write_latency_p99_us_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN write_latency_p99_us_sketch BLOB;
ALTER TABLE vm_usage_1h ADD COLUMN kvm_events_s_n INTEGER;
ALTER TABLE vm_usage_1h ADD COLUMN kvm_events_s_secs REAL;
ALTER TABLE vm_usage_1h ADD COLUMN kvm_events_s_sketch BLOB;

DELETE FROM host_usage_1m
WHERE time >= (SELECT MIN(h.time) FROM host_usage h WHERE h.host_ip = host_usage_1m.host_ip);
DELETE FROM vm_usage_1m
WHERE time >= (SELECT MIN(h.time) FROM host_usage h JOIN vms v ON v.host_ip = h.host_ip
               WHERE v.uuid = vm_usage_1m.uuid);
DELETE FROM host_usage_1h
WHERE time >= (SELECT MIN(h.time) FROM host_usage h WHERE h.host_ip = host_usage_1h.host_ip);
DELETE FROM vm_usage_1h
WHERE time >= (SELECT MIN(h.time) FROM host_usage h JOIN vms v ON v.host_ip = h.host_ip
               WHERE v.uuid = vm_usage_1h.uuid);
