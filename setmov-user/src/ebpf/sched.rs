//! Run-queue wait per watched thread: how long each vCPU thread waited for a CPU while it was
//! runnable (a VM's "CPU ready", or steal time seen from the host).
//!
//! Which tracepoints: `sched:sched_switch` (required: it ends every wait, and starts those of
//! preempted threads), `sched:sched_wakeup` and `sched:sched_wakeup_new` (start the waits of
//! woken threads; without them only waits after preemption are seen). The kernel programs
//! track only the threads user space names with [`SchedProbe::watch`].

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::Path,
};

use aya::{
    EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray},
};
use setmov_common::sched::{
    RUNQ_LOST_MAP, RUNQ_MAX_ENTRIES, RUNQ_SINCE_MAP, RUNQ_WAIT_MAP, RUNQ_WATCHED_MAP,
    SchedSwitchLayout, SchedWakeupLayout,
};

pub use setmov_common::sched::RunqWait;

use super::format::{FormatError, TracepointField, find_field, format_path, parse_format};
use super::{EbpfError, ProbeError, attach_tracepoint, map_error, take_map};

/// Tracepoint category of every program here.
const CATEGORY: &str = "sched";
const SWITCH: &str = "sched_switch";
/// Optional programs: each starts the waits of woken threads, and their global layouts.
const WAKEUPS: [(&str, &str); 2] = [
    ("sched_wakeup", "SCHED_WAKEUP_LAYOUT"),
    ("sched_wakeup_new", "SCHED_WAKEUP_NEW_LAYOUT"),
];

/// The record layouts of the sched programs this kernel can run, read from its format files.
pub struct SchedLayouts {
    switch: SchedSwitchLayout,
    /// Program, `<PROGRAM>_LAYOUT` global and layout, for each wakeup tracepoint present.
    wakeups: Vec<(&'static str, &'static str, SchedWakeupLayout)>,
    /// Why a wakeup program is off, one sentence each.
    disabled: Vec<String>,
}

impl SchedLayouts {
    /// Reads the record layouts; fails only when `sched_switch` is unusable.
    pub fn read(tracefs: &Path) -> Result<Self, ProbeError> {
        let path = format_path(tracefs, CATEGORY, SWITCH);
        if !path.is_file() {
            return Err(ProbeError::NoTracepoint(format!("{CATEGORY}:{SWITCH}")));
        }
        let switch = read_text(&path)
            .and_then(|text| switch_layout(&text))
            .map_err(|error| ProbeError::Format { path, error })?;

        let mut wakeups = Vec::new();
        let mut disabled = Vec::new();
        for (program, global) in WAKEUPS {
            let path = format_path(tracefs, CATEGORY, program);
            if !path.is_file() {
                disabled.push(format!(
                    "{program} is off: this kernel has no tracepoint {CATEGORY}:{program}, so \
                     waits after such wakeups are not seen"
                ));
                continue;
            }
            let layout = read_text(&path)
                .and_then(|text| parse_format(&text))
                .and_then(|fields| wakeup_layout(&fields))
                .map_err(|error| ProbeError::Format { path, error })?;
            wakeups.push((program, global, layout));
        }
        Ok(Self {
            switch,
            wakeups,
            disabled,
        })
    }

    /// The programs this kernel gets, in attach order.
    pub fn programs(&self) -> Vec<&'static str> {
        std::iter::once(SWITCH)
            .chain(self.wakeups.iter().map(|&(program, _, _)| program))
            .collect()
    }

    /// Writes the layouts into the programs' globals.
    pub fn apply<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        loader.override_global("SCHED_SWITCH_LAYOUT", &self.switch, true);
        for (_, global, layout) in &self.wakeups {
            loader.override_global(global, layout, true);
        }
    }
}

/// The sched programs' maps; the programs stay attached while the loaded object lives.
pub struct SchedProbe {
    watched_map: BpfHashMap<MapData, u32, u32>,
    since: BpfHashMap<MapData, u32, u64>,
    waits: BpfHashMap<MapData, u32, RunqWait>,
    lost: PerCpuArray<MapData, u64>,
    watched: HashSet<u32>,
    attached: Vec<String>,
    disabled: Vec<String>,
}

impl SchedProbe {
    /// Attaches `sched_switch` and the wakeup programs this kernel has, and takes their maps.
    pub fn attach(ebpf: &mut aya::Ebpf, layouts: &SchedLayouts) -> Result<Self, ProbeError> {
        let mut attached = vec![SWITCH.to_owned()];
        attach_tracepoint(ebpf, CATEGORY, SWITCH)?;
        for &(program, _, _) in &layouts.wakeups {
            attach_tracepoint(ebpf, CATEGORY, program)?;
            attached.push(program.to_owned());
        }
        Ok(Self {
            watched_map: take_map(ebpf, RUNQ_WATCHED_MAP)?,
            since: take_map(ebpf, RUNQ_SINCE_MAP)?,
            waits: take_map(ebpf, RUNQ_WAIT_MAP)?,
            lost: take_map(ebpf, RUNQ_LOST_MAP)?,
            watched: HashSet::new(),
            attached,
            disabled: layouts.disabled.clone(),
        })
    }

    /// Names of the attached programs, e.g. `["sched_switch", "sched_wakeup", ...]`.
    pub fn attached(&self) -> Vec<String> {
        self.attached.clone()
    }

    /// Why some of the programs are off (the probe works without them, seeing less).
    pub fn disabled(&self) -> Vec<String> {
        self.disabled.clone()
    }

    /// Makes `tids` the watched threads (thread ids as in `/proc/<pid>/task/<tid>`). Threads
    /// that stay watched keep their figures; the others are forgotten. Tid 0 (the idle tasks)
    /// is ignored. Fails when more than [`RUNQ_MAX_ENTRIES`] threads are asked for, or when a
    /// map cannot be written; the watched set is then partly updated.
    pub fn watch(&mut self, tids: &[u32]) -> Result<(), EbpfError> {
        let wanted: HashSet<u32> = tids.iter().copied().filter(|&tid| tid != 0).collect();
        if wanted.len() > RUNQ_MAX_ENTRIES as usize {
            return Err(EbpfError::Map {
                map: RUNQ_WATCHED_MAP,
                error: format!(
                    "{} threads to watch, more than the {RUNQ_MAX_ENTRIES} it holds",
                    wanted.len()
                ),
            });
        }
        if wanted == self.watched {
            return Ok(());
        }
        // Stop the programs first, then forget what they recorded. Every key outside `wanted`
        // goes, not only the previous set's: it also clears what a failed `watch` left.
        remove_keys_not_in(&mut self.watched_map, RUNQ_WATCHED_MAP, &wanted)?;
        self.watched.retain(|tid| wanted.contains(tid));
        remove_keys_not_in(&mut self.since, RUNQ_SINCE_MAP, &wanted)?;
        remove_keys_not_in(&mut self.waits, RUNQ_WAIT_MAP, &wanted)?;
        // A new tid's entries come first: the programs only update existing ones.
        for &tid in &wanted {
            if self.watched.contains(&tid) {
                continue;
            }
            self.waits
                .insert(tid, RunqWait::default(), 0)
                .map_err(map_error(RUNQ_WAIT_MAP))?;
            self.since
                .insert(tid, 0, 0)
                .map_err(map_error(RUNQ_SINCE_MAP))?;
            self.watched_map
                .insert(tid, 1, 0)
                .map_err(map_error(RUNQ_WATCHED_MAP))?;
            self.watched.insert(tid);
        }
        Ok(())
    }

    /// Cumulative run-queue waits of each watched thread since it was first watched.
    pub fn per_tid(&self) -> Result<HashMap<u32, RunqWait>, EbpfError> {
        let mut out = HashMap::with_capacity(self.watched.len());
        for &tid in &self.watched {
            let wait = self.waits.get(&tid, 0).map_err(map_error(RUNQ_WAIT_MAP))?;
            out.insert(tid, wait);
        }
        Ok(out)
    }

    /// Events of watched threads the programs found no entry for (a `watch` that failed part
    /// way, or raced with the programs): non-zero means some waits were not recorded.
    pub fn lost_events(&self) -> Result<u64, EbpfError> {
        let values = self.lost.get(&0, 0).map_err(map_error(RUNQ_LOST_MAP))?;
        Ok(values.iter().fold(0, |sum, v| sum.wrapping_add(*v)))
    }
}

/// Removes every key of `map` that is not in `keep`.
fn remove_keys_not_in<V: aya::Pod>(
    map: &mut BpfHashMap<MapData, u32, V>,
    name: &'static str,
    keep: &HashSet<u32>,
) -> Result<(), EbpfError> {
    let stale = map
        .keys()
        .filter(|key| !key.as_ref().is_ok_and(|tid| keep.contains(tid)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_error(name))?;
    for tid in stale {
        match map.remove(&tid) {
            // Gone already: that is the goal.
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(error) => return Err(map_error(name)(error)),
        }
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String, FormatError> {
    fs::read_to_string(path).map_err(|error| FormatError::Read(error.to_string()))
}

/// The `sched_switch` layout from its format file: field offsets, and the sleep-state mask
/// from its print fmt.
fn switch_layout(format: &str) -> Result<SchedSwitchLayout, FormatError> {
    let fields = parse_format(format)?;
    let pid = |name| find_field(&fields, name, 4..=4, "4").map(|field| field.offset);
    // `long`: the program reads its low 32 bits, which hold every state bit.
    let prev_state = find_field(&fields, "prev_state", 4..=8, "4 or 8")?;
    Ok(SchedSwitchLayout {
        prev_pid_offset: pid("prev_pid")?,
        prev_state_offset: prev_state.offset,
        next_pid_offset: pid("next_pid")?,
        prev_state_sleep_mask: prev_state_sleep_mask(format)?,
    })
}

/// The `sched_wakeup`/`sched_wakeup_new` layout: the woken thread's `pid`.
fn wakeup_layout(fields: &[TracepointField]) -> Result<SchedWakeupLayout, FormatError> {
    Ok(SchedWakeupLayout {
        pid_offset: find_field(fields, "pid", 4..=4, "4")?.offset,
    })
}

/// The `prev_state` bits that mean "not runnable", from the print fmt of `sched_switch`: the
/// union of the state flags it prints, `__print_flags(REC->prev_state & ..., "|", { 0x01, "S" },
/// ...)`. On 4.14+ kernels that is `TASK_REPORT_MAX - 1` (0xff up to at least 6.18; the
/// preemption marker `TASK_REPORT_MAX` is above it); before 4.14, `TASK_STATE_MAX - 1`.
fn prev_state_sleep_mask(format: &str) -> Result<u32, FormatError> {
    const CALL: &str = "__print_flags(REC->prev_state";
    let no_flags = FormatError::PrintFmtShape("no __print_flags of prev_state");
    let print_fmt = format
        .lines()
        .find_map(|line| line.strip_prefix("print fmt:"))
        .ok_or(FormatError::PrintFmtShape("no print fmt line"))?;
    let (_, after) = print_fmt.split_once(CALL).ok_or(no_flags.clone())?;
    // The arguments end at the parenthesis that closes `__print_flags(`.
    let mut depth = 1usize;
    let end = after
        .char_indices()
        .find_map(|(index, c)| {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            (depth == 0).then_some(index)
        })
        .ok_or(FormatError::PrintFmtShape("unbalanced parentheses"))?;
    let mut mask = 0u32;
    // Each flag is `{ <value>, "<letter>" }`.
    for flag in after[..end].split('{').skip(1) {
        let value = flag
            .split_once(',')
            .map(|(value, _)| value.trim())
            .and_then(parse_c_integer)
            .ok_or(FormatError::PrintFmtShape(
                "a prev_state flag is not a 32-bit integer",
            ))?;
        mask |= value;
    }
    if mask == 0 {
        return Err(no_flags);
    }
    Ok(mask)
}

/// A C integer literal as print fmts write them: `0x00000001` or `1`.
fn parse_c_integer(text: &str) -> Option<u32> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::format::tests::field;

    /// /sys/kernel/tracing/events/sched/sched_switch/format on Linux 6.18 (x86_64).
    const SCHED_SWITCH: &str = "name: sched_switch
ID: 372
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prev_prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;
\tfield:char next_comm[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;
\tfield:int next_prio;\toffset:60;\tsize:4;\tsigned:1;

print fmt: \"prev_comm=%s prev_pid=%d prev_prio=%d prev_state=%s%s ==> next_comm=%s next_pid=%d \
next_prio=%d\", REC->prev_comm, REC->prev_pid, REC->prev_prio, (REC->prev_state & ((((0x00000000 \
| 0x00000001 | 0x00000002 | 0x00000004 | 0x00000008 | 0x00000010 | 0x00000020 | 0x00000040) + 1) \
<< 1) - 1)) ? __print_flags(REC->prev_state & ((((0x00000000 | 0x00000001 | 0x00000002 | \
0x00000004 | 0x00000008 | 0x00000010 | 0x00000020 | 0x00000040) + 1) << 1) - 1), \"|\", { \
0x00000001, \"S\" }, { 0x00000002, \"D\" }, { 0x00000004, \"T\" }, { 0x00000008, \"t\" }, { \
0x00000010, \"X\" }, { 0x00000020, \"Z\" }, { 0x00000040, \"P\" }, { 0x00000080, \"I\" }) : \"R\", \
REC->prev_state & (((0x00000000 | 0x00000001 | 0x00000002 | 0x00000004 | 0x00000008 | 0x00000010 \
| 0x00000020 | 0x00000040) + 1) << 1) ? \"+\" : \"\", REC->next_comm, REC->next_pid, REC->next_prio
";

    /// /sys/kernel/tracing/events/sched/sched_wakeup/format on the same kernel.
    const SCHED_WAKEUP: &str = "name: sched_wakeup
ID: 374
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:int target_cpu;\toffset:32;\tsize:4;\tsigned:1;

print fmt: \"comm=%s pid=%d prio=%d target_cpu=%03d\", REC->comm, REC->pid, REC->prio, \
REC->target_cpu
";

    /// /sys/kernel/tracing/events/sched/sched_wakeup_new/format on the same kernel.
    const SCHED_WAKEUP_NEW: &str = "name: sched_wakeup_new
ID: 373
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:int target_cpu;\toffset:32;\tsize:4;\tsigned:1;

print fmt: \"comm=%s pid=%d prio=%d target_cpu=%03d\", REC->comm, REC->pid, REC->prio, \
REC->target_cpu
";

    #[test]
    fn switch_layout_of_this_kernel() {
        assert_eq!(
            switch_layout(SCHED_SWITCH),
            Ok(SchedSwitchLayout {
                prev_pid_offset: 24,
                prev_state_offset: 32,
                next_pid_offset: 56,
                prev_state_sleep_mask: 0xff,
            })
        );
    }

    #[test]
    fn wakeup_layouts_of_this_kernel() {
        for format in [SCHED_WAKEUP, SCHED_WAKEUP_NEW] {
            let fields = parse_format(format).expect("parses");
            assert_eq!(
                wakeup_layout(&fields),
                Ok(SchedWakeupLayout { pid_offset: 24 })
            );
        }
        assert_eq!(
            wakeup_layout(&[field("pid", 24, 8)]),
            Err(FormatError::FieldSize {
                name: "pid",
                size: 8,
                expected: "4"
            })
        );
    }

    #[test]
    fn sleep_mask_of_kernels_before_4_14() {
        // Linux 4.9 printed decimal state values and TASK_STATE_MAX - 1 = 2047.
        let format = "print fmt: \"prev_state=%s%s\", REC->prev_state & (2048-1) ? \
            __print_flags(REC->prev_state & (2048-1), \"|\", { 1, \"S\"} , { 2, \"D\" }, \
            { 4, \"T\" }, { 8, \"t\" }, { 16, \"X\" }, { 32, \"Z\" }, { 64, \"x\" }, \
            { 128, \"K\" }, { 256, \"W\" }, { 512, \"P\" }, { 1024, \"N\" }) : \"R\", \
            REC->prev_state & 2048 ? \"+\" : \"\"\n";
        assert_eq!(prev_state_sleep_mask(format), Ok(2047));
    }

    #[test]
    fn sleep_mask_needs_the_state_flags() {
        let without_flags = SCHED_SWITCH.replace("__print_flags", "__print_symbolic");
        assert_eq!(
            prev_state_sleep_mask(&without_flags),
            Err(FormatError::PrintFmtShape("no __print_flags of prev_state"))
        );
        let without_print_fmt = SCHED_SWITCH.replace("print fmt:", "");
        assert_eq!(
            switch_layout(&without_print_fmt),
            Err(FormatError::PrintFmtShape("no print fmt line"))
        );
        let bad_value = SCHED_SWITCH.replace("0x00000080, \"I\"", "0xzz, \"I\"");
        assert_eq!(
            prev_state_sleep_mask(&bad_value),
            Err(FormatError::PrintFmtShape(
                "a prev_state flag is not a 32-bit integer"
            ))
        );
        let unbalanced = SCHED_SWITCH.split(" }) : \"R\"").next().expect("has R");
        assert_eq!(
            prev_state_sleep_mask(unbalanced),
            Err(FormatError::PrintFmtShape("unbalanced parentheses"))
        );
    }

    #[test]
    fn switch_layout_checks_fields() {
        let without_next_pid = SCHED_SWITCH.replace("next_pid;", "next_tid;");
        assert_eq!(
            switch_layout(&without_next_pid),
            Err(FormatError::MissingField("next_pid"))
        );
        let short_state = SCHED_SWITCH.replace(
            "long prev_state;\toffset:32;\tsize:8",
            "short prev_state;\toffset:32;\tsize:2",
        );
        assert_eq!(
            switch_layout(&short_state),
            Err(FormatError::FieldSize {
                name: "prev_state",
                size: 2,
                expected: "4 or 8"
            })
        );
    }
}
