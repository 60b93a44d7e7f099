//! `setmov recommend --script` on stored names meant to mislead it: a VM named `7` (virsh would
//! take it for domain ID 7) and one whose name holds a newline and a command substitution. The
//! script is run with `virsh` replaced by a stub that logs its arguments: only UUIDs reach
//! virsh, the command never runs, and the section of a host this machine is not is skipped.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use rusqlite::{Connection, params};
use setmov::store::format_time;
use setmov::store::sqlite::SqliteStore;
use time::OffsetDateTime;

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");
/// A host every machine has the address of (its loopback), and one no machine here has.
const THIS_HOST: &str = "127.0.0.1";
const OTHER_HOST: &str = "198.51.100.77";
const GIB: f64 = 1_073_741_824.0;

/// A database of two hosts whose VMs all have 4 vCPUs at 25 % and 1 of 4 GiB used over the
/// last hour: each is to shrink. Returns the UUIDs of this host's VMs and of the other's.
fn database(path: &Path, evil_name: &str) -> (Vec<String>, String) {
    drop(SqliteStore::open(path).expect("store"));
    let mut conn = Connection::open(path).expect("connection");
    let tx = conn.transaction().expect("transaction");
    for host in [THIS_HOST, OTHER_HOST] {
        tx.execute(
            "INSERT INTO hosts (host_ip, host_name, vmc, cpus, memory_bytes)
             VALUES (?1, 'hv', 2, 16, ?2)",
            params![host, 64u64 << 30],
        )
        .expect("host");
    }
    let vms = [
        (THIS_HOST, "7", "5e7a0000-0000-4000-8000-000000000001"),
        (THIS_HOST, evil_name, "5e7a0000-0000-4000-8000-000000000002"),
        (
            OTHER_HOST,
            "elsewhere",
            "5e7a0000-0000-4000-8000-000000000003",
        ),
    ];
    let now = OffsetDateTime::now_utc();
    for (host, name, uuid) in vms {
        tx.execute(
            "INSERT INTO vms (uuid, host_ip, name, state) VALUES (?1, ?2, ?3, 'running')",
            params![uuid, host, name],
        )
        .expect("vm");
        for minute in 1..=60 {
            tx.execute(
                "INSERT INTO vm_usage_1m (time, uuid, samples,
                    vcpus_avg, vcpus_max, vcpus_p95,
                    cpu_vcpu_pct_avg, cpu_vcpu_pct_max, cpu_vcpu_pct_p95,
                    mem_alloc_bytes_avg, mem_alloc_bytes_max, mem_alloc_bytes_p95,
                    mem_used_bytes_avg, mem_used_bytes_max, mem_used_bytes_p95,
                    mem_usable_bytes_avg, mem_usable_bytes_max, mem_usable_bytes_p95)
                 VALUES (?1, ?2, 60, 4, 4, 4, 25, 25, 25, ?3, ?3, ?3, ?4, ?4, ?4, ?5, ?5, ?5)",
                params![
                    format_time(now - time::Duration::minutes(minute)),
                    uuid,
                    4.0 * GIB,
                    GIB,
                    3.0 * GIB
                ],
            )
            .expect("rollup row");
        }
    }
    tx.commit().expect("commit");
    (
        vec![vms[0].2.to_owned(), vms[1].2.to_owned()],
        vms[2].2.to_owned(),
    )
}

#[test]
fn the_script_addresses_vms_by_uuid_runs_no_stored_text_and_skips_other_hosts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("touched");
    let evil_name = format!(
        "evil\n$(touch {})\n`touch {}`",
        marker.display(),
        marker.display()
    );
    let db = dir.path().join("plan.db");
    let (this_uuids, other_uuid) = database(&db, &evil_name);

    let script = dir.path().join("plan.sh");
    let out = setmov_tests::setmov_command(SETMOV)
        .args(["recommend", "--since", "1d", "--database"])
        .arg(&db)
        .arg("--script")
        .arg(&script)
        .output()
        .expect("setmov runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&script).expect("script");
    assert!(!marker.exists(), "writing the script ran the name");

    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash runs");
    assert!(
        syntax.status.success(),
        "bash -n: {}\n{text}",
        String::from_utf8_lossy(&syntax.stderr)
    );

    // virsh replaced by a stub that logs each call's arguments, one call a line.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("bin");
    let stub = bin.join("virsh");
    std::fs::write(
        &stub,
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$VIRSH_LOG\"\n",
    )
    .expect("stub");
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let log = dir.path().join("virsh.log");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ran = Command::new("sh")
        .arg(&script)
        .env("PATH", path)
        .env("VIRSH_LOG", &log)
        .output()
        .expect("sh runs");
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(ran.status.success(), "{stderr}\n{text}");
    assert!(!marker.exists(), "running the script ran the name:\n{text}");
    assert!(
        stderr.contains(&format!("skipping the plan of host {OTHER_HOST}")),
        "{stderr}"
    );

    let calls = std::fs::read_to_string(&log).expect("virsh was called");
    let mut resized = Vec::new();
    for call in calls.lines() {
        let words: Vec<&str> = call.split(' ').collect();
        assert!(
            matches!(words.first(), Some(&("setvcpus" | "setmem" | "setmaxmem"))),
            "{call}"
        );
        let domain = words.get(1).copied().unwrap_or_default();
        assert!(
            this_uuids.iter().any(|u| u == domain),
            "not this host's UUID: {call}"
        );
        assert!(
            call.ends_with("--config") || call.ends_with("--maximum"),
            "{call}"
        );
        resized.push(domain.to_owned());
    }
    for uuid in &this_uuids {
        assert!(resized.contains(uuid), "{uuid} not resized:\n{calls}");
    }
    assert!(!calls.contains(&other_uuid), "the other host's VM: {calls}");
    // The names are still there for the reader, in comments.
    assert!(text.contains("# 7: CPU"), "{text}");
    assert!(text.contains("# evil\\n$(touch"), "{text}");
}
