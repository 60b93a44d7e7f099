-- SETMOV embedded store, schema 4: what the eBPF probes saw, beside T2 (host) and T4 (VMs).
-- Same conventions as before: UTC ISO 8601 times with milliseconds, rates per second over the
-- interval, NULL when a figure cannot be had. Directions are 'read'/'write' for block I/O and
-- 'rx'/'tx' from the guest's point of view for NICs. Histogram buckets are log2: bucket b
-- counts values in [2^b, 2^(b+1)) (bucket 0 also holds 0); only non-empty buckets are stored.

-- The host's block I/O as the block probe saw it, and the part no VM's qemu process
-- submitted (host processes, writeback kworkers, unknown submitters).
CREATE TABLE host_ebpf_usage (
    host_ip                     TEXT NOT NULL REFERENCES hosts (host_ip),
    time                        TEXT NOT NULL,
    interval_s                  REAL NOT NULL,
    block_read_bytes_s          REAL,
    block_write_bytes_s         REAL,
    block_read_iops             REAL,
    block_write_iops            REAL,
    unattributed_read_bytes_s   REAL,
    unattributed_write_bytes_s  REAL,
    unattributed_read_iops      REAL,
    unattributed_write_iops     REAL,
    PRIMARY KEY (host_ip, time)
) WITHOUT ROWID;

-- Issue-to-completion latency per block device and direction.
CREATE TABLE host_disk_latency (
    host_ip    TEXT NOT NULL,
    time       TEXT NOT NULL,
    device     TEXT NOT NULL,
    direction  TEXT NOT NULL,
    requests   INTEGER NOT NULL,   -- completed in the interval
    p50_us     REAL NOT NULL,
    p95_us     REAL NOT NULL,
    p99_us     REAL NOT NULL,
    PRIMARY KEY (host_ip, time, device, direction),
    FOREIGN KEY (host_ip, time) REFERENCES host_ebpf_usage (host_ip, time) ON DELETE CASCADE
) WITHOUT ROWID;

-- Each eBPF program's cost, when `setmov run --bpf-stats` turned the kernel's statistics on.
CREATE TABLE ebpf_program_stats (
    host_ip        TEXT NOT NULL,
    time           TEXT NOT NULL,
    program        TEXT NOT NULL,
    events_s       REAL NOT NULL,
    mean_ns        REAL,            -- NULL when the program did not run in the interval
    PRIMARY KEY (host_ip, time, program),
    FOREIGN KEY (host_ip, time) REFERENCES host_ebpf_usage (host_ip, time) ON DELETE CASCADE
) WITHOUT ROWID;

-- Per VM and tick: its qemu process's block I/O and latency, its vCPUs' run-queue wait
-- ("CPU ready"), its KVM events and its taps' traffic, as the probes saw them.
CREATE TABLE vm_ebpf_usage (
    time                  TEXT NOT NULL,
    uuid                  TEXT NOT NULL REFERENCES vms (uuid),
    interval_s            REAL NOT NULL,  -- the probes' interval (a VM's first tick has one)
    block_read_bytes_s    REAL,
    block_write_bytes_s   REAL,
    block_read_iops       REAL,
    block_write_iops      REAL,
    read_latency_p50_us   REAL,
    read_latency_p95_us   REAL,
    read_latency_p99_us   REAL,
    write_latency_p50_us  REAL,
    write_latency_p95_us  REAL,
    write_latency_p99_us  REAL,
    cpu_ready_pct         REAL,     -- vCPU run-queue wait ÷ (vCPUs × interval)
    cpu_ready_p99_us      REAL,     -- of the single waits
    kvm_events_s          REAL,     -- all KVM events of the qemu process
    net_rx_pps            REAL,
    net_tx_pps            REAL,
    net_rx_bytes_s        REAL,
    net_tx_bytes_s        REAL,
    net_drops_s           REAL,
    PRIMARY KEY (time, uuid)
) WITHOUT ROWID;

CREATE TABLE vm_latency_hist (
    time       TEXT NOT NULL,
    uuid       TEXT NOT NULL,
    direction  TEXT NOT NULL,
    bucket     INTEGER NOT NULL,    -- log2 of nanoseconds
    requests   INTEGER NOT NULL,
    PRIMARY KEY (time, uuid, direction, bucket),
    FOREIGN KEY (time, uuid) REFERENCES vm_ebpf_usage (time, uuid) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE vm_kvm_events (
    time    TEXT NOT NULL,
    uuid    TEXT NOT NULL,
    event   TEXT NOT NULL,          -- kvm_exit, kvm_userspace_exit, kvm_pio, ...
    reason  TEXT NOT NULL,          -- the kernel's name for it, e.g. KVM_EXIT_IO
    count   INTEGER NOT NULL,
    PRIMARY KEY (time, uuid, event, reason),
    FOREIGN KEY (time, uuid) REFERENCES vm_ebpf_usage (time, uuid) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE vm_nic_packet_sizes (
    time       TEXT NOT NULL,
    uuid       TEXT NOT NULL,
    iface      TEXT NOT NULL,       -- host-side tap device
    direction  TEXT NOT NULL,
    bucket     INTEGER NOT NULL,    -- log2 of bytes
    packets    INTEGER NOT NULL,
    PRIMARY KEY (time, uuid, iface, direction, bucket),
    FOREIGN KEY (time, uuid) REFERENCES vm_ebpf_usage (time, uuid) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE vm_nic_drops (
    time     TEXT NOT NULL,
    uuid     TEXT NOT NULL,
    iface    TEXT NOT NULL,
    reason   TEXT NOT NULL,         -- the kernel's drop reason, e.g. NETFILTER_DROP
    packets  INTEGER NOT NULL,
    PRIMARY KEY (time, uuid, iface, reason),
    FOREIGN KEY (time, uuid) REFERENCES vm_ebpf_usage (time, uuid) ON DELETE CASCADE
) WITHOUT ROWID;
