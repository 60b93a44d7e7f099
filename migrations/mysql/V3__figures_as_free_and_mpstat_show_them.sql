-- SETMOV on MySQL/MariaDB, schema 3: memory "used" as free(1) and top show it, and host user
-- time as mpstat shows it (see migrations/sqlite/V6__figures_as_free_and_mpstat_show_them.sql
-- for what each column holds and how the stored rows are rewritten; the rollup tables are not).

ALTER TABLE host_usage
    ADD COLUMN cpu_user_excl_guest_pct DOUBLE,
    ADD COLUMN mem_used_bytes BIGINT,
    ADD COLUMN mem_noncache_pct DOUBLE;

UPDATE host_usage
SET mem_used_pct = mem_unavailable_pct,
    mem_used_bytes = CAST(ROUND(mem_total_bytes * mem_unavailable_pct / 100e0) AS SIGNED)
WHERE mem_unavailable_pct IS NOT NULL;

ALTER TABLE vm_usage
    ADD COLUMN mem_actual_less_usable_bytes BIGINT;

UPDATE vm_usage
SET mem_actual_less_usable_bytes = GREATEST(mem_alloc_bytes - mem_usable_bytes, 0)
WHERE mem_alloc_bytes IS NOT NULL AND mem_usable_bytes IS NOT NULL;

UPDATE vm_usage
SET mem_used_bytes = GREATEST(mem_available_bytes - mem_usable_bytes, 0),
    mem_used_pct = 100e0 * GREATEST(mem_available_bytes - mem_usable_bytes, 0) / mem_available_bytes,
    mem_source = 'balloon-available-usable'
WHERE mem_available_bytes > 0 AND mem_usable_bytes IS NOT NULL;
