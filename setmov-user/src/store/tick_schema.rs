//! The data tables a tick writes and their columns: the one list that both builds a tick's
//! rows ([`super::rows`]) and judges rows read back from outside the process (a spool file), so
//! that SQL is only ever built from names this build knows. `hosts` and `vms` are not here:
//! their statements are fixed text.

use std::collections::HashSet;

use super::rows::Rows;

/// One table a tick writes, with its columns in the order the tick builder fills them.
#[derive(Debug)]
pub struct TableSchema {
    pub name: &'static str,
    pub columns: &'static [&'static str],
}

pub const HOST_USAGE: TableSchema = TableSchema {
    name: "host_usage",
    columns: &[
        "host_ip",
        "time",
        "interval_s",
        "late_ms",
        "missed_ticks",
        "cpu_pct",
        "cpu_user_pct",
        "cpu_system_pct",
        "cpu_iowait_pct",
        "cpu_steal_pct",
        "cpu_guest_pct",
        "cpu_user_excl_guest_pct",
        "mem_total_bytes",
        "mem_used_pct",
        "mem_used_bytes",
        "mem_nonfree_pct",
        "mem_noncache_pct",
        "mem_unavailable_pct",
        "disk_read_bytes_s",
        "disk_write_bytes_s",
        "disk_bytes_s",
        "disk_read_iops",
        "disk_write_iops",
        "net_rx_pps",
        "net_tx_pps",
        "net_rx_bytes_s",
        "net_tx_bytes_s",
        "net_rx_avg_pkt_bits",
        "net_tx_avg_pkt_bits",
        "net_rx_bps",
        "net_tx_bps",
        "problems",
    ],
};

pub const HOST_CPU_USAGE: TableSchema = TableSchema {
    name: "host_cpu_usage",
    columns: &[
        "host_ip",
        "time",
        "cpu",
        "busy_pct",
        "user_pct",
        "system_pct",
        "iowait_pct",
        "steal_pct",
        "guest_pct",
    ],
};

pub const HOST_DISK_USAGE: TableSchema = TableSchema {
    name: "host_disk_usage",
    columns: &[
        "host_ip",
        "time",
        "device",
        "is_partition",
        "read_bytes_s",
        "write_bytes_s",
        "read_iops",
        "write_iops",
        "util_pct",
        "read_await_ms",
        "write_await_ms",
        "in_host_total",
    ],
};

/// `host_net_usage` and `vm_nic_usage` differ in their owner column (the first) and the
/// host's `in_host_total` (the last).
pub const HOST_NET_USAGE: TableSchema = TableSchema {
    name: "host_net_usage",
    columns: &[
        "host_ip",
        "time",
        "iface",
        "rx_pps",
        "tx_pps",
        "rx_bytes_s",
        "tx_bytes_s",
        "rx_avg_pkt_bits",
        "tx_avg_pkt_bits",
        "rx_bps",
        "tx_bps",
        "rx_errs",
        "rx_drop",
        "tx_errs",
        "tx_drop",
        "in_host_total",
    ],
};

pub const VM_NIC_USAGE: TableSchema = TableSchema {
    name: "vm_nic_usage",
    columns: &[
        "uuid",
        "time",
        "iface",
        "rx_pps",
        "tx_pps",
        "rx_bytes_s",
        "tx_bytes_s",
        "rx_avg_pkt_bits",
        "tx_avg_pkt_bits",
        "rx_bps",
        "tx_bps",
        "rx_errs",
        "rx_drop",
        "tx_errs",
        "tx_drop",
    ],
};

pub const HOST_EBPF_USAGE: TableSchema = TableSchema {
    name: "host_ebpf_usage",
    columns: &[
        "host_ip",
        "time",
        "interval_s",
        "block_read_bytes_s",
        "block_write_bytes_s",
        "block_read_iops",
        "block_write_iops",
        "unattributed_read_bytes_s",
        "unattributed_write_bytes_s",
        "unattributed_read_iops",
        "unattributed_write_iops",
        "latency_collided",
        "latency_overflowed",
        "latency_unpaired",
    ],
};

pub const HOST_DISK_LATENCY: TableSchema = TableSchema {
    name: "host_disk_latency",
    columns: &[
        "host_ip",
        "time",
        "device",
        "direction",
        "requests",
        "p50_us",
        "p95_us",
        "p99_us",
    ],
};

pub const EBPF_PROGRAM_STATS: TableSchema = TableSchema {
    name: "ebpf_program_stats",
    columns: &["host_ip", "time", "program", "events_s", "mean_ns"],
};

pub const VM_USAGE: TableSchema = TableSchema {
    name: "vm_usage",
    columns: &[
        "uuid",
        "time",
        "interval_s",
        "state",
        "missing",
        "qemu_pid",
        "vcpus",
        "cpu_pct",
        "cpu_vcpu_pct",
        "steal_pct",
        "mem_alloc_bytes",
        "mem_max_bytes",
        "mem_used_bytes",
        "mem_used_pct",
        "mem_source",
        "mem_actual_less_usable_bytes",
        "mem_unused_bytes",
        "mem_usable_bytes",
        "mem_available_bytes",
        "rss_bytes",
        "swap_in_bytes_s",
        "swap_out_bytes_s",
        "major_faults_s",
        "minor_faults_s",
        "disk_read_bytes_s",
        "disk_write_bytes_s",
        "disk_read_iops",
        "disk_write_iops",
        "net_rx_pps",
        "net_tx_pps",
        "net_rx_bytes_s",
        "net_tx_bytes_s",
        "net_rx_avg_pkt_bits",
        "net_tx_avg_pkt_bits",
        "net_rx_bps",
        "net_tx_bps",
        "cpu_vcpu_threads_pct",
        "mem_guest_cache_bytes",
    ],
};

pub const VM_DISK_USAGE: TableSchema = TableSchema {
    name: "vm_disk_usage",
    columns: &[
        "uuid",
        "time",
        "device",
        "read_bytes_s",
        "write_bytes_s",
        "read_iops",
        "write_iops",
        "read_latency_ms",
        "write_latency_ms",
    ],
};

pub const VM_EBPF_USAGE: TableSchema = TableSchema {
    name: "vm_ebpf_usage",
    columns: &[
        "uuid",
        "time",
        "interval_s",
        "block_read_bytes_s",
        "block_write_bytes_s",
        "block_read_iops",
        "block_write_iops",
        "read_latency_p50_us",
        "read_latency_p95_us",
        "read_latency_p99_us",
        "write_latency_p50_us",
        "write_latency_p95_us",
        "write_latency_p99_us",
        "cpu_ready_pct",
        "cpu_ready_p99_us",
        "kvm_events_s",
        "net_rx_pps",
        "net_tx_pps",
        "net_rx_bytes_s",
        "net_tx_bytes_s",
        "net_drops_s",
    ],
};

pub const VM_LATENCY_HIST: TableSchema = TableSchema {
    name: "vm_latency_hist",
    columns: &["uuid", "time", "direction", "low_ns", "high_ns", "requests"],
};

pub const VM_KVM_EVENTS: TableSchema = TableSchema {
    name: "vm_kvm_events",
    columns: &["uuid", "time", "event", "reason", "count"],
};

pub const VM_NIC_PACKET_SIZES: TableSchema = TableSchema {
    name: "vm_nic_packet_sizes",
    columns: &["uuid", "time", "iface", "direction", "bucket", "packets"],
};

pub const VM_NIC_DROPS: TableSchema = TableSchema {
    name: "vm_nic_drops",
    columns: &["uuid", "time", "iface", "reason", "packets"],
};

/// Every table a tick's rows may name.
pub const TICK_TABLES: &[&TableSchema] = &[
    &HOST_USAGE,
    &HOST_CPU_USAGE,
    &HOST_DISK_USAGE,
    &HOST_NET_USAGE,
    &HOST_EBPF_USAGE,
    &HOST_DISK_LATENCY,
    &EBPF_PROGRAM_STATS,
    &VM_USAGE,
    &VM_DISK_USAGE,
    &VM_NIC_USAGE,
    &VM_EBPF_USAGE,
    &VM_LATENCY_HIST,
    &VM_KVM_EVENTS,
    &VM_NIC_PACKET_SIZES,
    &VM_NIC_DROPS,
];

/// Why rows read from outside the process may not become SQL. Names are shown with `{:?}` so a
/// crafted one cannot forge a log line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    #[error("table {0:?} is not one a tick writes")]
    UnknownTable(String),
    #[error("table {table}: column {column:?} is not one of its columns")]
    UnknownColumn { table: &'static str, column: String },
    #[error("table {table}: column {column} is named twice")]
    DuplicateColumn {
        table: &'static str,
        column: &'static str,
    },
    #[error("table {table}: no columns")]
    NoColumns { table: &'static str },
    #[error("table {table}: row {row} has {values} values for {columns} columns")]
    RowLength {
        table: &'static str,
        row: usize,
        values: usize,
        columns: usize,
    },
}

/// The known table named `name`.
pub fn table(name: &str) -> Option<&'static TableSchema> {
    TICK_TABLES.iter().copied().find(|t| t.name == name)
}

/// Checks that `rows` name only known tables and their columns, each once, and that every row
/// has one value per column: what makes them safe to turn into SQL text.
pub fn check(rows: &Rows) -> Result<(), SchemaError> {
    let known = table(&rows.table).ok_or_else(|| SchemaError::UnknownTable(rows.table.clone()))?;
    if rows.columns.is_empty() {
        return Err(SchemaError::NoColumns { table: known.name });
    }
    let mut seen = HashSet::new();
    for column in &rows.columns {
        let Some(name) = known.columns.iter().copied().find(|c| c == column) else {
            return Err(SchemaError::UnknownColumn {
                table: known.name,
                column: column.clone(),
            });
        };
        if !seen.insert(name) {
            return Err(SchemaError::DuplicateColumn {
                table: known.name,
                column: name,
            });
        }
    }
    for (row, values) in rows.rows.iter().enumerate() {
        if values.len() != rows.columns.len() {
            return Err(SchemaError::RowLength {
                table: known.name,
                row,
                values: values.len(),
                columns: rows.columns.len(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::store::rows::Value;

    /// Table → columns, from the `CREATE TABLE` and `ALTER TABLE … ADD COLUMN`/`DROP COLUMN`
    /// statements of the MySQL migrations.
    fn migrated_tables() -> BTreeMap<String, BTreeSet<String>> {
        let sql = [
            include_str!("../../../migrations/mysql/V1__schema.sql"),
            include_str!("../../../migrations/mysql/V2__rollups.sql"),
            include_str!("../../../migrations/mysql/V3__figures_as_free_and_mpstat_show_them.sql"),
            include_str!("../../../migrations/mysql/V4__vcpu_threads_and_guest_cache.sql"),
            include_str!("../../../migrations/mysql/V5__host_total_devices.sql"),
            include_str!("../../../migrations/mysql/V6__latency_buckets.sql"),
            include_str!("../../../migrations/mysql/V7__rollup_counts_and_sketches.sql"),
        ]
        .join("\n");
        let mut tables = BTreeMap::new();
        let mut current: Option<(String, BTreeSet<String>)> = None;
        let mut altered: Option<String> = None;
        for line in sql.lines().map(str::trim) {
            // `ALTER TABLE t ADD COLUMN c …;` on one line, or `ALTER TABLE t` then one
            // `ADD COLUMN c …,` per line.
            if let Some((table, column)) = line
                .strip_prefix("ALTER TABLE ")
                .and_then(|rest| rest.split_once(" ADD COLUMN "))
            {
                let column = column.split_whitespace().next().unwrap_or_default();
                tables
                    .entry(table.to_owned())
                    .or_insert_with(BTreeSet::new)
                    .insert(column.to_owned());
            } else if let Some(name) = line
                .strip_prefix("ALTER TABLE ")
                .and_then(|rest| rest.split_whitespace().next())
            {
                altered = Some(name.to_owned());
            } else if let (Some(table), Some(rest)) = (&altered, line.strip_prefix("ADD COLUMN ")) {
                let column = rest.split_whitespace().next().unwrap_or_default();
                tables
                    .entry(table.clone())
                    .or_insert_with(BTreeSet::new)
                    .insert(column.to_owned());
            } else if let (Some(table), Some(rest)) = (&altered, line.strip_prefix("DROP COLUMN "))
            {
                // `DROP COLUMN c,` or `DROP COLUMN c;`, one per line under `ALTER TABLE t`.
                let column = rest.trim_end_matches([',', ';']);
                if let Some(columns) = tables.get_mut(table) {
                    columns.remove(column);
                }
            }
            if line.ends_with(';') {
                altered = None;
            }
            if let Some(name) = line
                .strip_prefix("CREATE TABLE ")
                .and_then(|rest| rest.split_whitespace().next())
            {
                current = Some((name.to_owned(), BTreeSet::new()));
            } else if line.starts_with(')') {
                if let Some((name, columns)) = current.take() {
                    tables.insert(name, columns);
                }
            } else if let Some((_, columns)) = &mut current {
                let first = line.split_whitespace().next().unwrap_or_default();
                let is_key =
                    ["PRIMARY", "FOREIGN", "INDEX", "KEY", "UNIQUE", "CONSTRAINT"].contains(&first);
                if !first.is_empty() && !first.starts_with("--") && !is_key {
                    columns.insert(first.to_owned());
                }
            }
        }
        tables
    }

    #[test]
    fn the_list_matches_the_mysql_migrations() {
        let migrated = migrated_tables();
        assert!(migrated.len() > TICK_TABLES.len(), "{migrated:?}");
        for t in TICK_TABLES {
            let columns: BTreeSet<String> = t.columns.iter().map(|c| (*c).to_owned()).collect();
            assert_eq!(columns.len(), t.columns.len(), "{}: a column twice", t.name);
            assert_eq!(migrated.get(t.name), Some(&columns), "{}", t.name);
        }
    }

    #[test]
    fn the_tables_of_a_full_tick_pass_their_own_check() {
        let tick = crate::export::prometheus::fixtures::full_tick(1);
        let rows = crate::store::rows::tick_rows(&tick, "2026-11-30 06:00:00.000");
        let written: BTreeSet<&str> = rows.tables.iter().map(|t| t.table.as_str()).collect();
        let known: BTreeSet<&str> = TICK_TABLES.iter().map(|t| t.name).collect();
        assert!(
            written.len() > 10 && written.is_subset(&known),
            "{written:?}"
        );
        for table in &rows.tables {
            assert_eq!(check(table), Ok(()));
        }
    }

    fn rows(table: &str, columns: &[&str], values: Vec<Vec<Value>>) -> Rows {
        Rows {
            table: table.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: values,
        }
    }

    #[test]
    fn only_known_names_in_a_known_shape_pass() {
        let ok = rows(
            "ebpf_program_stats",
            &["host_ip", "time", "program"],
            vec![vec!["h".into(), "t".into(), "p".into()]],
        );
        assert_eq!(check(&ok), Ok(()));
        let crafted = rows("hosts; DROP TABLE hosts; --", &["host_ip"], vec![]);
        assert_eq!(
            check(&crafted),
            Err(SchemaError::UnknownTable(crafted.table.clone()))
        );
        let column = "x) VALUES (1); --";
        let err = check(&rows("vm_nic_drops", &["uuid", column], vec![])).expect_err("column");
        assert_eq!(
            err.to_string(),
            "table vm_nic_drops: column \"x) VALUES (1); --\" is not one of its columns"
        );
        assert!(matches!(
            check(&rows("vm_nic_drops", &["uuid", "time", "uuid"], vec![])),
            Err(SchemaError::DuplicateColumn { column: "uuid", .. })
        ));
        assert!(matches!(
            check(&rows("vm_nic_drops", &[], vec![])),
            Err(SchemaError::NoColumns { .. })
        ));
        assert!(matches!(
            check(&rows(
                "vm_nic_drops",
                &["uuid", "time"],
                vec![vec![Value::Null]]
            )),
            Err(SchemaError::RowLength {
                values: 1,
                columns: 2,
                ..
            })
        ));
    }
}
