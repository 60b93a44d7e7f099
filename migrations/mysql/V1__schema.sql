-- SETMOV on MySQL/MariaDB, schema 1: the paper's four tables (T1 hosts, T2 host_usage,
-- T3 vms, T4 vm_usage), their per-device detail and the eBPF tables, as in the embedded store
-- (migrations/sqlite, whose comments describe every column). Times are UTC DATETIME(3).
-- Rates are per second over the measured interval; NULL means "not computable", never zero.
-- VM rows are clustered per VM (uuid, time); a secondary index on time serves host-wide and
-- all-VM time windows.

CREATE TABLE hosts (
    host_ip VARCHAR(45) NOT NULL,
    host_name VARCHAR(255) NOT NULL,
    vmc INT UNSIGNED NOT NULL DEFAULT 0,
    mac VARCHAR(17),
    cpus BIGINT,
    memory_bytes BIGINT,
    PRIMARY KEY (host_ip)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE host_usage (
    host_ip VARCHAR(45) NOT NULL,
    time DATETIME(3) NOT NULL,
    interval_s DOUBLE NOT NULL,
    late_ms DOUBLE NOT NULL,
    missed_ticks BIGINT NOT NULL,
    cpu_pct DOUBLE,
    cpu_user_pct DOUBLE,
    cpu_system_pct DOUBLE,
    cpu_iowait_pct DOUBLE,
    cpu_steal_pct DOUBLE,
    cpu_guest_pct DOUBLE,
    mem_total_bytes BIGINT,
    mem_used_pct DOUBLE,
    mem_nonfree_pct DOUBLE,
    mem_unavailable_pct DOUBLE,
    disk_read_bytes_s DOUBLE,
    disk_write_bytes_s DOUBLE,
    disk_bytes_s DOUBLE,
    disk_read_iops DOUBLE,
    disk_write_iops DOUBLE,
    net_rx_pps DOUBLE,
    net_tx_pps DOUBLE,
    net_rx_bytes_s DOUBLE,
    net_tx_bytes_s DOUBLE,
    net_rx_avg_pkt_bits DOUBLE,
    net_tx_avg_pkt_bits DOUBLE,
    net_rx_bps DOUBLE,
    net_tx_bps DOUBLE,
    problems TEXT,
    PRIMARY KEY (host_ip, time),
    FOREIGN KEY (host_ip) REFERENCES hosts (host_ip)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE host_cpu_usage (
    host_ip VARCHAR(45) NOT NULL,
    time DATETIME(3) NOT NULL,
    cpu BIGINT NOT NULL,
    busy_pct DOUBLE NOT NULL,
    user_pct DOUBLE NOT NULL,
    system_pct DOUBLE NOT NULL,
    iowait_pct DOUBLE NOT NULL,
    steal_pct DOUBLE NOT NULL,
    guest_pct DOUBLE NOT NULL,
    PRIMARY KEY (host_ip, time, cpu),
    FOREIGN KEY (host_ip, time) REFERENCES host_usage (host_ip, time) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE host_disk_usage (
    host_ip VARCHAR(45) NOT NULL,
    time DATETIME(3) NOT NULL,
    device VARCHAR(64) NOT NULL,
    is_partition BIGINT NOT NULL,
    read_bytes_s DOUBLE NOT NULL,
    write_bytes_s DOUBLE NOT NULL,
    read_iops DOUBLE NOT NULL,
    write_iops DOUBLE NOT NULL,
    util_pct DOUBLE NOT NULL,
    read_await_ms DOUBLE,
    write_await_ms DOUBLE,
    PRIMARY KEY (host_ip, time, device),
    FOREIGN KEY (host_ip, time) REFERENCES host_usage (host_ip, time) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE host_net_usage (
    host_ip VARCHAR(45) NOT NULL,
    time DATETIME(3) NOT NULL,
    iface VARCHAR(64) NOT NULL,
    rx_pps DOUBLE NOT NULL,
    tx_pps DOUBLE NOT NULL,
    rx_bytes_s DOUBLE NOT NULL,
    tx_bytes_s DOUBLE NOT NULL,
    rx_avg_pkt_bits DOUBLE,
    tx_avg_pkt_bits DOUBLE,
    rx_bps DOUBLE NOT NULL,
    tx_bps DOUBLE NOT NULL,
    rx_errs BIGINT NOT NULL,
    rx_drop BIGINT NOT NULL,
    tx_errs BIGINT NOT NULL,
    tx_drop BIGINT NOT NULL,
    PRIMARY KEY (host_ip, time, iface),
    FOREIGN KEY (host_ip, time) REFERENCES host_usage (host_ip, time) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE vms (
    uuid CHAR(36) NOT NULL,
    host_ip VARCHAR(45) NOT NULL,
    name VARCHAR(255) NOT NULL,
    state VARCHAR(16) NOT NULL,
    lct DATETIME(3),
    PRIMARY KEY (uuid),
    FOREIGN KEY (host_ip) REFERENCES hosts (host_ip)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE vm_usage (
    time DATETIME(3) NOT NULL,
    uuid CHAR(36) NOT NULL,
    interval_s DOUBLE,
    state VARCHAR(16) NOT NULL,
    missing TEXT,
    qemu_pid BIGINT,
    vcpus BIGINT,
    cpu_pct DOUBLE,
    cpu_vcpu_pct DOUBLE,
    steal_pct DOUBLE,
    mem_alloc_bytes BIGINT,
    mem_max_bytes BIGINT,
    mem_used_bytes BIGINT,
    mem_used_pct DOUBLE,
    mem_source VARCHAR(32),
    mem_unused_bytes BIGINT,
    mem_usable_bytes BIGINT,
    mem_available_bytes BIGINT,
    rss_bytes BIGINT,
    swap_in_bytes_s DOUBLE,
    swap_out_bytes_s DOUBLE,
    major_faults_s DOUBLE,
    minor_faults_s DOUBLE,
    disk_read_bytes_s DOUBLE,
    disk_write_bytes_s DOUBLE,
    disk_read_iops DOUBLE,
    disk_write_iops DOUBLE,
    net_rx_pps DOUBLE,
    net_tx_pps DOUBLE,
    net_rx_bytes_s DOUBLE,
    net_tx_bytes_s DOUBLE,
    net_rx_avg_pkt_bits DOUBLE,
    net_tx_avg_pkt_bits DOUBLE,
    net_rx_bps DOUBLE,
    net_tx_bps DOUBLE,
    PRIMARY KEY (uuid, time),
    FOREIGN KEY (uuid) REFERENCES vms (uuid),
    INDEX vm_usage_by_time (time)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE vm_disk_usage (
    time DATETIME(3) NOT NULL,
    uuid CHAR(36) NOT NULL,
    device VARCHAR(64) NOT NULL,
    read_bytes_s DOUBLE NOT NULL,
    write_bytes_s DOUBLE NOT NULL,
    read_iops DOUBLE NOT NULL,
    write_iops DOUBLE NOT NULL,
    read_latency_ms DOUBLE,
    write_latency_ms DOUBLE,
    PRIMARY KEY (uuid, time, device),
    FOREIGN KEY (uuid, time) REFERENCES vm_usage (uuid, time) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE vm_nic_usage (
    time DATETIME(3) NOT NULL,
    uuid CHAR(36) NOT NULL,
    iface VARCHAR(64) NOT NULL,
    rx_pps DOUBLE NOT NULL,
    tx_pps DOUBLE NOT NULL,
    rx_bytes_s DOUBLE NOT NULL,
    tx_bytes_s DOUBLE NOT NULL,
    rx_avg_pkt_bits DOUBLE,
    tx_avg_pkt_bits DOUBLE,
    rx_bps DOUBLE NOT NULL,
    tx_bps DOUBLE NOT NULL,
    rx_errs BIGINT NOT NULL,
    rx_drop BIGINT NOT NULL,
    tx_errs BIGINT NOT NULL,
    tx_drop BIGINT NOT NULL,
    PRIMARY KEY (uuid, time, iface),
    FOREIGN KEY (uuid, time) REFERENCES vm_usage (uuid, time) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE host_ebpf_usage (
    host_ip VARCHAR(45) NOT NULL,
    time DATETIME(3) NOT NULL,
    interval_s DOUBLE NOT NULL,
    block_read_bytes_s DOUBLE,
    block_write_bytes_s DOUBLE,
    block_read_iops DOUBLE,
    block_write_iops DOUBLE,
    unattributed_read_bytes_s DOUBLE,
    unattributed_write_bytes_s DOUBLE,
    unattributed_read_iops DOUBLE,
    unattributed_write_iops DOUBLE,
    PRIMARY KEY (host_ip, time),
    FOREIGN KEY (host_ip) REFERENCES hosts (host_ip)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE host_disk_latency (
    host_ip VARCHAR(45) NOT NULL,
    time DATETIME(3) NOT NULL,
    device VARCHAR(64) NOT NULL,
    direction VARCHAR(8) NOT NULL,
    requests BIGINT NOT NULL,
    p50_us DOUBLE NOT NULL,
    p95_us DOUBLE NOT NULL,
    p99_us DOUBLE NOT NULL,
    PRIMARY KEY (host_ip, time, device, direction),
    FOREIGN KEY (host_ip, time) REFERENCES host_ebpf_usage (host_ip, time) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE ebpf_program_stats (
    host_ip VARCHAR(45) NOT NULL,
    time DATETIME(3) NOT NULL,
    program VARCHAR(64) NOT NULL,
    events_s DOUBLE NOT NULL,
    mean_ns DOUBLE,
    PRIMARY KEY (host_ip, time, program),
    FOREIGN KEY (host_ip, time) REFERENCES host_ebpf_usage (host_ip, time) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE vm_ebpf_usage (
    time DATETIME(3) NOT NULL,
    uuid CHAR(36) NOT NULL,
    interval_s DOUBLE NOT NULL,
    block_read_bytes_s DOUBLE,
    block_write_bytes_s DOUBLE,
    block_read_iops DOUBLE,
    block_write_iops DOUBLE,
    read_latency_p50_us DOUBLE,
    read_latency_p95_us DOUBLE,
    read_latency_p99_us DOUBLE,
    write_latency_p50_us DOUBLE,
    write_latency_p95_us DOUBLE,
    write_latency_p99_us DOUBLE,
    cpu_ready_pct DOUBLE,
    cpu_ready_p99_us DOUBLE,
    kvm_events_s DOUBLE,
    net_rx_pps DOUBLE,
    net_tx_pps DOUBLE,
    net_rx_bytes_s DOUBLE,
    net_tx_bytes_s DOUBLE,
    net_drops_s DOUBLE,
    PRIMARY KEY (uuid, time),
    FOREIGN KEY (uuid) REFERENCES vms (uuid),
    INDEX vm_ebpf_usage_by_time (time)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE vm_latency_hist (
    time DATETIME(3) NOT NULL,
    uuid CHAR(36) NOT NULL,
    direction VARCHAR(8) NOT NULL,
    bucket BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    PRIMARY KEY (uuid, time, direction, bucket),
    FOREIGN KEY (uuid, time) REFERENCES vm_ebpf_usage (uuid, time) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE vm_kvm_events (
    time DATETIME(3) NOT NULL,
    uuid CHAR(36) NOT NULL,
    event VARCHAR(32) NOT NULL,
    reason VARCHAR(64) NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (uuid, time, event, reason),
    FOREIGN KEY (uuid, time) REFERENCES vm_ebpf_usage (uuid, time) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE vm_nic_packet_sizes (
    time DATETIME(3) NOT NULL,
    uuid CHAR(36) NOT NULL,
    iface VARCHAR(64) NOT NULL,
    direction VARCHAR(8) NOT NULL,
    bucket BIGINT NOT NULL,
    packets BIGINT NOT NULL,
    PRIMARY KEY (uuid, time, iface, direction, bucket),
    FOREIGN KEY (uuid, time) REFERENCES vm_ebpf_usage (uuid, time) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE vm_nic_drops (
    time DATETIME(3) NOT NULL,
    uuid CHAR(36) NOT NULL,
    iface VARCHAR(64) NOT NULL,
    reason VARCHAR(64) NOT NULL,
    packets BIGINT NOT NULL,
    PRIMARY KEY (uuid, time, iface, reason),
    FOREIGN KEY (uuid, time) REFERENCES vm_ebpf_usage (uuid, time) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
