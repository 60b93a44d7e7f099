-- SETMOV embedded store, schema 2: the paper's VM tables (T3, T4) and per-device detail.
-- Same conventions as schema 1: UTC ISO 8601 times with milliseconds, rates per second over
-- the measured interval, NULL when a figure cannot be had for the interval.

-- The host's capacity as libvirt reports it (logical CPUs, memory of all NUMA cells): what VMs
-- are sized against.
ALTER TABLE hosts ADD COLUMN cpus INTEGER;
ALTER TABLE hosts ADD COLUMN memory_bytes INTEGER;

-- T3: one row per VM this host has seen.
CREATE TABLE vms (
    uuid     TEXT PRIMARY KEY,
    host_ip  TEXT NOT NULL REFERENCES hosts (host_ip),
    name     TEXT NOT NULL,
    state    TEXT NOT NULL,   -- at the last tick: running, paused, shutoff, ...
    lct      TEXT             -- last connect time: the last tick it was seen running
);
CREATE INDEX vms_by_host ON vms (host_ip);

-- T4: one row per running (or paused) VM and tick.
CREATE TABLE vm_usage (
    uuid                 TEXT NOT NULL REFERENCES vms (uuid),
    time                 TEXT NOT NULL,
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
    PRIMARY KEY (uuid, time)
) WITHOUT ROWID;

CREATE TABLE vm_disk_usage (
    uuid             TEXT NOT NULL,
    time             TEXT NOT NULL,
    device           TEXT NOT NULL,  -- target in the guest, e.g. vda
    read_bytes_s     REAL NOT NULL,
    write_bytes_s    REAL NOT NULL,
    read_iops        REAL NOT NULL,
    write_iops       REAL NOT NULL,
    read_latency_ms  REAL,           -- mean over the reads completed in the interval
    write_latency_ms REAL,
    PRIMARY KEY (uuid, time, device),
    FOREIGN KEY (uuid, time) REFERENCES vm_usage (uuid, time) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE vm_nic_usage (
    uuid            TEXT NOT NULL,
    time            TEXT NOT NULL,
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
    PRIMARY KEY (uuid, time, iface),
    FOREIGN KEY (uuid, time) REFERENCES vm_usage (uuid, time) ON DELETE CASCADE
) WITHOUT ROWID;
