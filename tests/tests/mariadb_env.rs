//! The test MariaDB that `cargo xtask test` starts: the `setmov` user works over TCP with its
//! password file and only in `setmov_*` databases, and the server stops by PID and starts again
//! with its data, as the outage tests need.

use std::net::TcpStream;
use std::process::Command;
use std::time::Instant;

use setmov_tests::mariadb::{MariaDb, run_with_input};

/// Runs SQL as `setmov` over TCP with the `mariadb` client, the password taken from the
/// password file; the rows as tab-separated lines, or the client's error.
fn as_setmov(server: &MariaDb, database: &str, sql: &str) -> Result<Vec<String>, String> {
    let mut command = Command::new("mariadb");
    command
        .arg("--no-defaults")
        .arg("--protocol=TCP")
        .arg(format!("--host={}", server.host()))
        .arg(format!("--port={}", server.port()))
        .arg(format!("--user={}", server.user()))
        .arg(format!("--database={database}"))
        .args(["--batch", "--skip-column-names"])
        // Not on the command line, where `ps` would show it.
        .env("MYSQL_PWD", server.password());
    let out = run_with_input(&mut command, sql).map_err(|e| format!("cannot run mariadb: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// A process that exited is gone, or a zombie with an empty command line.
fn gone(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).map_or(true, |c| c.is_empty())
}

#[test]
fn the_setmov_user_keeps_its_data_across_a_stop_and_a_start() {
    let server = match MariaDb::from_manifest() {
        Ok(server) => server,
        Err(reason) => return setmov_tests::skip(&reason),
    };
    let database = server.fresh_database("env");
    assert_eq!(database, "setmov_t_env");
    let url = server.url(&database);
    assert_eq!(url, "mysql://setmov@127.0.0.1:3307/setmov_t_env");
    assert!(!url.contains(&server.password()));

    as_setmov(
        &server,
        &database,
        "CREATE TABLE samples (id INT PRIMARY KEY, host VARCHAR(64) NOT NULL);
         INSERT INTO samples VALUES (1, 'kvm-a'), (2, 'kvm-b');",
    )
    .unwrap_or_else(|e| panic!("setmov cannot write in {database}: {e}"));
    let read = || {
        as_setmov(
            &server,
            &database,
            "SELECT id, host FROM samples ORDER BY id",
        )
        .unwrap_or_else(|e| panic!("setmov cannot read {database}: {e}"))
    };
    assert_eq!(read(), ["1\tkvm-a", "2\tkvm-b"]);
    assert_eq!(
        as_setmov(&server, &database, "SELECT CURRENT_USER()").as_deref(),
        Ok(&["setmov@127.0.0.1".to_owned()][..])
    );
    // Its rights end at the setmov_* databases; root's work over the socket.
    let denied = as_setmov(&server, &database, "CREATE DATABASE other_setmov_env");
    assert!(
        denied.as_ref().is_err_and(|e| e.contains("Access denied")),
        "{denied:?}"
    );
    assert_eq!(
        server.query(&database, "SELECT COUNT(*) FROM samples"),
        ["2"]
    );

    let pid = server.pid().expect("the test MariaDB runs");
    let began = Instant::now();
    server.stop();
    let stopped = began.elapsed();
    assert!(gone(pid), "mariadbd {pid} still runs after stop()");
    assert_eq!(server.pid(), None);
    assert!(
        TcpStream::connect((server.host(), server.port())).is_err(),
        "port {} still accepts connections after stop()",
        server.port()
    );
    assert!(as_setmov(&server, &database, "SELECT 1").is_err());

    let began = Instant::now();
    server.start();
    let started = began.elapsed();
    let restarted = server.pid().expect("mariadbd runs after start()");
    assert_ne!(restarted, pid);
    assert_eq!(read(), ["1\tkvm-a", "2\tkvm-b"]);
    server.query("", "DROP DATABASE setmov_t_env");
    eprintln!(
        "MariaDB: stopped (pid {pid}) in {:.2} s, started again (pid {restarted}) in {:.2} s",
        stopped.as_secs_f64(),
        started.as_secs_f64()
    );
}
