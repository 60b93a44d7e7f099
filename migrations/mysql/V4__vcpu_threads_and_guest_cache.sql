-- SETMOV fleet schema 4: what right-sizing needs beside the whole qemu process's CPU.
-- cpu_vcpu_threads_pct is the vCPU threads' time alone (Σ vcpu.N.time ÷ (Δt × vCPUs)), the
-- guest's own demand; cpu_vcpu_pct less it is qemu's emulator, I/O threads and vhost work.
-- mem_guest_cache_bytes is the page cache and buffers the guest reports through its balloon.
-- Rolled up like the other VM figures, with schema 3's mem_actual_less_usable_bytes (what
-- sizing reads: the allocation must hold what the guest kernel keeps below its MemTotal).
-- Added columns are NULL for older rows (no table copy with ALGORITHM=INSTANT on MariaDB 10.3+
-- and MySQL 8.0).

ALTER TABLE vm_usage
    ADD COLUMN cpu_vcpu_threads_pct DOUBLE,
    ADD COLUMN mem_guest_cache_bytes BIGINT;

ALTER TABLE vm_usage_1m
    ADD COLUMN mem_actual_less_usable_bytes_avg DOUBLE,
    ADD COLUMN mem_actual_less_usable_bytes_max DOUBLE,
    ADD COLUMN mem_actual_less_usable_bytes_p95 DOUBLE,
    ADD COLUMN cpu_vcpu_threads_pct_avg DOUBLE,
    ADD COLUMN cpu_vcpu_threads_pct_max DOUBLE,
    ADD COLUMN cpu_vcpu_threads_pct_p95 DOUBLE,
    ADD COLUMN mem_guest_cache_bytes_avg DOUBLE,
    ADD COLUMN mem_guest_cache_bytes_max DOUBLE,
    ADD COLUMN mem_guest_cache_bytes_p95 DOUBLE;

ALTER TABLE vm_usage_1h
    ADD COLUMN mem_actual_less_usable_bytes_avg DOUBLE,
    ADD COLUMN mem_actual_less_usable_bytes_max DOUBLE,
    ADD COLUMN mem_actual_less_usable_bytes_p95 DOUBLE,
    ADD COLUMN cpu_vcpu_threads_pct_avg DOUBLE,
    ADD COLUMN cpu_vcpu_threads_pct_max DOUBLE,
    ADD COLUMN cpu_vcpu_threads_pct_p95 DOUBLE,
    ADD COLUMN mem_guest_cache_bytes_avg DOUBLE,
    ADD COLUMN mem_guest_cache_bytes_max DOUBLE,
    ADD COLUMN mem_guest_cache_bytes_p95 DOUBLE;
