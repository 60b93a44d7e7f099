//! KVM events per qemu process: exits by reason, returns to user space by `KVM_EXIT_*`
//! reason, port and MMIO accesses, and halt polling.
//!
//! The KVM tracepoints run in the vCPU thread that caused the event, so events are credited
//! to the VM's qemu process (tgid). Each tracepoint has its own program: one this kernel lacks
//! (or whose format is not understood) is off with its reason, and the others still count.
//! `kvm:kvm_exit` fires only with hardware virtualisation (VMX or SVM), not under PVM.
//!
//! Reason names are the kernel's: the `__print_symbolic` tables of the tracepoints' print fmt.

mod print_fmt;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt, fs,
    path::Path,
};

use aya::{
    EbpfLoader,
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap},
};
use setmov_common::kvm::{
    KVM_EVENTS_LOST_MAP, KVM_EVENTS_MAP, KVM_HALT_POLL_GROW, KVM_PIO_OUT, KVM_WAKEUP_WAITED,
    KvmEvent, KvmExitLayout, KvmFieldLayout, KvmKey, KvmUserspaceExitLayout,
};

use self::print_fmt::{SymbolicTable, parse_symbolic_tables, print_fmt};
use super::format::{FormatError, TracepointField, find_field, format_path, parse_format};
use super::{EbpfError, ProbeError, attach_tracepoint, map_error, take_map};

/// Tracepoint category of every program here.
const CATEGORY: &str = "kvm";
/// `errno` of a `KVM_RUN` cut short by a signal; the print fmt calls it "restart".
const EINTR: u32 = 4;

/// A KVM tracepoint this probe counts; each has a program of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KvmEventKind {
    /// `kvm_exit`: the guest left hardware virtualisation; reasons are VMX or SVM exit reasons.
    Exit,
    /// `kvm_userspace_exit`: `KVM_RUN` returned to qemu; reasons are `KVM_EXIT_*`, or
    /// "restart" (a signal interrupted it) or "error <errno>".
    UserspaceExit,
    /// `kvm_pio`: port I/O; reasons "in" and "out".
    Pio,
    /// `kvm_mmio`: MMIO; reasons "read", "write", "unsatisfied-read".
    Mmio,
    /// `kvm_halt_poll_ns`: the halt-polling interval changed; reasons "grow" and "shrink".
    HaltPollNs,
    /// `kvm_vcpu_wakeup`: a halted vCPU woke; reasons "waited" (it slept) and "polled".
    VcpuWakeup,
}

impl KvmEventKind {
    /// Every kind, in the order of the enum.
    pub const ALL: [KvmEventKind; 6] = [
        Self::Exit,
        Self::UserspaceExit,
        Self::Pio,
        Self::Mmio,
        Self::HaltPollNs,
        Self::VcpuWakeup,
    ];

    /// The tracepoint's name in the `kvm` category, which is also its program's name.
    pub const fn tracepoint(self) -> &'static str {
        match self {
            Self::Exit => "kvm_exit",
            Self::UserspaceExit => "kvm_userspace_exit",
            Self::Pio => "kvm_pio",
            Self::Mmio => "kvm_mmio",
            Self::HaltPollNs => "kvm_halt_poll_ns",
            Self::VcpuWakeup => "kvm_vcpu_wakeup",
        }
    }

    /// The program's global that holds its record layout.
    const fn layout_global(self) -> &'static str {
        match self {
            Self::Exit => "KVM_EXIT_LAYOUT",
            Self::UserspaceExit => "KVM_USERSPACE_EXIT_LAYOUT",
            Self::Pio => "KVM_PIO_LAYOUT",
            Self::Mmio => "KVM_MMIO_LAYOUT",
            Self::HaltPollNs => "KVM_HALT_POLL_NS_LAYOUT",
            Self::VcpuWakeup => "KVM_VCPU_WAKEUP_LAYOUT",
        }
    }
}

impl fmt::Display for KvmEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tracepoint())
    }
}

/// KVM event counts of one process (or a sum of processes), cumulative since load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvmCounters {
    /// Count per event kind and reason name (a number when the kernel has no name for it).
    pub by_kind: BTreeMap<KvmEventKind, BTreeMap<String, u64>>,
}

impl KvmCounters {
    /// Events of `kind` with reason `reason`.
    pub fn count(&self, kind: KvmEventKind, reason: &str) -> u64 {
        self.by_kind
            .get(&kind)
            .and_then(|reasons| reasons.get(reason))
            .copied()
            .unwrap_or(0)
    }

    /// Events of `kind`, all reasons together.
    pub fn total(&self, kind: KvmEventKind) -> u64 {
        self.by_kind.get(&kind).map_or(0, |reasons| {
            reasons.values().fold(0, |sum, n| sum.wrapping_add(*n))
        })
    }

    fn add(&mut self, kind: KvmEventKind, reason: String, count: u64) {
        let slot = self
            .by_kind
            .entry(kind)
            .or_default()
            .entry(reason)
            .or_default();
        // Wrapping: counters are modulo 2^64 and a monitor must not panic on them.
        *slot = slot.wrapping_add(count);
    }
}

/// The reason-name tables of the tracepoints that have them.
#[derive(Debug, Clone, Default)]
struct ReasonNames {
    /// `kvm_exit` reasons of [`KvmEvent::Exit`] (VMX on x86).
    exit: Option<SymbolicTable>,
    /// `kvm_exit` reasons of [`KvmEvent::ExitOtherIsa`] (SVM on x86).
    exit_other_isa: Option<SymbolicTable>,
    userspace_exit: Option<SymbolicTable>,
    mmio: Option<SymbolicTable>,
}

impl ReasonNames {
    /// The event kind and reason name of a map key's `event` and `reason`; None for an event
    /// number no program writes.
    fn describe(&self, event: u32, reason: u32) -> Option<(KvmEventKind, String)> {
        let named = |table: &Option<SymbolicTable>| match table {
            Some(table) => table.name(reason),
            None => reason.to_string(),
        };
        let two_way = |is_second: bool, second: &str, first: &str| {
            if is_second { second } else { first }.to_owned()
        };
        Some(match KvmEvent::from_u32(event)? {
            KvmEvent::Exit => (KvmEventKind::Exit, named(&self.exit)),
            KvmEvent::ExitOtherIsa => (KvmEventKind::Exit, named(&self.exit_other_isa)),
            KvmEvent::UserspaceExit => (KvmEventKind::UserspaceExit, named(&self.userspace_exit)),
            KvmEvent::UserspaceExitErrno if reason == EINTR => {
                (KvmEventKind::UserspaceExit, "restart".to_owned())
            }
            KvmEvent::UserspaceExitErrno => {
                (KvmEventKind::UserspaceExit, format!("error {reason}"))
            }
            KvmEvent::Pio => (
                KvmEventKind::Pio,
                two_way(reason == KVM_PIO_OUT, "out", "in"),
            ),
            KvmEvent::Mmio => (KvmEventKind::Mmio, named(&self.mmio)),
            KvmEvent::HaltPollNs => (
                KvmEventKind::HaltPollNs,
                two_way(reason == KVM_HALT_POLL_GROW, "grow", "shrink"),
            ),
            KvmEvent::VcpuWakeup => (
                KvmEventKind::VcpuWakeup,
                two_way(reason == KVM_WAKEUP_WAITED, "waited", "polled"),
            ),
        })
    }
}

/// The record layout a program gets in its `<PROGRAM>_LAYOUT` global.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ProgramLayout {
    Exit(KvmExitLayout),
    UserspaceExit(KvmUserspaceExitLayout),
    Field(KvmFieldLayout),
}

/// The record layouts of the KVM programs this kernel can run, read from their format files,
/// and why the others cannot run.
#[derive(Debug)]
pub struct KvmLayouts {
    ready: Vec<(KvmEventKind, ProgramLayout)>,
    names: ReasonNames,
    off: Vec<(KvmEventKind, ProbeError)>,
}

impl KvmLayouts {
    /// Reads the format file of each KVM tracepoint. Fails only when no program can run.
    pub fn read(tracefs: &Path) -> Result<Self, ProbeError> {
        let mut layouts = KvmLayouts::empty();
        for kind in KvmEventKind::ALL {
            let path = format_path(tracefs, CATEGORY, kind.tracepoint());
            if !path.is_file() {
                let missing = ProbeError::NoTracepoint(format!("{CATEGORY}:{kind}"));
                layouts.off.push((kind, missing));
                continue;
            }
            let read = fs::read_to_string(&path)
                .map_err(|error| FormatError::Read(error.to_string()))
                .and_then(|text| layouts.add(kind, &text));
            if let Err(error) = read {
                layouts.off.push((kind, ProbeError::Format { path, error }));
            }
        }
        if layouts.ready.is_empty() {
            return Err(layouts.into_error());
        }
        Ok(layouts)
    }

    fn empty() -> Self {
        KvmLayouts {
            ready: Vec::new(),
            names: ReasonNames::default(),
            off: Vec::new(),
        }
    }

    /// The programs this kernel gets, in attach order.
    pub fn programs(&self) -> Vec<&'static str> {
        self.ready
            .iter()
            .map(|(kind, _)| kind.tracepoint())
            .collect()
    }

    /// Writes the layouts into the programs' globals.
    pub fn apply<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        for (kind, layout) in &self.ready {
            let global = kind.layout_global();
            match layout {
                ProgramLayout::Exit(layout) => loader.override_global(global, layout, true),
                ProgramLayout::UserspaceExit(layout) => {
                    loader.override_global(global, layout, true)
                }
                ProgramLayout::Field(layout) => loader.override_global(global, layout, true),
            };
        }
    }

    /// Reads the layout and reason names of `kind` from its format file's text.
    fn add(&mut self, kind: KvmEventKind, format_text: &str) -> Result<(), FormatError> {
        let fields = parse_format(format_text)?;
        let tables = match print_fmt(format_text) {
            Some(print_fmt) => parse_symbolic_tables(print_fmt)?,
            None => Vec::new(),
        };
        let table_of = |field: &str| tables.iter().find(|table| table.field == field).cloned();
        let one_field = |name, size, expected| {
            find_field(&fields, name, size..=size, expected).map(|field| {
                ProgramLayout::Field(KvmFieldLayout {
                    offset: field.offset,
                })
            })
        };
        let layout = match kind {
            KvmEventKind::Exit => {
                let (layout, first, other) = exit_layout(&fields, &tables)?;
                self.names.exit = first;
                self.names.exit_other_isa = other;
                ProgramLayout::Exit(layout)
            }
            KvmEventKind::UserspaceExit => {
                let reason = find_field(&fields, "reason", 4..=4, "4")?;
                let errno = find_field(&fields, "errno", 4..=4, "4")?;
                self.names.userspace_exit = table_of("reason");
                ProgramLayout::UserspaceExit(KvmUserspaceExitLayout {
                    reason_offset: reason.offset,
                    errno_offset: errno.offset,
                })
            }
            KvmEventKind::Pio => one_field("rw", 4, "4")?,
            KvmEventKind::Mmio => {
                self.names.mmio = table_of("type");
                one_field("type", 4, "4")?
            }
            KvmEventKind::HaltPollNs => one_field("grow", 1, "1 (a bool)")?,
            KvmEventKind::VcpuWakeup => one_field("waited", 1, "1 (a bool)")?,
        };
        self.ready.push((kind, layout));
        Ok(())
    }

    /// Why no program can run: a format problem if there is one, else no tracepoint at all.
    fn into_error(self) -> ProbeError {
        self.off
            .into_iter()
            .map(|(_, error)| error)
            .find(|error| !matches!(error, ProbeError::NoTracepoint(_)))
            .unwrap_or_else(|| {
                let all = KvmEventKind::ALL.map(|kind| format!("{CATEGORY}:{kind}"));
                ProbeError::NoTracepoint(all.join(", "))
            })
    }
}

/// The `kvm_exit` layout and its reason tables for [`KvmEvent::Exit`] and
/// [`KvmEvent::ExitOtherIsa`]. On x86 the print fmt reads
/// `(REC->isa == 1) ? __print_symbolic(<VMX reasons>) : __print_symbolic(<SVM reasons>)`;
/// a format with one unconditional table (or none) has no `isa` choice.
fn exit_layout(
    fields: &[TracepointField],
    tables: &[SymbolicTable],
) -> Result<(KvmExitLayout, Option<SymbolicTable>, Option<SymbolicTable>), FormatError> {
    let exit_reason = find_field(fields, "exit_reason", 4..=4, "4")?;
    let mut tables = tables.iter().filter(|table| table.field == "exit_reason");
    let (first, other) = (tables.next(), tables.next());
    let mut layout = KvmExitLayout {
        exit_reason_offset: exit_reason.offset,
        isa_offset: 0,
        first_table_isa: 0,
    };
    match (first.and_then(|table| table.condition.as_ref()), other) {
        (Some(condition), _) if condition.field == "isa" => {
            layout.isa_offset = find_field(fields, "isa", 4..=4, "4")?.offset;
            layout.first_table_isa = condition.value;
        }
        (None, None) => {}
        (_, _) => {
            return Err(FormatError::PrintFmt {
                at: first.map_or(0, |table| table.at),
                problem: "exit reason tables are chosen by something other than `REC->isa ==`",
            });
        }
    }
    Ok((layout, first.cloned(), other.cloned()))
}

/// The KVM programs' maps; the programs stay attached while the loaded object lives.
pub struct KvmProbe {
    counters: PerCpuHashMap<MapData, KvmKey, u64>,
    lost: PerCpuArray<MapData, u64>,
    names: ReasonNames,
    attached: Vec<String>,
    programs_off: Vec<String>,
}

impl KvmProbe {
    /// Attaches the programs `layouts` found runnable and takes their maps. A program that
    /// cannot be attached is off (see [`KvmProbe::programs_off`]); fails when none can be.
    pub fn attach(ebpf: &mut aya::Ebpf, layouts: &KvmLayouts) -> Result<Self, ProbeError> {
        let mut attached = Vec::new();
        let mut off: Vec<_> = layouts
            .off
            .iter()
            .map(|(kind, error)| (*kind, error.to_string()))
            .collect();
        let mut first_failure = None;
        for (kind, _) in &layouts.ready {
            match attach_tracepoint(ebpf, CATEGORY, kind.tracepoint()) {
                Ok(()) => attached.push(kind.tracepoint().to_owned()),
                Err(error) => {
                    off.push((*kind, error.to_string()));
                    first_failure.get_or_insert(error);
                }
            }
        }
        // `layouts` has at least one program: if none is attached, one failed.
        if attached.is_empty()
            && let Some(error) = first_failure
        {
            return Err(error);
        }
        off.sort_by_key(|(kind, _)| *kind);
        Ok(Self {
            counters: take_map(ebpf, KVM_EVENTS_MAP)?,
            lost: take_map(ebpf, KVM_EVENTS_LOST_MAP)?,
            names: layouts.names.clone(),
            attached,
            programs_off: off
                .into_iter()
                .map(|(kind, error)| format!("{CATEGORY} program {kind} is off: {error}"))
                .collect(),
        })
    }

    /// Names of the attached programs, e.g. `["kvm_userspace_exit", "kvm_pio", ...]`.
    pub fn attached(&self) -> Vec<String> {
        self.attached.clone()
    }

    /// One sentence per KVM program that is off while others run, e.g.
    /// "kvm program kvm_exit is off: ...".
    pub fn programs_off(&self) -> &[String] {
        &self.programs_off
    }

    /// Cumulative counts per process (tgid) since load, for the processes still in the map.
    pub fn per_tgid(&self) -> Result<HashMap<u32, KvmCounters>, EbpfError> {
        let mut out = HashMap::<u32, KvmCounters>::new();
        for entry in self.counters.iter() {
            let (key, values) = entry.map_err(map_error(KVM_EVENTS_MAP))?;
            let Some((kind, reason)) = self.names.describe(key.event, key.reason) else {
                continue;
            };
            let count = values.iter().fold(0u64, |sum, v| sum.wrapping_add(*v));
            out.entry(key.tgid).or_default().add(kind, reason, count);
        }
        Ok(out)
    }

    /// KVM events not counted because the counter map was full: non-zero means the figures
    /// are incomplete (call `forget_dead_tgids` more often).
    pub fn lost_events(&self) -> Result<u64, EbpfError> {
        let values = self
            .lost
            .get(&0, 0)
            .map_err(map_error(KVM_EVENTS_LOST_MAP))?;
        Ok(values.iter().fold(0, |sum, v| sum.wrapping_add(*v)))
    }

    /// Removes the counters of processes that have exited (no `<proc_root>/<tgid>`). Returns
    /// how many processes were forgotten.
    pub fn forget_dead_tgids(&mut self, proc_root: &Path) -> Result<usize, EbpfError> {
        let keys = self
            .counters
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_error(KVM_EVENTS_MAP))?;
        let mut forgotten = HashSet::new();
        for key in keys {
            if proc_root.join(key.tgid.to_string()).exists() {
                continue;
            }
            match self.counters.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(error) => return Err(map_error(KVM_EVENTS_MAP)(error)),
            }
            forgotten.insert(key.tgid);
        }
        Ok(forgotten.len())
    }
}

#[cfg(test)]
mod tests {
    use super::print_fmt::tests::{
        KVM_EXIT, KVM_HALT_POLL_NS, KVM_MMIO, KVM_PIO, KVM_USERSPACE_EXIT, KVM_VCPU_WAKEUP,
    };
    use super::*;

    /// Layouts of all six programs from this kernel's format files.
    fn layouts_of_this_kernel() -> KvmLayouts {
        let mut layouts = KvmLayouts::empty();
        for (kind, text) in [
            (KvmEventKind::Exit, KVM_EXIT),
            (KvmEventKind::UserspaceExit, KVM_USERSPACE_EXIT),
            (KvmEventKind::Pio, KVM_PIO),
            (KvmEventKind::Mmio, KVM_MMIO),
            (KvmEventKind::HaltPollNs, KVM_HALT_POLL_NS),
            (KvmEventKind::VcpuWakeup, KVM_VCPU_WAKEUP),
        ] {
            layouts.add(kind, text).expect("understood");
        }
        layouts
    }

    #[test]
    fn layouts_of_this_kernel_are_read_from_its_format_files() {
        let layouts = layouts_of_this_kernel();
        let field = |offset| ProgramLayout::Field(KvmFieldLayout { offset });
        assert_eq!(
            layouts.ready,
            vec![
                (
                    KvmEventKind::Exit,
                    ProgramLayout::Exit(KvmExitLayout {
                        exit_reason_offset: 8,
                        isa_offset: 24,
                        first_table_isa: 1,
                    })
                ),
                (
                    KvmEventKind::UserspaceExit,
                    ProgramLayout::UserspaceExit(KvmUserspaceExitLayout {
                        reason_offset: 8,
                        errno_offset: 12,
                    })
                ),
                (KvmEventKind::Pio, field(8)),
                (KvmEventKind::Mmio, field(8)),
                (KvmEventKind::HaltPollNs, field(8)),
                (KvmEventKind::VcpuWakeup, field(16)),
            ]
        );
        assert!(layouts.off.is_empty());
    }

    #[test]
    fn reasons_are_named_from_the_tables() {
        let names = layouts_of_this_kernel().names;
        let describe =
            |event: KvmEvent, reason| names.describe(event as u32, reason).expect("a known event");
        let exit = |name: &str| (KvmEventKind::Exit, name.to_owned());
        assert_eq!(describe(KvmEvent::Exit, 12), exit("HLT"));
        assert_eq!(describe(KvmEvent::ExitOtherIsa, 0x78), exit("hlt"));
        assert_eq!(describe(KvmEvent::ExitOtherIsa, 0x12345), exit("74565"));
        let userspace = |name: &str| (KvmEventKind::UserspaceExit, name.to_owned());
        assert_eq!(
            describe(KvmEvent::UserspaceExit, 2),
            userspace("KVM_EXIT_IO")
        );
        assert_eq!(
            describe(KvmEvent::UserspaceExitErrno, 4),
            userspace("restart")
        );
        assert_eq!(
            describe(KvmEvent::UserspaceExitErrno, 14),
            userspace("error 14")
        );
        assert_eq!(
            describe(KvmEvent::Pio, KVM_PIO_OUT),
            (KvmEventKind::Pio, "out".into())
        );
        assert_eq!(describe(KvmEvent::Pio, 0), (KvmEventKind::Pio, "in".into()));
        assert_eq!(
            describe(KvmEvent::Mmio, 0),
            (KvmEventKind::Mmio, "unsatisfied-read".into())
        );
        assert_eq!(
            describe(KvmEvent::HaltPollNs, KVM_HALT_POLL_GROW),
            (KvmEventKind::HaltPollNs, "grow".into())
        );
        assert_eq!(
            describe(KvmEvent::VcpuWakeup, 0),
            (KvmEventKind::VcpuWakeup, "polled".into())
        );
        assert_eq!(names.describe(99, 0), None);
        // Without tables (a format with no print fmt), reasons are numbers.
        assert_eq!(
            ReasonNames::default().describe(KvmEvent::UserspaceExit as u32, 2),
            Some(userspace("2"))
        );
    }

    #[test]
    fn kvm_exit_without_isa_choice() {
        let mut layouts = KvmLayouts::empty();
        // An older layout: one table, no `isa`.
        let text = "format:\n\
            \tfield:unsigned int exit_reason;\toffset:8;\tsize:4;\tsigned:0;\n\
            print fmt: \"reason %s\", __print_symbolic(REC->exit_reason, { 12, \"HLT\" })\n";
        layouts.add(KvmEventKind::Exit, text).expect("understood");
        assert_eq!(
            layouts.ready[0].1,
            ProgramLayout::Exit(KvmExitLayout {
                exit_reason_offset: 8,
                isa_offset: 0,
                first_table_isa: 0,
            })
        );
        assert_eq!(
            layouts.names.describe(KvmEvent::Exit as u32, 12),
            Some((KvmEventKind::Exit, "HLT".into()))
        );
    }

    #[test]
    fn bad_formats_are_errors() {
        let add = |kind, text: &str| KvmLayouts::empty().add(kind, text);
        // An `isa` choice, but the record has no `isa`.
        let no_isa = KVM_EXIT.replace("field:u32 isa;", "field:u32 other;");
        assert_eq!(
            add(KvmEventKind::Exit, &no_isa),
            Err(FormatError::MissingField("isa"))
        );
        // Two tables chosen by something we do not know.
        let other_choice = KVM_EXIT.replace("(REC->isa == 1) ?", "(REC->vcpu_id == 1) ?");
        assert!(matches!(
            add(KvmEventKind::Exit, &other_choice),
            Err(FormatError::PrintFmt { .. })
        ));
        // A truncated table.
        let truncated = &KVM_MMIO[..KVM_MMIO.find("{ 2, \"write\"").expect("in the fixture")];
        assert!(matches!(
            add(KvmEventKind::Mmio, truncated),
            Err(FormatError::PrintFmt { .. })
        ));
        let wide_grow = KVM_HALT_POLL_NS.replace(
            "bool grow;\toffset:8;\tsize:1",
            "int grow;\toffset:8;\tsize:4",
        );
        assert_eq!(
            add(KvmEventKind::HaltPollNs, &wide_grow),
            Err(FormatError::FieldSize {
                name: "grow",
                size: 4,
                expected: "1 (a bool)"
            })
        );
        assert_eq!(
            add(KvmEventKind::Pio, "format:\n"),
            Err(FormatError::MissingField("rw"))
        );
    }

    #[test]
    fn missing_tracepoints_turn_off_their_programs_only() {
        let tracefs = tempfile::tempdir().expect("temporary directory");
        let write = |name: &str, text: &str| {
            let dir = tracefs.path().join("events/kvm").join(name);
            fs::create_dir_all(&dir).expect("created");
            fs::write(dir.join("format"), text).expect("written");
        };
        assert!(matches!(
            KvmLayouts::read(tracefs.path()),
            Err(ProbeError::NoTracepoint(list)) if list.starts_with("kvm:kvm_exit, ")
        ));

        write("kvm_pio", KVM_PIO);
        write("kvm_mmio", "format:\n");
        let layouts = KvmLayouts::read(tracefs.path()).expect("kvm_pio can run");
        assert_eq!(layouts.ready.len(), 1);
        assert_eq!(layouts.ready[0].0, KvmEventKind::Pio);
        let off: Vec<_> = layouts
            .off
            .iter()
            .map(|(kind, error)| format!("{kind}: {error}"))
            .collect();
        assert_eq!(off.len(), 5);
        assert_eq!(
            off[0],
            "kvm_exit: this kernel has none of the tracepoints kvm:kvm_exit"
        );
        assert!(
            off[2].starts_with("kvm_mmio: tracepoint format "),
            "{}",
            off[2]
        );
        assert!(off[2].ends_with("it has no field `type`"), "{}", off[2]);

        // Only a broken one: its error, not "no tracepoint".
        fs::remove_dir_all(tracefs.path().join("events/kvm/kvm_pio")).expect("removed");
        assert!(matches!(
            KvmLayouts::read(tracefs.path()),
            Err(ProbeError::Format { .. })
        ));
    }

    #[test]
    fn counters_add_up_by_kind_and_reason() {
        let mut counters = KvmCounters::default();
        counters.add(KvmEventKind::Pio, "in".into(), 3);
        counters.add(KvmEventKind::Pio, "out".into(), 4);
        counters.add(KvmEventKind::Pio, "in".into(), 1);
        assert_eq!(counters.count(KvmEventKind::Pio, "in"), 4);
        assert_eq!(counters.count(KvmEventKind::Pio, "none"), 0);
        assert_eq!(counters.total(KvmEventKind::Pio), 8);
        assert_eq!(counters.total(KvmEventKind::Exit), 0);
    }
}
