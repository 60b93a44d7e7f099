-- SETMOV embedded store, schema 3: the per-VM tables are keyed by time first.
--
-- Keyed by (uuid, time), every VM's row of a tick lands in a B-tree page of its own, so a tick
-- with N VMs rewrites about 3 N pages (T4, disks, NICs) into the WAL. Keyed by (time, uuid),
-- a tick's rows are appended side by side in the last pages: the cost of a tick no longer
-- grows with pages per VM, only with the bytes written. Reads are by time window (reports,
-- `setmov show`), which this order serves directly; one VM's rows are filtered out of its
-- window.

ALTER TABLE vm_usage RENAME TO vm_usage_v2;
ALTER TABLE vm_disk_usage RENAME TO vm_disk_usage_v2;
ALTER TABLE vm_nic_usage RENAME TO vm_nic_usage_v2;

CREATE TABLE vm_usage (
    time                 TEXT NOT NULL,
    uuid                 TEXT NOT NULL REFERENCES vms (uuid),
    interval_s           REAL,             -- measured Δt since this VM's previous sample
    state                TEXT NOT NULL,
    missing              TEXT,             -- why this tick has no figures; NULL when sampled
    qemu_pid             INTEGER,
    vcpus                INTEGER,
    cpu_pct              REAL,             -- equation (2): ÷ host cores (virt-top)
    cpu_vcpu_pct         REAL,             -- ÷ the VM's vCPUs
    steal_pct            REAL,             -- vCPU run-queue wait on the host, per vCPU
    mem_alloc_bytes      INTEGER,          -- balloon actual
    mem_max_bytes        INTEGER,
    mem_used_bytes       INTEGER,
    mem_used_pct         REAL,             -- of mem_alloc_bytes; NULL when the guest reports nothing
    mem_source           TEXT,             -- balloon-usable, balloon-unused or allocation-only
    mem_unused_bytes     INTEGER,          -- as the guest reports them (virsh dommemstat)
    mem_usable_bytes     INTEGER,
    mem_available_bytes  INTEGER,
    rss_bytes            INTEGER,          -- host-side resident set of the qemu process
    swap_in_bytes_s      REAL,
    swap_out_bytes_s     REAL,
    major_faults_s       REAL,
    minor_faults_s       REAL,
    disk_read_bytes_s    REAL,
    disk_write_bytes_s   REAL,
    disk_read_iops       REAL,
    disk_write_iops      REAL,
    net_rx_pps           REAL,             -- guest's point of view: rx = received by the guest
    net_tx_pps           REAL,
    net_rx_bytes_s       REAL,
    net_tx_bytes_s       REAL,
    net_rx_avg_pkt_bits  REAL,
    net_tx_avg_pkt_bits  REAL,
    net_rx_bps           REAL,
    net_tx_bps           REAL,
    PRIMARY KEY (time, uuid)
) WITHOUT ROWID;

CREATE TABLE vm_disk_usage (
    time             TEXT NOT NULL,
    uuid             TEXT NOT NULL,
    device           TEXT NOT NULL,  -- target in the guest, e.g. vda
    read_bytes_s     REAL NOT NULL,
    write_bytes_s    REAL NOT NULL,
    read_iops        REAL NOT NULL,
    write_iops       REAL NOT NULL,
    read_latency_ms  REAL,           -- mean over the reads completed in the interval
    write_latency_ms REAL,
    PRIMARY KEY (time, uuid, device),
    FOREIGN KEY (time, uuid) REFERENCES vm_usage (time, uuid) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE vm_nic_usage (
    time            TEXT NOT NULL,
    uuid            TEXT NOT NULL,
    iface           TEXT NOT NULL,  -- host-side tap device
    rx_pps          REAL NOT NULL,
    tx_pps          REAL NOT NULL,
    rx_bytes_s      REAL NOT NULL,
    tx_bytes_s      REAL NOT NULL,
    rx_avg_pkt_bits REAL,
    tx_avg_pkt_bits REAL,
    rx_bps          REAL NOT NULL,
    tx_bps          REAL NOT NULL,
    rx_errs         INTEGER NOT NULL,
    rx_drop         INTEGER NOT NULL,
    tx_errs         INTEGER NOT NULL,
    tx_drop         INTEGER NOT NULL,
    PRIMARY KEY (time, uuid, iface),
    FOREIGN KEY (time, uuid) REFERENCES vm_usage (time, uuid) ON DELETE CASCADE
) WITHOUT ROWID;

INSERT INTO vm_usage SELECT time, uuid, interval_s, state, missing, qemu_pid, vcpus, cpu_pct,
    cpu_vcpu_pct, steal_pct, mem_alloc_bytes, mem_max_bytes, mem_used_bytes, mem_used_pct,
    mem_source, mem_unused_bytes, mem_usable_bytes, mem_available_bytes, rss_bytes,
    swap_in_bytes_s, swap_out_bytes_s, major_faults_s, minor_faults_s, disk_read_bytes_s,
    disk_write_bytes_s, disk_read_iops, disk_write_iops, net_rx_pps, net_tx_pps, net_rx_bytes_s,
    net_tx_bytes_s, net_rx_avg_pkt_bits, net_tx_avg_pkt_bits, net_rx_bps, net_tx_bps
FROM vm_usage_v2;
INSERT INTO vm_disk_usage SELECT time, uuid, device, read_bytes_s, write_bytes_s, read_iops,
    write_iops, read_latency_ms, write_latency_ms
FROM vm_disk_usage_v2;
INSERT INTO vm_nic_usage SELECT time, uuid, iface, rx_pps, tx_pps, rx_bytes_s, tx_bytes_s,
    rx_avg_pkt_bits, tx_avg_pkt_bits, rx_bps, tx_bps, rx_errs, rx_drop, tx_errs, tx_drop
FROM vm_nic_usage_v2;

DROP TABLE vm_disk_usage_v2;
DROP TABLE vm_nic_usage_v2;
DROP TABLE vm_usage_v2;
