-- SETMOV embedded store, schema 1: the paper's host tables (T1, T2) and per-device detail.
-- Times are UTC, ISO 8601 with milliseconds ('2026-11-30T06:00:00.123Z'), so they sort as text.
-- Rates are per second over the measured interval; NULL means "not computable for this
-- interval" (a counter reset, a zero interval, an unreadable file), never zero.

-- T1: one row per hypervisor.
CREATE TABLE hosts (
    host_ip    TEXT PRIMARY KEY,
    host_name  TEXT NOT NULL,
    vmc        INTEGER NOT NULL DEFAULT 0,  -- VMs running at the last tick
    mac        TEXT
);

-- T2: one row per host and tick. The usage tables are WITHOUT ROWID, kept in key order
-- (host, time, ...): one B-tree per table instead of a table and an index, so a tick writes
-- half the pages and a host's time range is one contiguous scan.
CREATE TABLE host_usage (
    host_ip             TEXT NOT NULL REFERENCES hosts (host_ip),
    time                TEXT NOT NULL,
    interval_s          REAL NOT NULL,     -- measured Δt (monotonic clock)
    late_ms             REAL NOT NULL,     -- how long after its scheduled instant the tick was read
    missed_ticks        INTEGER NOT NULL,  -- ticks skipped before this one (Δt spans them)
    cpu_pct             REAL,              -- equation (1): busy, iowait counted as idle
    cpu_user_pct        REAL,
    cpu_system_pct      REAL,
    cpu_iowait_pct      REAL,
    cpu_steal_pct       REAL,
    cpu_guest_pct       REAL,              -- part of user, never added twice
    mem_total_bytes     INTEGER,
    mem_used_pct        REAL,              -- equation (3): total - free - buffers - cached
    mem_nonfree_pct     REAL,              -- the paper's total - free
    mem_unavailable_pct REAL,              -- total - MemAvailable
    disk_read_bytes_s   REAL,              -- equation (4), whole disks only
    disk_write_bytes_s  REAL,
    disk_bytes_s        REAL,
    disk_read_iops      REAL,
    disk_write_iops     REAL,
    net_rx_pps          REAL,              -- equation (5)
    net_tx_pps          REAL,
    net_rx_bytes_s      REAL,
    net_tx_bytes_s      REAL,
    net_rx_avg_pkt_bits REAL,              -- equation (6), with 20 B Ethernet framing
    net_tx_avg_pkt_bits REAL,
    net_rx_bps          REAL,              -- equation (7)
    net_tx_bps          REAL,
    problems            TEXT,              -- what could not be read this tick, if anything
    PRIMARY KEY (host_ip, time)
) WITHOUT ROWID;

CREATE TABLE host_cpu_usage (
    host_ip        TEXT NOT NULL,
    time           TEXT NOT NULL,
    cpu            INTEGER NOT NULL,  -- position of the cpuN line in /proc/stat
    busy_pct       REAL NOT NULL,
    user_pct       REAL NOT NULL,
    system_pct     REAL NOT NULL,
    iowait_pct     REAL NOT NULL,
    steal_pct      REAL NOT NULL,
    guest_pct      REAL NOT NULL,
    PRIMARY KEY (host_ip, time, cpu),
    FOREIGN KEY (host_ip, time) REFERENCES host_usage (host_ip, time) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE host_disk_usage (
    host_ip        TEXT NOT NULL,
    time           TEXT NOT NULL,
    device         TEXT NOT NULL,
    is_partition   INTEGER NOT NULL,
    read_bytes_s   REAL NOT NULL,
    write_bytes_s  REAL NOT NULL,
    read_iops      REAL NOT NULL,
    write_iops     REAL NOT NULL,
    util_pct       REAL NOT NULL,
    read_await_ms  REAL,
    write_await_ms REAL,
    PRIMARY KEY (host_ip, time, device),
    FOREIGN KEY (host_ip, time) REFERENCES host_usage (host_ip, time) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE host_net_usage (
    host_ip         TEXT NOT NULL,
    time            TEXT NOT NULL,
    iface           TEXT NOT NULL,
    rx_pps          REAL NOT NULL,
    tx_pps          REAL NOT NULL,
    rx_bytes_s      REAL NOT NULL,
    tx_bytes_s      REAL NOT NULL,
    rx_avg_pkt_bits REAL,
    tx_avg_pkt_bits REAL,
    rx_bps          REAL NOT NULL,
    tx_bps          REAL NOT NULL,
    rx_errs         INTEGER NOT NULL,  -- in this interval
    rx_drop         INTEGER NOT NULL,
    tx_errs         INTEGER NOT NULL,
    tx_drop         INTEGER NOT NULL,
    PRIMARY KEY (host_ip, time, iface),
    FOREIGN KEY (host_ip, time) REFERENCES host_usage (host_ip, time) ON DELETE CASCADE
) WITHOUT ROWID;
