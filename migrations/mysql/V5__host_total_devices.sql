-- SETMOV on MySQL/MariaDB, schema 5: which devices the host totals count (see
-- migrations/sqlite/V8__host_total_devices.sql): 1 counted, 0 not, NULL for rows written
-- before this schema.

ALTER TABLE host_disk_usage ADD COLUMN in_host_total BIGINT;
ALTER TABLE host_net_usage ADD COLUMN in_host_total BIGINT;
