//! The embedded default store: one SQLite file, schema from `migrations/sqlite`.
//!
//! WAL journal with `synchronous=NORMAL`: a commit survives a crash of the monitor; after a
//! power loss the last ticks before it may be missing, but the file is never corrupt. That
//! keeps a tick's commit off the disk's flush path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, Transaction, params};

use crate::usage::ebpf::{HostEbpfFigures, VmEbpfFigures, VmNicTraffic, direction_name};
use crate::usage::host::NetRates;
use crate::vm::stats::DomainState;
use setmov_common::{DIR_READ, DIR_WRITE};

use super::{
    HostSample, HostUsageQuery, HostUsageRow, Store, StoreError, TickRecord, VmSample,
    VmUsageQuery, VmUsageRow, format_time,
};

mod embedded {
    refinery::embed_migrations!("../migrations/sqlite");
}

/// The SQLite store. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct SqliteStore {
    state: Arc<Mutex<OpenDatabase>>,
    path: PathBuf,
}

/// The connection and the T1 row it last wrote.
struct OpenDatabase {
    conn: Connection,
    written_host: Option<HostRow>,
    /// The T3 rows written, by UUID.
    written_vms: HashMap<String, T3Row>,
}

/// A T3 row but its last connect time: name, state, host.
type T3Row = (String, &'static str, String);

/// A T1 row.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostRow {
    ip: String,
    name: String,
    mac: Option<String>,
    vmc: u32,
    cpus: Option<u32>,
    memory_bytes: Option<u64>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    /// A database written by a newer SETMOV (migrations this build does not know) is refused.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(open_err)?;
        embedded::migrations::runner()
            .set_abort_divergent(true)
            .set_abort_missing(true)
            .run(&mut conn)
            .map_err(|e| StoreError::Migrate {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        Ok(SqliteStore {
            state: Arc::new(Mutex::new(OpenDatabase {
                conn,
                written_host: None,
                written_vms: HashMap::new(),
            })),
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one tick in one transaction (the blocking half of [`Store::write_tick`]).
    pub fn write_tick_blocking(&self, tick: &TickRecord) -> Result<(), StoreError> {
        let mut guard = self.lock()?;
        let state = &mut *guard;
        // What libvirt could not tell this tick (it was unreachable) keeps its last value.
        let last = state.written_host.clone();
        let host_row = HostRow {
            ip: tick.host.ip.clone(),
            name: tick.host.name.clone(),
            mac: tick.host.mac.clone(),
            vmc: tick.vm_count.or(last.as_ref().map(|h| h.vmc)).unwrap_or(0),
            cpus: tick
                .node
                .map(|n| n.cpus)
                .or(last.as_ref().and_then(|h| h.cpus)),
            memory_bytes: tick
                .node
                .and_then(|n| n.memory_bytes)
                .or(last.as_ref().and_then(|h| h.memory_bytes)),
        };
        // T1 changes rarely; writing it only when it does saves a page write per tick.
        let host_changed = last.as_ref() != Some(&host_row);
        let tx = state.conn.transaction()?;
        if host_changed {
            tx.prepare_cached(
                "INSERT INTO hosts (host_ip, host_name, vmc, mac, cpus, memory_bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (host_ip) DO UPDATE SET host_name = excluded.host_name,
                     vmc = excluded.vmc, mac = excluded.mac, cpus = excluded.cpus,
                     memory_bytes = excluded.memory_bytes",
            )?
            .execute(params![
                host_row.ip,
                host_row.name,
                host_row.vmc,
                host_row.mac,
                host_row.cpus,
                host_row.memory_bytes
            ])?;
        }
        let time = format_time(tick.time);
        if let Some(sample) = &tick.host_sample {
            insert_host_sample(&tx, &tick.host.ip, &time, sample)?;
        }
        if let Some(ebpf) = &tick.ebpf {
            insert_host_ebpf(&tx, &tick.host.ip, &time, ebpf)?;
        }
        let mut t3_written = Vec::new();
        for vm in &tick.vms {
            insert_vm_sample(
                &tx,
                &tick.host.ip,
                &time,
                vm,
                &state.written_vms,
                &mut t3_written,
            )?;
        }
        let running: Vec<&str> = tick
            .vms
            .iter()
            .filter(|v| v.state.is_some_and(DomainState::is_running))
            .map(|v| v.uuid.as_str())
            .collect();
        if !running.is_empty() {
            // One statement for every running VM's last connect time.
            let uuids =
                serde_json::to_string(&running).map_err(|e| StoreError::Worker(e.to_string()))?;
            tx.prepare_cached(
                "UPDATE vms SET lct = ?1 WHERE uuid IN (SELECT value FROM json_each(?2))",
            )?
            .execute(params![time, uuids])?;
        }
        tx.commit()?;
        // Only a committed tick changes what T3 holds.
        state.written_vms.extend(t3_written);
        if host_changed {
            state.written_host = Some(host_row);
        }
        Ok(())
    }

    /// The blocking half of [`Store::recent_host_usage`].
    pub fn recent_host_usage_blocking(
        &self,
        query: &HostUsageQuery,
    ) -> Result<Vec<HostUsageRow>, StoreError> {
        let state = self.lock()?;
        let mut stmt = state.conn.prepare(
            "SELECT host_ip, time, interval_s, late_ms, cpu_pct, mem_used_pct,
                    disk_read_bytes_s, disk_write_bytes_s, net_rx_bps, net_tx_bps
             FROM host_usage WHERE (?1 IS NULL OR host_ip = ?1)
             ORDER BY time DESC LIMIT ?2",
        )?;
        let mut rows = stmt
            .query_map(params![query.host_ip, query.limit], |r| {
                Ok(HostUsageRow {
                    host_ip: r.get(0)?,
                    time: r.get(1)?,
                    interval_s: r.get(2)?,
                    late_ms: r.get(3)?,
                    cpu_pct: r.get(4)?,
                    mem_used_pct: r.get(5)?,
                    disk_read_bytes_s: r.get(6)?,
                    disk_write_bytes_s: r.get(7)?,
                    net_rx_bps: r.get(8)?,
                    net_tx_bps: r.get(9)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// The blocking half of [`Store::recent_vm_usage`].
    pub fn recent_vm_usage_blocking(
        &self,
        query: &VmUsageQuery,
    ) -> Result<Vec<VmUsageRow>, StoreError> {
        let state = self.lock()?;
        let mut stmt = state.conn.prepare(
            "SELECT u.uuid, v.name, v.host_ip, u.time, u.state, u.missing, u.vcpus, u.cpu_pct,
                    u.cpu_vcpu_pct, u.steal_pct, u.mem_alloc_bytes, u.mem_used_pct, u.mem_source,
                    u.rss_bytes, u.disk_read_bytes_s, u.disk_write_bytes_s, u.net_rx_bps,
                    u.net_tx_bps
             FROM vm_usage u JOIN vms v ON v.uuid = u.uuid
             WHERE (?1 IS NULL OR v.host_ip = ?1) AND (?2 IS NULL OR v.name = ?2 OR v.uuid = ?2)
             ORDER BY u.time DESC, v.name DESC LIMIT ?3",
        )?;
        let mut rows = stmt
            .query_map(params![query.host_ip, query.vm, query.limit], |r| {
                Ok(VmUsageRow {
                    uuid: r.get(0)?,
                    name: r.get(1)?,
                    host_ip: r.get(2)?,
                    time: r.get(3)?,
                    state: r.get(4)?,
                    missing: r.get(5)?,
                    vcpus: r.get(6)?,
                    cpu_pct: r.get(7)?,
                    cpu_vcpu_pct: r.get(8)?,
                    steal_pct: r.get(9)?,
                    mem_alloc_bytes: r.get(10)?,
                    mem_used_pct: r.get(11)?,
                    mem_source: r.get(12)?,
                    rss_bytes: r.get(13)?,
                    disk_read_bytes_s: r.get(14)?,
                    disk_write_bytes_s: r.get(15)?,
                    net_rx_bps: r.get(16)?,
                    net_tx_bps: r.get(17)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, OpenDatabase>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::Worker("a database call panicked".into()))
    }
}

fn insert_host_sample(
    tx: &Transaction,
    host_ip: &str,
    time: &str,
    s: &HostSample,
) -> Result<(), StoreError> {
    let u = &s.usage;
    let cpu = u.cpu.as_ref();
    let mem = u.mem.as_ref();
    let disk = u.disk_total.as_ref();
    let net = u.net_total.as_ref();
    let problems = (!s.problems.is_empty()).then(|| s.problems.join("; "));
    // A replayed tick (same host and time) is ignored, so writes are idempotent.
    let inserted = tx
        .prepare_cached(
            "INSERT INTO host_usage (host_ip, time, interval_s, late_ms, missed_ticks,
            cpu_pct, cpu_user_pct, cpu_system_pct, cpu_iowait_pct, cpu_steal_pct, cpu_guest_pct,
            mem_total_bytes, mem_used_pct, mem_nonfree_pct, mem_unavailable_pct,
            disk_read_bytes_s, disk_write_bytes_s, disk_bytes_s, disk_read_iops, disk_write_iops,
            net_rx_pps, net_tx_pps, net_rx_bytes_s, net_tx_bytes_s,
            net_rx_avg_pkt_bits, net_tx_avg_pkt_bits, net_rx_bps, net_tx_bps, problems)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                 ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29)
         ON CONFLICT (host_ip, time) DO NOTHING",
        )?
        .execute(params![
            host_ip,
            time,
            s.interval_secs,
            s.late_ms,
            s.missed_ticks,
            cpu.map(|c| c.busy_pct),
            cpu.map(|c| c.user_pct),
            cpu.map(|c| c.system_pct),
            cpu.map(|c| c.iowait_pct),
            cpu.map(|c| c.steal_pct),
            cpu.map(|c| c.guest_pct),
            mem.map(|m| m.total_bytes),
            mem.map(|m| m.used_pct),
            mem.map(|m| m.nonfree_pct),
            mem.and_then(|m| m.unavailable_pct),
            disk.map(|d| d.read_bytes_per_sec),
            disk.map(|d| d.write_bytes_per_sec),
            disk.map(|d| d.bytes_per_sec()),
            disk.map(|d| d.read_iops),
            disk.map(|d| d.write_iops),
            net.map(|n| n.rx.pps),
            net.map(|n| n.tx.pps),
            net.map(|n| n.rx.bytes_per_sec),
            net.map(|n| n.tx.bytes_per_sec),
            net.and_then(|n| n.rx.avg_packet_bits),
            net.and_then(|n| n.tx.avg_packet_bits),
            net.map(|n| n.rx.bps),
            net.map(|n| n.tx.bps),
            problems,
        ])?;
    if inserted == 0 {
        return Ok(());
    }
    let mut cpu_stmt = tx.prepare_cached(
        "INSERT INTO host_cpu_usage (host_ip, time, cpu, busy_pct, user_pct, system_pct,
            iowait_pct, steal_pct, guest_pct) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for (index, c) in u.per_cpu.iter().enumerate() {
        if let Some(c) = c {
            cpu_stmt.execute(params![
                host_ip,
                time,
                index,
                c.busy_pct,
                c.user_pct,
                c.system_pct,
                c.iowait_pct,
                c.steal_pct,
                c.guest_pct
            ])?;
        }
    }
    let mut disk_stmt = tx.prepare_cached(
        "INSERT INTO host_disk_usage (host_ip, time, device, is_partition, read_bytes_s,
            write_bytes_s, read_iops, write_iops, util_pct, read_await_ms, write_await_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for d in &u.disks {
        disk_stmt.execute(params![
            host_ip,
            time,
            d.name,
            d.partition,
            d.read_bytes_per_sec,
            d.write_bytes_per_sec,
            d.read_iops,
            d.write_iops,
            d.util_pct,
            d.read_await_ms,
            d.write_await_ms
        ])?;
    }
    insert_net_rows(
        tx,
        "INSERT INTO host_net_usage (host_ip, time, iface, rx_pps, tx_pps, rx_bytes_s,
            tx_bytes_s, rx_avg_pkt_bits, tx_avg_pkt_bits, rx_bps, tx_bps, rx_errs, rx_drop,
            tx_errs, tx_drop)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        host_ip,
        time,
        &u.nets,
    )?;
    Ok(())
}

fn insert_vm_sample(
    tx: &Transaction,
    host_ip: &str,
    time: &str,
    vm: &VmSample,
    written_vms: &HashMap<String, T3Row>,
    t3_written: &mut Vec<(String, T3Row)>,
) -> Result<(), StoreError> {
    let state = match vm.state {
        Some(s) => s.name(),
        None if vm.gone => "gone",
        None => "unknown",
    };
    // T3 changes rarely (name, state, host); the last connect time is set for all running VMs
    // at once by the caller.
    let row = (vm.name.clone(), state, host_ip.to_owned());
    if written_vms.get(&vm.uuid) != Some(&row) {
        // The state may be unknown this tick (libvirt unreachable): the stored one stays then.
        tx.prepare_cached(
            "INSERT INTO vms (uuid, host_ip, name, state, lct) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (uuid) DO UPDATE SET host_ip = excluded.host_ip, name = excluded.name,
                 state = CASE WHEN excluded.state = 'unknown' THEN vms.state
                              ELSE excluded.state END,
                 lct = COALESCE(excluded.lct, vms.lct)",
        )?
        .execute(params![
            vm.uuid,
            host_ip,
            vm.name,
            state,
            vm.state
                .is_some_and(DomainState::is_running)
                .then_some(time)
        ])?;
        t3_written.push((vm.uuid.clone(), row));
    }
    if !vm.has_usage_row() {
        return Ok(());
    }
    let u = vm.usage.as_ref();
    let m = u.map(|u| &u.mem);
    let disk = u.and_then(|u| u.disk_total.as_ref());
    let net = u.and_then(|u| u.net_total.as_ref());
    let inserted = tx
        .prepare_cached(
            "INSERT INTO vm_usage (uuid, time, interval_s, state, missing, qemu_pid, vcpus,
                cpu_pct, cpu_vcpu_pct, steal_pct, mem_alloc_bytes, mem_max_bytes, mem_used_bytes,
                mem_used_pct, mem_source, mem_unused_bytes, mem_usable_bytes, mem_available_bytes,
                rss_bytes, swap_in_bytes_s, swap_out_bytes_s, major_faults_s, minor_faults_s,
                disk_read_bytes_s, disk_write_bytes_s, disk_read_iops, disk_write_iops,
                net_rx_pps, net_tx_pps, net_rx_bytes_s, net_tx_bytes_s, net_rx_avg_pkt_bits,
                net_tx_avg_pkt_bits, net_rx_bps, net_tx_bps)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33,
                ?34, ?35)
             ON CONFLICT (uuid, time) DO NOTHING",
        )?
        .execute(params![
            vm.uuid,
            time,
            vm.interval_secs,
            state,
            vm.missing,
            vm.qemu_pid,
            u.and_then(|u| u.vcpus),
            u.and_then(|u| u.cpu_host_pct),
            u.and_then(|u| u.cpu_vcpu_pct),
            u.and_then(|u| u.steal_pct),
            m.and_then(|m| m.allocated_bytes),
            m.and_then(|m| m.max_bytes),
            m.and_then(|m| m.used_bytes),
            m.and_then(|m| m.used_pct),
            m.map(|m| m.source.name()),
            m.and_then(|m| m.unused_bytes),
            m.and_then(|m| m.usable_bytes),
            m.and_then(|m| m.available_bytes),
            m.and_then(|m| m.rss_bytes),
            m.and_then(|m| m.swap_in_bytes_per_sec),
            m.and_then(|m| m.swap_out_bytes_per_sec),
            m.and_then(|m| m.major_faults_per_sec),
            m.and_then(|m| m.minor_faults_per_sec),
            disk.map(|d| d.read_bytes_per_sec),
            disk.map(|d| d.write_bytes_per_sec),
            disk.map(|d| d.read_iops),
            disk.map(|d| d.write_iops),
            net.map(|n| n.rx.pps),
            net.map(|n| n.tx.pps),
            net.map(|n| n.rx.bytes_per_sec),
            net.map(|n| n.tx.bytes_per_sec),
            net.and_then(|n| n.rx.avg_packet_bits),
            net.and_then(|n| n.tx.avg_packet_bits),
            net.map(|n| n.rx.bps),
            net.map(|n| n.tx.bps),
        ])?;
    let Some(u) = u.filter(|_| inserted > 0) else {
        return Ok(());
    };
    if let Some(ebpf) = &vm.ebpf {
        insert_vm_ebpf(tx, &vm.uuid, time, ebpf)?;
    }
    let mut disk_stmt = tx.prepare_cached(
        "INSERT INTO vm_disk_usage (uuid, time, device, read_bytes_s, write_bytes_s, read_iops,
            write_iops, read_latency_ms, write_latency_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for d in &u.disks {
        disk_stmt.execute(params![
            vm.uuid,
            time,
            d.name,
            d.read_bytes_per_sec,
            d.write_bytes_per_sec,
            d.read_iops,
            d.write_iops,
            d.read_latency_ms,
            d.write_latency_ms
        ])?;
    }
    insert_net_rows(
        tx,
        "INSERT INTO vm_nic_usage (uuid, time, iface, rx_pps, tx_pps, rx_bytes_s, tx_bytes_s,
            rx_avg_pkt_bits, tx_avg_pkt_bits, rx_bps, tx_bps, rx_errs, rx_drop, tx_errs, tx_drop)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        &vm.uuid,
        time,
        &u.nics,
    )?;
    Ok(())
}

fn insert_host_ebpf(
    tx: &Transaction,
    host_ip: &str,
    time: &str,
    e: &HostEbpfFigures,
) -> Result<(), StoreError> {
    let all = e.block_rates.as_ref();
    let other = e.unattributed_rates.as_ref();
    let inserted = tx
        .prepare_cached(
            "INSERT INTO host_ebpf_usage (host_ip, time, interval_s, block_read_bytes_s,
                block_write_bytes_s, block_read_iops, block_write_iops,
                unattributed_read_bytes_s, unattributed_write_bytes_s, unattributed_read_iops,
                unattributed_write_iops)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (host_ip, time) DO NOTHING",
        )?
        .execute(params![
            host_ip,
            time,
            e.interval_secs,
            all.map(|r| r.read_bytes_per_sec),
            all.map(|r| r.write_bytes_per_sec),
            all.map(|r| r.read_iops),
            all.map(|r| r.write_iops),
            other.map(|r| r.read_bytes_per_sec),
            other.map(|r| r.write_bytes_per_sec),
            other.map(|r| r.read_iops),
            other.map(|r| r.write_iops),
        ])?;
    if inserted == 0 {
        return Ok(());
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO ebpf_program_stats (host_ip, time, program, events_s, mean_ns)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for p in &e.programs {
        stmt.execute(params![
            host_ip,
            time,
            p.program,
            p.events_per_sec,
            p.mean_ns
        ])?;
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO host_disk_latency (host_ip, time, device, direction, requests, p50_us,
            p95_us, p99_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for d in &e.devices {
        stmt.execute(params![
            host_ip,
            time,
            d.device,
            direction_name(d.direction),
            d.summary.count,
            d.summary.p50_us,
            d.summary.p95_us,
            d.summary.p99_us
        ])?;
    }
    Ok(())
}

fn insert_vm_ebpf(
    tx: &Transaction,
    uuid: &str,
    time: &str,
    e: &VmEbpfFigures,
) -> Result<(), StoreError> {
    let rates = e.block_rates.as_ref();
    let latency = |direction| {
        e.latency
            .iter()
            .find(|l| l.direction == direction)
            .map(|l| l.summary)
    };
    let (read, write) = (latency(DIR_READ), latency(DIR_WRITE));
    let per_sec =
        |count: u64| crate::usage::positive_seconds(e.interval_secs).map(|dt| count as f64 / dt);
    let sum = |f: &dyn Fn(&VmNicTraffic) -> u64| e.nics.iter().map(f).sum::<u64>();
    // Without a tap the VM's traffic is unknown rather than zero.
    let net =
        |f: &dyn Fn(&VmNicTraffic) -> u64| (!e.nics.is_empty()).then(|| per_sec(sum(f))).flatten();
    tx.prepare_cached(
        "INSERT INTO vm_ebpf_usage (time, uuid, interval_s, block_read_bytes_s,
            block_write_bytes_s, block_read_iops, block_write_iops, read_latency_p50_us,
            read_latency_p95_us, read_latency_p99_us, write_latency_p50_us,
            write_latency_p95_us, write_latency_p99_us, cpu_ready_pct, cpu_ready_p99_us,
            kvm_events_s, net_rx_pps, net_tx_pps, net_rx_bytes_s, net_tx_bytes_s, net_drops_s)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
            ?18, ?19, ?20, ?21)",
    )?
    .execute(params![
        time,
        uuid,
        e.interval_secs,
        rates.map(|r| r.read_bytes_per_sec),
        rates.map(|r| r.write_bytes_per_sec),
        rates.map(|r| r.read_iops),
        rates.map(|r| r.write_iops),
        read.map(|s| s.p50_us),
        read.map(|s| s.p95_us),
        read.map(|s| s.p99_us),
        write.map(|s| s.p50_us),
        write.map(|s| s.p95_us),
        write.map(|s| s.p99_us),
        e.cpu_ready.as_ref().map(|r| r.pct),
        e.cpu_ready.as_ref().and_then(|r| r.p99_us),
        e.kvm_events_per_sec(),
        net(&|n| n.rx.packets),
        net(&|n| n.tx.packets),
        net(&|n| n.rx.bytes),
        net(&|n| n.tx.bytes),
        net(&|n| n.drops.iter().map(|d| d.1).sum()),
    ])?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO vm_kvm_events (time, uuid, event, reason, count) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (event, reason, count) in &e.kvm_events {
        stmt.execute(params![time, uuid, event, reason, count])?;
    }
    let mut sizes = tx.prepare_cached(
        "INSERT INTO vm_nic_packet_sizes (time, uuid, iface, direction, bucket, packets)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for nic in &e.nics {
        for (direction, value) in [("rx", &nic.rx), ("tx", &nic.tx)] {
            for (bucket, &packets) in value.sizes.buckets.iter().enumerate() {
                if packets > 0 {
                    sizes.execute(params![time, uuid, nic.iface, direction, bucket, packets])?;
                }
            }
        }
    }
    let mut drops = tx.prepare_cached(
        "INSERT INTO vm_nic_drops (time, uuid, iface, reason, packets)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for nic in &e.nics {
        for (reason, packets) in &nic.drops {
            drops.execute(params![time, uuid, nic.iface, reason, packets])?;
        }
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO vm_latency_hist (time, uuid, direction, bucket, requests)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for l in &e.latency {
        for (bucket, &requests) in l.hist.buckets.iter().enumerate() {
            if requests > 0 {
                stmt.execute(params![
                    time,
                    uuid,
                    direction_name(l.direction),
                    bucket,
                    requests
                ])?;
            }
        }
    }
    Ok(())
}

/// One row per interface into `insert` (host_net_usage or vm_nic_usage, whose columns after
/// the owner's key are the same), for `owner` at `time`.
fn insert_net_rows(
    tx: &Transaction,
    insert: &str,
    owner: &str,
    time: &str,
    nets: &[NetRates],
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(insert)?;
    for n in nets {
        stmt.execute(params![
            owner,
            time,
            n.name,
            n.rx.pps,
            n.tx.pps,
            n.rx.bytes_per_sec,
            n.tx.bytes_per_sec,
            n.rx.avg_packet_bits,
            n.tx.avg_packet_bits,
            n.rx.bps,
            n.tx.bps,
            n.rx_errs,
            n.rx_drop,
            n.tx_errs,
            n.tx_drop
        ])?;
    }
    Ok(())
}

impl Store for SqliteStore {
    async fn write_tick(&mut self, tick: &TickRecord) -> Result<(), StoreError> {
        let store = self.clone();
        let tick = tick.clone();
        tokio::task::spawn_blocking(move || store.write_tick_blocking(&tick))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
    }

    async fn recent_host_usage(
        &mut self,
        query: &HostUsageQuery,
    ) -> Result<Vec<HostUsageRow>, StoreError> {
        let store = self.clone();
        let query = query.clone();
        tokio::task::spawn_blocking(move || store.recent_host_usage_blocking(&query))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
    }

    async fn recent_vm_usage(
        &mut self,
        query: &VmUsageQuery,
    ) -> Result<Vec<VmUsageRow>, StoreError> {
        let store = self.clone();
        let query = query.clone();
        tokio::task::spawn_blocking(move || store.recent_vm_usage_blocking(&query))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::identity::HostIdentity;
    use crate::usage::host::{CpuUsage, HostUsage};
    use crate::usage::vm::vm_usage;
    use crate::vm::libvirt::NodeFacts;
    use crate::vm::stats::{DomainState, DomainStats};

    /// Number of T2 rows of a host.
    fn host_usage_count(store: &SqliteStore, host_ip: &str) -> u64 {
        let state = store.lock().expect("lock");
        state
            .conn
            .query_row(
                "SELECT COUNT(*) FROM host_usage WHERE host_ip = ?1",
                [host_ip],
                |r| r.get(0),
            )
            .expect("count")
    }

    fn tick(seq: u64, ms: i64) -> TickRecord {
        let cpu = CpuUsage {
            busy_pct: 12.5,
            user_pct: 10.0,
            nice_pct: 0.0,
            system_pct: 2.5,
            idle_pct: 87.5,
            iowait_pct: 0.0,
            irq_pct: 0.0,
            softirq_pct: 0.0,
            steal_pct: 0.0,
            guest_pct: 0.0,
        };
        TickRecord {
            seq,
            time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .expect("time"),
            host: HostIdentity {
                name: "hv1".into(),
                ip: "192.0.2.2".into(),
                mac: None,
                interface: None,
            },
            vm_count: Some(0),
            node: None,
            host_sample: Some(HostSample {
                interval_secs: 1.0,
                late_ms: 0.2,
                missed_ticks: 0,
                usage: HostUsage {
                    cpu: Some(cpu),
                    per_cpu: vec![Some(cpu), None],
                    mem: None,
                    disks: Vec::new(),
                    disk_total: None,
                    nets: Vec::new(),
                    net_total: None,
                },
                problems: Vec::new(),
            }),
            vms: Vec::new(),
            ebpf: None,
        }
    }

    fn vm(state: Option<DomainState>, missing: bool) -> VmSample {
        VmSample {
            uuid: "3f9a7c1e-0000-4000-8000-000000000001".into(),
            name: "desk-1".into(),
            state,
            gone: false,
            qemu_pid: Some(4300),
            vcpu_tids: vec![4301],
            missing: missing.then(|| "libvirt did not answer within 1s".to_owned()),
            interval_secs: Some(1.0),
            usage: (!missing).then(|| vm_usage(None, &DomainStats::default(), 1.0, 2)),
            ebpf: None,
        }
    }

    #[test]
    fn vm_rows_keep_the_last_connect_time_and_the_vm_count_through_an_outage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let mut t = tick(1, 1_000);
        t.vm_count = Some(1);
        t.node = Some(NodeFacts {
            cpus: 2,
            memory_bytes: Some(24 << 30),
        });
        t.vms = vec![vm(Some(DomainState::Running), false)];
        store.write_tick_blocking(&t).expect("running");
        // libvirt away: state unknown, the row marked missing, VMC not known.
        let mut t = tick(2, 2_000);
        t.vm_count = None;
        t.vms = vec![vm(None, true)];
        store.write_tick_blocking(&t).expect("missing");
        let mut t = tick(3, 3_000);
        t.vm_count = Some(0);
        t.vms = vec![vm(Some(DomainState::Paused), false)];
        store.write_tick_blocking(&t).expect("paused");

        let state = store.lock().expect("lock");
        let (vm_state, lct, vmc, cpus): (String, String, u32, u32) = state
            .conn
            .query_row(
                "SELECT v.state, v.lct, h.vmc, h.cpus FROM vms v JOIN hosts h USING (host_ip)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .expect("row");
        assert_eq!(cpus, 2, "capacity kept while libvirt was away");
        assert_eq!(
            (vm_state.as_str(), lct.as_str(), vmc),
            ("paused", "1970-01-01T00:00:01.000Z", 0)
        );
        drop(state);
        let rows = store
            .recent_vm_usage_blocking(&VmUsageQuery {
                vm: Some("desk-1".into()),
                limit: 10,
                ..VmUsageQuery::default()
            })
            .expect("rows");
        let summary: Vec<_> = rows
            .iter()
            .map(|r| (r.state.as_str(), r.missing.is_some()))
            .collect();
        assert_eq!(
            summary,
            [("running", false), ("unknown", true), ("paused", false)]
        );
        assert_eq!(rows[0].mem_source.as_deref(), Some("allocation-only"));
    }

    #[test]
    fn ebpf_figures_land_beside_the_host_and_vm_rows() {
        use crate::ebpf::BlockTotals;
        use crate::ebpf::{KvmCounters, KvmEventKind, NetDeviceCounters};
        use crate::usage::ebpf::{
            EbpfInterval, ProgramCost, VmOwnership, host_ebpf_figures, vm_ebpf_figures,
        };
        use setmov_common::net::NetDeviceValue;
        use setmov_common::{BlockKey, DeviceKey, Log2Hist};
        use std::collections::{HashMap, HashSet};

        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let mut kvm = KvmCounters::default();
        kvm.by_kind
            .entry(KvmEventKind::Mmio)
            .or_default()
            .insert("write".into(), 7);
        let mut latency = Log2Hist::default();
        latency.buckets[17] = 3;
        latency.buckets[18] = 1;
        let writes = BlockTotals {
            write_ops: 4,
            write_bytes: 16384,
            ..BlockTotals::default()
        };
        let interval = EbpfInterval {
            interval_secs: 1.0,
            block_total: BlockTotals {
                write_ops: 5,
                write_bytes: 20480,
                ..BlockTotals::default()
            },
            block_by_tgid: HashMap::from([(4300, writes)]),
            latency_by_device: HashMap::from([(
                DeviceKey {
                    dev: 254 << 20,
                    direction: DIR_WRITE,
                },
                latency,
            )]),
            latency_by_tgid: HashMap::from([(
                BlockKey {
                    tgid: 4300,
                    direction: DIR_WRITE,
                },
                latency,
            )]),
            device_names: HashMap::from([(254 << 20, "vda".to_owned())]),
            programs: vec![ProgramCost {
                program: "block_io_start".into(),
                events_per_sec: 5.0,
                mean_ns: Some(420.0),
            }],
            net_devices: HashMap::from([(
                "vnet0".to_owned(),
                NetDeviceCounters {
                    rx: NetDeviceValue {
                        packets: 2,
                        bytes: 2056,
                        sizes: latency,
                    },
                    ..NetDeviceCounters::default()
                },
            )]),
            net_drops: HashMap::from([(("vnet0".to_owned(), "NO_SOCKET".to_owned()), 3)]),
            kvm_by_tgid: HashMap::from([(4300, kvm)]),
            sched_on: true,
            ..EbpfInterval::default()
        };
        let mut t = tick(1, 1_000);
        let mut sample = vm(Some(DomainState::Running), false);
        sample.ebpf = Some(vm_ebpf_figures(
            &interval,
            VmOwnership {
                qemu_pid: 4300,
                vcpu_tids: &[4301],
                taps: &["vnet0"],
            },
        ));
        t.vms = vec![sample];
        t.ebpf = Some(host_ebpf_figures(&interval, &HashSet::from([4300])));
        store.write_tick_blocking(&t).expect("write");

        let state = store.lock().expect("lock");
        let row: (f64, f64, u32, f64, u32, u32) = state
            .conn
            .query_row(
                "SELECT h.unattributed_write_bytes_s, v.block_write_bytes_s,
                    (SELECT requests FROM host_disk_latency WHERE device = 'vda'),
                    v.write_latency_p50_us,
                    (SELECT SUM(requests) FROM vm_latency_hist),
                    (SELECT COUNT(*) FROM vm_latency_hist)
                 FROM host_ebpf_usage h, vm_ebpf_usage v",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .expect("rows");
        assert_eq!((row.0, row.1, row.2), (4096.0, 16384.0, 4));
        assert!((131.0..263.0).contains(&row.3), "p50 {}", row.3);
        assert_eq!(
            (row.4, row.5),
            (4, 2),
            "two non-empty buckets, four requests"
        );
        let cost: f64 = state
            .conn
            .query_row("SELECT mean_ns FROM ebpf_program_stats", [], |r| r.get(0))
            .expect("program cost");
        assert_eq!(cost, 420.0);
        let vm: (f64, f64, f64, f64, String, u32, u32) = state
            .conn
            .query_row(
                "SELECT cpu_ready_pct, kvm_events_s, net_tx_bytes_s, net_drops_s,
                    (SELECT reason FROM vm_kvm_events),
                    (SELECT SUM(packets) FROM vm_nic_packet_sizes WHERE direction = 'tx'),
                    (SELECT packets FROM vm_nic_drops WHERE reason = 'NO_SOCKET')
                 FROM vm_ebpf_usage",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .expect("vm eBPF row");
        // The tap's receive is the guest's transmit, with the 14-byte headers added back.
        assert_eq!(vm, (0.0, 7.0, 2084.0, 3.0, "write".into(), 4, 3));
    }

    #[test]
    fn ticks_are_written_once_and_read_back_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("sub/s.db")).expect("open");
        for (seq, ms) in [(1, 1_000), (2, 2_000), (3, 3_000)] {
            store.write_tick_blocking(&tick(seq, ms)).expect("write");
        }
        // A replay of tick 2 changes nothing.
        store.write_tick_blocking(&tick(2, 2_000)).expect("replay");
        assert_eq!(host_usage_count(&store, "192.0.2.2"), 3);
        let rows = store
            .recent_host_usage_blocking(&HostUsageQuery {
                host_ip: None,
                limit: 2,
            })
            .expect("rows");
        let times: Vec<_> = rows.iter().map(|r| r.time.as_str()).collect();
        assert_eq!(
            times,
            ["1970-01-01T00:00:02.000Z", "1970-01-01T00:00:03.000Z"]
        );
        assert_eq!(rows[0].cpu_pct, Some(12.5));
        assert_eq!(rows[0].disk_read_bytes_s, None);
    }

    #[test]
    fn schema_3_keeps_the_vm_rows_of_schema_2() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let mut conn = Connection::open(&path).expect("raw");
        conn.execute_batch("PRAGMA foreign_keys = ON;").expect("fk");
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(2))
            .run(&mut conn)
            .expect("schema 2");
        conn.execute_batch(
            "INSERT INTO hosts (host_ip, host_name, vmc) VALUES ('192.0.2.2', 'hv1', 1);
             INSERT INTO vms (uuid, host_ip, name, state, lct)
                 VALUES ('u1', '192.0.2.2', 'desk-1', 'running', '1970-01-01T00:00:02.000Z');
             INSERT INTO vm_usage (uuid, time, state, cpu_pct)
                 VALUES ('u1', '1970-01-01T00:00:01.000Z', 'running', 10.0),
                        ('u1', '1970-01-01T00:00:02.000Z', 'running', 20.0);
             INSERT INTO vm_disk_usage (uuid, time, device, read_bytes_s, write_bytes_s,
                 read_iops, write_iops) VALUES ('u1', '1970-01-01T00:00:02.000Z', 'vda', 1, 2, 3, 4);
             INSERT INTO vm_nic_usage (uuid, time, iface, rx_pps, tx_pps, rx_bytes_s, tx_bytes_s,
                 rx_bps, tx_bps, rx_errs, rx_drop, tx_errs, tx_drop)
                 VALUES ('u1', '1970-01-01T00:00:02.000Z', 'vnet0', 1, 2, 3, 4, 5, 6, 0, 0, 0, 0);",
        )
        .expect("schema 2 rows");
        drop(conn);
        let store = SqliteStore::open(&path).expect("migrate to the latest schema");
        let rows = store
            .recent_vm_usage_blocking(&VmUsageQuery {
                limit: 10,
                ..VmUsageQuery::default()
            })
            .expect("rows");
        let cpu: Vec<_> = rows.iter().map(|r| r.cpu_pct).collect();
        assert_eq!(cpu, [Some(10.0), Some(20.0)]);
        let state = store.lock().expect("lock");
        let details: (u32, u32, u32) = state
            .conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM vm_disk_usage), (SELECT COUNT(*) FROM vm_nic_usage),
                        (SELECT COUNT(*) FROM pragma_foreign_key_check)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("counts");
        assert_eq!(
            details,
            (1, 1, 0),
            "detail rows kept, every foreign key holds"
        );
    }

    #[test]
    fn reopening_keeps_data_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        SqliteStore::open(&path)
            .expect("open")
            .write_tick_blocking(&tick(1, 1_000))
            .expect("write");
        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(host_usage_count(&store, "192.0.2.2"), 1);
        drop(store);
        let conn = Connection::open(&path).expect("raw");
        conn.execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES (999, 'from_the_future', '2030-01-01T00:00:00Z', '0')",
            [],
        )
        .expect("insert");
        drop(conn);
        let err = SqliteStore::open(&path).err().expect("must refuse");
        assert!(err.to_string().contains("cannot migrate"), "{err}");
    }
}
