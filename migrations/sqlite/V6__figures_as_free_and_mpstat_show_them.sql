-- SETMOV embedded store, schema 6: memory "used" as free(1) and top show it, and host user
-- time as mpstat shows it (issue 15, points 3 and 5).
--
-- host_usage.mem_used_pct, the headline, is now MemTotal - MemAvailable (procps 4's free and
-- top); it was MemTotal - MemFree - Buffers - Cached, which left Shmem (guests' shared-memory
-- backing) out of "used". On a kernel without MemAvailable it is mem_noncache_pct's figure.
-- vm_usage.mem_used_bytes/_pct are now the guest's own view when the guest reports its total
-- (balloon available - usable, of available; mem_source 'balloon-available-usable'); the
-- figure from the allocation (actual - usable) stays in mem_actual_less_usable_bytes.
--
-- The raw rows already stored are rewritten to the new meanings below, from the columns they
-- have. The rollup tables are not: a bucket rolled up before this migration holds the old
-- mem_used_pct (host) and actual - usable (VM) in its mem_used_* columns.

ALTER TABLE host_usage ADD COLUMN cpu_user_excl_guest_pct REAL; -- user - guest: mpstat's %usr
ALTER TABLE host_usage ADD COLUMN mem_used_bytes INTEGER;       -- MemTotal - MemAvailable: free -b's "used"
ALTER TABLE host_usage ADD COLUMN mem_noncache_pct REAL;        -- total - free - buffers - Cached - SReclaimable: procps 3.3's "used"

UPDATE host_usage
SET mem_used_pct = mem_unavailable_pct,
    mem_used_bytes = CAST(ROUND(mem_total_bytes * mem_unavailable_pct / 100.0) AS INTEGER)
WHERE mem_unavailable_pct IS NOT NULL;

ALTER TABLE vm_usage ADD COLUMN mem_actual_less_usable_bytes INTEGER; -- balloon actual - usable

UPDATE vm_usage
SET mem_actual_less_usable_bytes = MAX(mem_alloc_bytes - mem_usable_bytes, 0)
WHERE mem_alloc_bytes IS NOT NULL AND mem_usable_bytes IS NOT NULL;

UPDATE vm_usage
SET mem_used_bytes = MAX(mem_available_bytes - mem_usable_bytes, 0),
    mem_used_pct = 100.0 * MAX(mem_available_bytes - mem_usable_bytes, 0) / mem_available_bytes,
    mem_source = 'balloon-available-usable'
WHERE mem_available_bytes > 0 AND mem_usable_bytes IS NOT NULL;
