//! The libvirt side: one connection, node facts and the bulk domain statistics.
//!
//! Calls go through `virt::sys` because the safe wrappers of virt 0.5 cannot free bulk
//! statistics records and panic in `Drop` when libvirt reports an error; every pointer is owned
//! by a small guard here. The calls block, so [`LibvirtCollector`] runs on a thread of its own.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, c_char, c_int};
use std::path::PathBuf;
use std::ptr;
use std::time::{Duration, Instant};

use virt::sys;

use super::runfiles::{self, QemuProcess};
use super::stats::{DomainState, DomainStats, ParamRef, StatsBuilder};

/// The groups of statistics asked for on every tick.
const STATS: u32 = sys::VIR_DOMAIN_STATS_STATE
    | sys::VIR_DOMAIN_STATS_CPU_TOTAL
    | sys::VIR_DOMAIN_STATS_BALLOON
    | sys::VIR_DOMAIN_STATS_VCPU
    | sys::VIR_DOMAIN_STATS_INTERFACE
    | sys::VIR_DOMAIN_STATS_BLOCK;

/// NOWAIT: a domain busy with a job (migration, snapshot, a stuck monitor) reports only what
/// can be had without waiting for it, instead of holding up every other domain's statistics.
const STATS_FLAGS: u32 = sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT;

const NODE_FACTS_EVERY: Duration = Duration::from_secs(60);

/// How often an unreachable libvirt is tried again. A failed connect to a dead socket costs a
/// syscall, so there is no backoff: the VMs are sampled again within a tick or two of libvirtd
/// answering (at a 250 ms interval or longer).
const RETRY_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LibvirtError {
    #[error("cannot connect to libvirt at {uri}: {message}")]
    Connect { uri: String, message: String },
    #[error("libvirt call {call} failed: {message}")]
    Call { call: &'static str, message: String },
    #[error("libvirt at {uri} is unavailable; next attempt in {wait_ms} ms")]
    Waiting { uri: String, wait_ms: u128 },
}

/// What libvirt says about the host it manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeFacts {
    /// Active logical CPUs: the "cores" of virt-top's equation.
    pub cpus: u32,
    /// From the node's memory statistics (node info's memory reads one NUMA node on some
    /// hosts and is wrong there).
    pub memory_bytes: Option<u64>,
}

/// One domain at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSample {
    pub uuid: String,
    pub name: String,
    /// libvirt's runtime id; it changes when the domain is started again.
    pub id: Option<u32>,
    pub stats: DomainStats,
    pub qemu: QemuProcess,
}

/// Every domain at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSnapshot {
    pub node: NodeFacts,
    pub domains: Vec<DomainSample>,
}

/// An open connection; closed on drop.
struct Connection {
    ptr: sys::virConnectPtr,
}

// SAFETY: a libvirt connection may be used from any thread (libvirt serialises calls on it);
// this one is only ever used by one thread at a time.
unsafe impl Send for Connection {}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: ptr came from virConnectOpenReadOnly and is closed exactly once. A failure
        // (a connection that already died) leaves nothing to release.
        unsafe { sys::virConnectClose(self.ptr) };
    }
}

/// The bulk statistics list; freed on drop.
struct RecordList {
    ptr: *mut sys::virDomainStatsRecordPtr,
    len: usize,
}

impl Drop for RecordList {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: ptr came from virConnectGetAllDomainStats; this frees the records, their
            // parameters and their domain references.
            unsafe { sys::virDomainStatsRecordListFree(self.ptr) };
        }
    }
}

fn last_error() -> String {
    virt::error::Error::last_error().message().to_owned()
}

fn c_string(ptr: *const c_char) -> Option<String> {
    // SAFETY: libvirt returns NUL-terminated strings that live as long as their owner.
    (!ptr.is_null()).then(|| {
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    })
}

impl Connection {
    fn open(uri: &str) -> Result<Self, LibvirtError> {
        let connect_error = |message: String| LibvirtError::Connect {
            uri: uri.to_owned(),
            message,
        };
        let c_uri = CString::new(uri).map_err(|_| connect_error("URI contains NUL".into()))?;
        // Read-only: a monitor never changes a domain, and it needs no more privilege.
        // SAFETY: c_uri is a valid C string for the duration of the call.
        let ptr = unsafe { sys::virConnectOpenReadOnly(c_uri.as_ptr()) };
        if ptr.is_null() {
            return Err(connect_error(last_error()));
        }
        Ok(Connection { ptr })
    }

    fn node_facts(&self) -> Result<NodeFacts, LibvirtError> {
        // SAFETY: virNodeInfo is plain data that libvirt fills in.
        let mut info: sys::virNodeInfo = unsafe { std::mem::zeroed() };
        // SAFETY: self.ptr is open; info is a valid out-pointer.
        if unsafe { sys::virNodeGetInfo(self.ptr, &mut info) } < 0 {
            return Err(LibvirtError::Call {
                call: "virNodeGetInfo",
                message: last_error(),
            });
        }
        Ok(NodeFacts {
            cpus: info.cpus,
            memory_bytes: self.node_memory_total_kib().map(|k| k.saturating_mul(1024)),
        })
    }

    /// `total` of the node's memory statistics over all cells, in KiB.
    fn node_memory_total_kib(&self) -> Option<u64> {
        let mut count: c_int = 0;
        let all = sys::VIR_NODE_MEMORY_STATS_ALL_CELLS;
        // SAFETY: a null params pointer asks only for the count.
        if unsafe { sys::virNodeGetMemoryStats(self.ptr, all, ptr::null_mut(), &mut count, 0) } < 0
            || count <= 0
        {
            return None;
        }
        // SAFETY: plain data that libvirt fills in.
        let mut params: Vec<sys::virNodeMemoryStats> =
            vec![unsafe { std::mem::zeroed() }; usize::try_from(count).ok()?];
        // SAFETY: params has room for count entries.
        if unsafe { sys::virNodeGetMemoryStats(self.ptr, all, params.as_mut_ptr(), &mut count, 0) }
            < 0
        {
            return None;
        }
        params.iter().find_map(|p| {
            (c_string(p.field.as_ptr()).as_deref() == Some("total")).then_some(p.value)
        })
    }

    fn domains(&self) -> Result<Vec<DomainSample>, LibvirtError> {
        let mut records: *mut sys::virDomainStatsRecordPtr = ptr::null_mut();
        // SAFETY: self.ptr is open; records receives a list we free through RecordList.
        let n =
            unsafe { sys::virConnectGetAllDomainStats(self.ptr, STATS, &mut records, STATS_FLAGS) };
        if n < 0 {
            return Err(LibvirtError::Call {
                call: "virConnectGetAllDomainStats",
                message: last_error(),
            });
        }
        let list = RecordList {
            ptr: records,
            len: usize::try_from(n).unwrap_or(0),
        };
        let mut domains = Vec::with_capacity(list.len);
        for i in 0..list.len {
            // SAFETY: the list holds `len` valid record pointers while `list` lives.
            let record = unsafe { &**list.ptr.add(i) };
            if let Some(domain) = domain_sample(record) {
                domains.push(domain);
            }
        }
        Ok(domains)
    }
}

/// Reads one record; `None` if libvirt gave no name or UUID (the domain vanished meanwhile).
/// The qemu process is filled in by the collector.
fn domain_sample(record: &sys::virDomainStatsRecord) -> Option<DomainSample> {
    // SAFETY: record.dom is a valid domain reference while the record list lives.
    let name = c_string(unsafe { sys::virDomainGetName(record.dom) })?;
    let mut uuid = [0u8; sys::VIR_UUID_BUFLEN as usize];
    // SAFETY: uuid has the room libvirt documents for a raw UUID. The raw form, formatted
    // here: libvirt formats a UUID for its debug line in every domain call, and the string form
    // formats it once more.
    if unsafe { sys::virDomainGetUUID(record.dom, uuid.as_mut_ptr()) } < 0 {
        return None;
    }
    // SAFETY: as above; inactive domains return (unsigned) -1.
    let id = unsafe { sys::virDomainGetID(record.dom) };
    let mut stats = StatsBuilder::default();
    for i in 0..usize::try_from(record.nparams).unwrap_or(0) {
        // SAFETY: params holds nparams entries while the record lives.
        let p = unsafe { &*record.params.add(i) };
        if let Some((name, value)) = typed_param(p) {
            stats.add(name, value);
        }
    }
    Some(DomainSample {
        qemu: QemuProcess::default(),
        uuid: uuid_string(&uuid),
        name,
        id: (id != u32::MAX).then_some(id),
        stats: stats.finish(),
    })
}

/// A raw UUID in libvirt's string form: lowercase hex in groups of 8-4-4-4-12.
fn uuid_string(raw: &[u8; sys::VIR_UUID_BUFLEN as usize]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(36);
    for (i, byte) in raw.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        for nibble in [byte >> 4, byte & 0xf] {
            text.push(char::from(
                HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
    text
}

/// One parameter, its name and any string value borrowed from the record (no allocation per
/// parameter: a domain has about sixty and this runs for every domain on every tick).
fn typed_param(p: &sys::virTypedParameter) -> Option<(&str, ParamRef<'_>)> {
    // SAFETY: libvirt NUL-terminates the field name inside its fixed-size array.
    let name = unsafe { CStr::from_ptr(p.field.as_ptr()) }.to_str().ok()?;
    // SAFETY: type_ says which union member libvirt set.
    let value = unsafe {
        match p.type_ as u32 {
            sys::VIR_TYPED_PARAM_INT => ParamRef::Int(i64::from(p.value.i)),
            sys::VIR_TYPED_PARAM_UINT => ParamRef::UInt(u64::from(p.value.ui)),
            sys::VIR_TYPED_PARAM_LLONG => ParamRef::Int(p.value.l),
            sys::VIR_TYPED_PARAM_ULLONG => ParamRef::UInt(p.value.ul),
            sys::VIR_TYPED_PARAM_DOUBLE => ParamRef::Double(p.value.d),
            sys::VIR_TYPED_PARAM_BOOLEAN => ParamRef::Bool(p.value.b != 0),
            // SAFETY: a string parameter is NUL-terminated and lives as long as its record.
            sys::VIR_TYPED_PARAM_STRING if !p.value.s.is_null() => {
                ParamRef::Str(CStr::from_ptr(p.value.s).to_string_lossy())
            }
            _ => return None,
        }
    };
    Some((name, value))
}

/// Samples libvirt, connecting and reconnecting as needed. Blocking: keep it on its own thread.
pub struct LibvirtCollector {
    uri: String,
    run_dir: PathBuf,
    connection: Option<Connection>,
    retry_at: Option<Instant>,
    /// The last failure logged, so an outage is reported once, not every tick.
    logged_failure: Option<String>,
    /// Each domain run's qemu process by UUID, with the runtime id it was read for: the run
    /// files are read once per run, not per tick (parsing the status XML is the dearest part
    /// of a VM's sample), and the sample count when the domain was last seen with a process.
    qemu: HashMap<String, (Option<u32>, QemuProcess, u64)>,
    /// Samples taken, to drop the cache entries of domains no longer seen.
    generation: u64,
    /// The node's facts and when they were asked.
    node: Option<(Instant, NodeFacts)>,
    /// Domains whose name is too long to store, already warned about.
    long_names: HashSet<String>,
}

impl LibvirtCollector {
    /// `run_dir` is the qemu driver's run folder (`/run/libvirt/qemu`).
    pub fn new(uri: &str, run_dir: impl Into<PathBuf>) -> Self {
        // libvirt's default error handler prints every error on stderr; errors are returned
        // and logged here instead.
        virt::error::clear_error_callback();
        LibvirtCollector {
            uri: uri.to_owned(),
            run_dir: run_dir.into(),
            connection: None,
            retry_at: None,
            logged_failure: None,
            qemu: HashMap::new(),
            generation: 0,
            node: None,
            long_names: HashSet::new(),
        }
    }

    /// Cuts names too long to store, with a warning once per domain.
    fn fit_names(&mut self, domains: &mut [DomainSample]) {
        for domain in domains {
            if let Some(cut) = crate::store::fit::cut_name(&domain.name) {
                if self.long_names.insert(domain.uuid.clone()) {
                    tracing::warn!(
                        "VM {}: its name is longer than {} characters; stored cut to `{}`",
                        domain.uuid,
                        crate::store::fit::NAME_CHARS,
                        crate::escape::escape_control(&cut)
                    );
                }
                domain.name = cut;
            }
        }
    }

    /// One sample of the node and every domain. While libvirt is unreachable this returns
    /// at once with [`LibvirtError::Waiting`] until the next attempt is due ([`RETRY_EVERY`]),
    /// so a missing libvirtd costs next to nothing per tick.
    pub fn sample(&mut self) -> Result<VmSnapshot, LibvirtError> {
        if self.connection.is_none() {
            if let Some(at) = self.retry_at {
                let now = Instant::now();
                if now < at {
                    return Err(LibvirtError::Waiting {
                        uri: self.uri.clone(),
                        wait_ms: (at - now).as_millis(),
                    });
                }
            }
            match Connection::open(&self.uri) {
                Ok(connection) => self.connection = Some(connection),
                Err(e) => return Err(self.failed(e)),
            }
        }
        let Some(connection) = &self.connection else {
            return Err(LibvirtError::Waiting {
                uri: self.uri.clone(),
                wait_ms: 0,
            });
        };
        // The node's capacity changes only with CPU or memory hot-plug: asking every tick would
        // triple the calls to libvirtd, so it is asked once per connection and then every
        // NODE_FACTS_EVERY.
        let node = match self.node {
            Some((at, facts)) if at.elapsed() < NODE_FACTS_EVERY => Ok(facts),
            _ => connection.node_facts(),
        };
        let sampled = node.and_then(|node| Ok((node, connection.domains()?)));
        match sampled {
            Ok((node, mut domains)) => {
                if self
                    .node
                    .is_none_or(|(at, _)| at.elapsed() >= NODE_FACTS_EVERY)
                {
                    self.node = Some((Instant::now(), node));
                }
                self.attach_qemu(&mut domains);
                self.fit_names(&mut domains);
                if self.logged_failure.take().is_some() {
                    tracing::info!("libvirt at {} answers again", self.uri);
                }
                self.retry_at = None;
                Ok(VmSnapshot { node, domains })
            }
            Err(e) => {
                // The connection is likely dead (libvirtd restarting): open a new one later.
                self.connection = None;
                self.node = None;
                Err(self.failed(e))
            }
        }
    }

    /// Fills in each running domain's qemu PID and vCPU threads, from the cache while the
    /// domain run (runtime id) and its vCPU count are unchanged. The cache is updated in place
    /// and keeps only the domains of this sample.
    fn attach_qemu(&mut self, domains: &mut [DomainSample]) {
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        for d in domains.iter_mut() {
            if !d.stats.state.is_some_and(DomainState::has_process) {
                continue;
            }
            let vcpus = d.stats.vcpus_current.map(|v| v as usize);
            let valid = |(id, p, _): &(Option<u32>, QemuProcess, u64)| {
                *id == d.id && p.pid.is_some() && vcpus.is_none_or(|v| v == p.vcpu_tids.len())
            };
            match self.qemu.get_mut(&d.uuid) {
                Some(cached) if valid(cached) => {
                    cached.2 = generation;
                    d.qemu = cached.1.clone();
                }
                _ => {
                    let process = runfiles::read(&self.run_dir, &d.name);
                    d.qemu = process.clone();
                    self.qemu
                        .insert(d.uuid.clone(), (d.id, process, generation));
                }
            }
        }
        self.qemu.retain(|_, (_, _, seen)| *seen == generation);
    }

    fn failed(&mut self, error: LibvirtError) -> LibvirtError {
        let message = error.to_string();
        if self.logged_failure.as_deref() != Some(message.as_str()) {
            tracing::warn!(
                "{message}; VMs are not sampled until it answers (host sampling goes on)"
            );
            self.logged_failure = Some(message);
        }
        self.retry_at = Some(Instant::now() + RETRY_EVERY);
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libvirt's built-in test driver: no daemon, one running domain named `test`.
    #[test]
    fn the_test_driver_maps_to_a_snapshot() {
        let mut collector = LibvirtCollector::new("test:///default", "/nonexistent");
        let snap = collector.sample().expect("test driver");
        assert!(snap.node.cpus > 0);
        assert_eq!(snap.domains.len(), 1);
        let d = &snap.domains[0];
        assert_eq!(d.name, "test");
        assert_eq!(d.uuid.len(), 36);
        assert!(d.id.is_some());
        assert_eq!(d.stats.state, Some(DomainState::Running));
        // The run folder does not exist: no qemu process is invented.
        assert_eq!(d.qemu, QemuProcess::default());
    }

    #[test]
    fn a_raw_uuid_is_formatted_as_libvirt_does() {
        let raw = [
            0x66, 0x95, 0xeb, 0x01, 0xf6, 0xa4, 0x83, 0x04, 0x79, 0xaa, 0x97, 0xf2, 0x50, 0x2e,
            0x19, 0x3f,
        ];
        assert_eq!(uuid_string(&raw), "6695eb01-f6a4-8304-79aa-97f2502e193f");
    }

    #[test]
    fn an_unreachable_libvirt_is_tried_again_a_little_later_and_says_so() {
        let mut collector = LibvirtCollector::new(
            "qemu+unix:///system?socket=/nonexistent/sock",
            "/nonexistent",
        );
        let first = collector.sample().expect_err("no daemon");
        assert!(matches!(first, LibvirtError::Connect { .. }), "{first}");
        let second = collector.sample().expect_err("still none");
        assert!(matches!(second, LibvirtError::Waiting { .. }), "{second}");
    }
}
