-- SETMOV embedded store, schema 8: which devices the host totals count. The host disk total
-- (host_usage.disk_*) sums the whole disks nothing sits below in the device topology (not
-- device-mapper, md, loop, zram, nbd, RAM or optical devices, which carry I/O a disk below them
-- carries again); the host network total (host_usage.net_*) sums the NICs on a bus (not
-- loopback, bonds, VLANs, bridges, veths, taps or macvtaps, whose frames a NIC carries again).
-- in_host_total says whether a device's row is one of them: 1 counted, 0 not, NULL for rows
-- written before this schema. For any tick with a total, SUM over the rows with in_host_total = 1
-- equals the total.

ALTER TABLE host_disk_usage ADD COLUMN in_host_total INTEGER;
ALTER TABLE host_net_usage ADD COLUMN in_host_total INTEGER;
