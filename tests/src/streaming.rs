//! `setmov run --stream --format csv --database DB` as a clock for the live tests: the ticks
//! are stored as usual, and each streamed record tells the test when its tick ended.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Stdio};
use std::thread::JoinHandle;

use crate::window::monotonic_ns;

/// One streamed record of the guest: its fields, the CLOCK_MONOTONIC instant the test read it
/// and what `sample` returned then.
pub struct Record {
    pub fields: BTreeMap<String, String>,
    pub at_ns: u64,
    pub sample: u64,
}

/// `BINARY run --stream --format csv --database DB`: the ticks are stored as usual, and each
/// record tells the test when its tick ended (to a few ms: the record follows the probes'
/// read). `sample` runs as each record of `uuid` arrives.
pub struct Streaming {
    child: Child,
    reader: Option<JoinHandle<Vec<Record>>>,
}

impl Streaming {
    pub fn start(
        binary: &str,
        db: &Path,
        args: &[&str],
        uuid: String,
        mut sample: impl FnMut() -> u64 + Send + 'static,
    ) -> Streaming {
        let mut child = crate::setmov_command(binary)
            .args(["run", "--stream", "--format", "csv", "--database"])
            .arg(db)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("setmov starts");
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok);
            let Some(header) = lines.next() else {
                return Vec::new();
            };
            let header: Vec<String> = header.split(',').map(str::to_owned).collect();
            let mut records = Vec::new();
            for line in lines {
                let (sample, at_ns) = (sample(), monotonic_ns());
                let fields: BTreeMap<String, String> = header
                    .iter()
                    .cloned()
                    .zip(line.split(',').map(str::to_owned))
                    .collect();
                if fields.get("uuid") == Some(&uuid) {
                    records.push(Record {
                        fields,
                        at_ns,
                        sample,
                    });
                }
            }
            records
        });
        Streaming {
            child,
            reader: Some(reader),
        }
    }

    /// SIGINT (unless it stops by itself with `--count`), then its records once it exited 0.
    pub fn stop(mut self, interrupt: bool) -> Vec<Record> {
        if interrupt {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
        }
        let status = self.child.wait().expect("wait for setmov");
        assert!(status.success(), "setmov failed: {status}");
        self.reader.take().expect("reader").join().expect("reader")
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
