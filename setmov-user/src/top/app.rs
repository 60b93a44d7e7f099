//! The state of `setmov top` and what each key does to it; no I/O.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::ebpf::Probes;
use crate::store::TickRecord;

pub use super::vm_row::{Column, Series, Sort, VmHistory, VmMemory, VmRow};

/// Samples of history kept per VM for the detail pane's sparklines: wider than any terminal.
pub const HISTORY_LEN: usize = 300;

/// The intervals `+` and `-` step through.
pub const INTERVAL_STEPS: [Duration; 9] = [
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
];

/// Whether a source of figures runs, and if not, why (shown in the footer's legend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    On,
    Off(String),
}

impl Availability {
    pub fn is_on(&self) -> bool {
        *self == Availability::On
    }
}

/// Which figures the sources can give at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// The VM table (libvirt).
    pub vms: Availability,
    /// The eBPF probes as a whole.
    pub ebpf: Availability,
    /// I/O latency (the block probe's latency programs).
    pub latency: Availability,
    /// KVM events (the kvm probe).
    pub kvm: Availability,
}

impl Coverage {
    /// From what the caller could start: the libvirt collector, and the probes or why not.
    pub fn new(vms: Availability, probes: Result<&Probes, &str>) -> Coverage {
        let probes = match probes {
            Ok(probes) => probes,
            Err(reason) => {
                let off = Availability::Off(format!("eBPF is off: {reason}"));
                return Coverage {
                    vms,
                    ebpf: off.clone(),
                    latency: off.clone(),
                    kvm: off,
                };
            }
        };
        let latency = match &probes.block {
            None => Availability::Off("the eBPF block probe is off".into()),
            Some(block) => match block.latency_off() {
                Some(reason) => Availability::Off(reason.to_owned()),
                None => Availability::On,
            },
        };
        let kvm = match &probes.kvm {
            None => Availability::Off("the eBPF kvm probe is off".into()),
            Some(_) => Availability::On,
        };
        Coverage {
            vms,
            ebpf: Availability::On,
            latency,
            kvm,
        }
    }
}

/// Everything drawn from the ticks: the newest one, its rows, and the history behind them.
#[derive(Debug, Clone, Default)]
pub struct Screen {
    pub tick: Option<Arc<TickRecord>>,
    pub rows: Vec<VmRow>,
    pub history: HashMap<String, VmHistory>,
}

impl Screen {
    fn ingest(&mut self, tick: Arc<TickRecord>) {
        self.rows = tick.vms.iter().map(VmRow::from_sample).collect();
        // The history of VMs no longer listed goes with them.
        self.history
            .retain(|uuid, _| self.rows.iter().any(|r| r.uuid == *uuid));
        for row in &self.rows {
            self.history.entry(row.uuid.clone()).or_default().push(row);
        }
        self.tick = Some(tick);
    }
}

/// What the loop around [`handle_key`] must do besides drawing again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Quit,
    /// Sample at this interval from now on.
    SetInterval(Duration),
}

/// The whole state of the view.
#[derive(Debug, Clone)]
pub struct App {
    coverage: Coverage,
    /// The sampling interval asked for.
    interval: Duration,
    live: Screen,
    /// What stays on screen while paused; sampling goes on into `live`.
    frozen: Option<Screen>,
    ticks_while_paused: u64,
    sort: Sort,
    /// Applied name filter (case-insensitive substring); empty shows every VM.
    filter: String,
    /// The filter being typed after `/`.
    filter_input: Option<String>,
    /// The selected VM's UUID, so that the selection follows it through re-sorting.
    selected: Option<String>,
    detail: bool,
    help: bool,
    /// The newest warning logged, for the footer.
    warning: Option<String>,
}

impl App {
    pub fn new(coverage: Coverage, interval: Duration) -> App {
        App {
            coverage,
            interval,
            live: Screen::default(),
            frozen: None,
            ticks_while_paused: 0,
            sort: Sort {
                column: Column::Cpu,
                reversed: false,
            },
            filter: String::new(),
            filter_input: None,
            selected: None,
            detail: false,
            help: false,
            warning: None,
        }
    }

    pub fn ingest(&mut self, tick: Arc<TickRecord>) {
        self.live.ingest(tick);
        if self.frozen.is_some() {
            self.ticks_while_paused += 1;
        }
    }

    pub fn set_warning(&mut self, warning: Option<String>) {
        self.warning = warning;
    }

    /// What is on screen: the frozen screen while paused, else the newest.
    pub fn screen(&self) -> &Screen {
        self.frozen.as_ref().unwrap_or(&self.live)
    }

    /// The rows that pass the filter, sorted.
    pub fn visible_rows(&self) -> Vec<&VmRow> {
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<&VmRow> = self
            .screen()
            .rows
            .iter()
            .filter(|r| r.name.to_lowercase().contains(&needle))
            .collect();
        rows.sort_by(|a, b| self.sort.compare(a, b));
        rows
    }

    /// Index in [`App::visible_rows`] of the selected VM; the first row when it is not
    /// there.
    pub fn selected_index(&self, rows: &[&VmRow]) -> Option<usize> {
        if rows.is_empty() {
            return None;
        }
        let found = self
            .selected
            .as_ref()
            .and_then(|uuid| rows.iter().position(|r| r.uuid == *uuid));
        Some(found.unwrap_or(0))
    }

    /// The VM the detail pane shows.
    pub fn selected_row(&self) -> Option<&VmRow> {
        let rows = self.visible_rows();
        self.selected_index(&rows)
            .and_then(|i| rows.get(i).copied())
    }

    pub fn coverage(&self) -> &Coverage {
        &self.coverage
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn paused(&self) -> bool {
        self.frozen.is_some()
    }

    pub fn ticks_while_paused(&self) -> u64 {
        self.ticks_while_paused
    }

    pub fn sort(&self) -> Sort {
        self.sort
    }

    pub fn filter(&self) -> &str {
        &self.filter
    }

    pub fn filter_input(&self) -> Option<&str> {
        self.filter_input.as_deref()
    }

    pub fn detail_open(&self) -> bool {
        self.detail
    }

    pub fn help_shown(&self) -> bool {
        self.help
    }

    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    fn move_selection(&mut self, step: isize) {
        let rows = self.visible_rows();
        let Some(current) = self.selected_index(&rows) else {
            return;
        };
        let last = rows.len().saturating_sub(1);
        let index = current.saturating_add_signed(step).min(last);
        self.selected = rows.get(index).map(|row| row.uuid.clone());
    }

    fn toggle_pause(&mut self) {
        self.frozen = match self.frozen {
            Some(_) => None,
            None => {
                self.ticks_while_paused = 0;
                Some(self.live.clone())
            }
        };
    }

    /// The next step of [`INTERVAL_STEPS`] above (`longer`) or below the current interval.
    fn step_interval(&mut self, longer: bool) -> Action {
        let next = if longer {
            INTERVAL_STEPS.iter().find(|&&d| d > self.interval)
        } else {
            INTERVAL_STEPS.iter().rev().find(|&&d| d < self.interval)
        };
        match next {
            Some(&interval) => {
                self.interval = interval;
                Action::SetInterval(interval)
            }
            None => Action::Continue,
        }
    }
}

/// What a key does. Keys while typing a filter go to the filter; while the help is shown any
/// key but quit closes it.
pub fn handle_key(app: &mut App, key: KeyEvent) -> Action {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c' | 'C')) {
        return Action::Quit;
    }
    if let Some(input) = &mut app.filter_input {
        match key.code {
            KeyCode::Enter => {
                app.filter = input.trim().to_owned();
                app.filter_input = None;
            }
            KeyCode::Esc => {
                app.filter.clear();
                app.filter_input = None;
            }
            KeyCode::Backspace => {
                input.pop();
            }
            KeyCode::Char(c) if !ctrl => input.push(c),
            _ => {}
        }
        return Action::Continue;
    }
    if key.code == KeyCode::Char('q') {
        return Action::Quit;
    }
    if app.help {
        app.help = false;
        return Action::Continue;
    }
    match key.code {
        KeyCode::Char('?') => app.help = true,
        KeyCode::Char('s') => app.sort.column = app.sort.column.next(),
        KeyCode::Char('S') => app.sort.column = app.sort.column.previous(),
        KeyCode::Char('r') => app.sort.reversed = !app.sort.reversed,
        KeyCode::Char('/') => app.filter_input = Some(app.filter.clone()),
        KeyCode::Char('p' | ' ') => app.toggle_pause(),
        KeyCode::Char('+' | '=') => return app.step_interval(true),
        KeyCode::Char('-') => return app.step_interval(false),
        KeyCode::Enter | KeyCode::Char('d') => {
            let row = app.selected_row().map(|r| r.uuid.clone());
            if row.is_some() {
                app.selected = row;
                app.detail = true;
            }
        }
        KeyCode::Esc if app.detail => app.detail = false,
        KeyCode::Esc => app.filter.clear(),
        KeyCode::Up | KeyCode::Char('k') => app.move_selection(-1),
        KeyCode::Down | KeyCode::Char('j') => app.move_selection(1),
        KeyCode::PageUp => app.move_selection(-10),
        KeyCode::PageDown => app.move_selection(10),
        KeyCode::Home | KeyCode::Char('g') => app.move_selection(isize::MIN),
        KeyCode::End | KeyCode::Char('G') => app.move_selection(isize::MAX),
        _ => {}
    }
    Action::Continue
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::fixtures;

    fn press(app: &mut App, code: KeyCode) -> Action {
        handle_key(app, KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn type_text(app: &mut App, text: &str) {
        for c in text.chars() {
            press(app, KeyCode::Char(c));
        }
    }

    fn names(app: &App) -> Vec<&str> {
        app.visible_rows().iter().map(|r| r.name.as_str()).collect()
    }

    fn app() -> App {
        let mut app = App::new(fixtures::coverage_all_on(), Duration::from_secs(1));
        app.ingest(fixtures::tick(1));
        app
    }

    #[test]
    fn control_characters_in_vm_names_and_reasons_are_escaped_in_the_rows() {
        let mut app = App::new(fixtures::coverage_all_on(), Duration::from_secs(1));
        let mut tick = (*fixtures::tick(1)).clone();
        tick.host.name = "hv\x1b[2J".into();
        if let Some(vm) = tick.vms.first_mut() {
            vm.name = "evil\n\x1b[2J\tvm".into();
            vm.missing = Some("libvirt: \x1b]0;title\x07".into());
        }
        app.ingest(Arc::new(tick));
        let row = app
            .visible_rows()
            .into_iter()
            .find(|r| r.name.starts_with("evil"))
            .cloned();
        let row = row.expect("the row");
        assert_eq!(row.name, "evil\\n\\x1b[2J\\tvm");
        assert_eq!(row.missing.as_deref(), Some("libvirt: \\x1b]0;title\\x07"));
    }

    #[test]
    fn rows_start_sorted_by_cpu_largest_first_and_missing_figures_last() {
        let app = app();
        assert_eq!(names(&app), ["desk-busy", "desk-idle", "desk-away"]);
    }

    #[test]
    fn s_and_shift_s_cycle_the_sort_column_and_r_reverses() {
        let mut app = app();
        press(&mut app, KeyCode::Char('s'));
        assert_eq!(app.sort().column, Column::VcpuCpu);
        press(&mut app, KeyCode::Char('S'));
        press(&mut app, KeyCode::Char('S'));
        press(&mut app, KeyCode::Char('S'));
        assert_eq!(app.sort().column, Column::Name);
        assert_eq!(names(&app), ["desk-away", "desk-busy", "desk-idle"]);
        press(&mut app, KeyCode::Char('r'));
        assert_eq!(names(&app), ["desk-idle", "desk-busy", "desk-away"]);
        // Backwards from the first column wraps to the last.
        press(&mut app, KeyCode::Char('S'));
        assert_eq!(app.sort().column, Column::Kvm);
    }

    #[test]
    fn a_reversed_figure_sort_still_puts_rows_without_the_figure_last() {
        let mut app = app();
        press(&mut app, KeyCode::Char('r'));
        assert_eq!(names(&app), ["desk-idle", "desk-busy", "desk-away"]);
    }

    #[test]
    fn slash_types_a_filter_that_enter_applies_and_esc_clears() {
        let mut app = app();
        press(&mut app, KeyCode::Char('/'));
        type_text(&mut app, "BUSX");
        press(&mut app, KeyCode::Backspace);
        press(&mut app, KeyCode::Backspace);
        // Typing does not filter yet, and keys are text: `q` does not quit.
        assert_eq!(app.filter_input(), Some("BU"));
        assert_eq!(names(&app).len(), 3);
        assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Continue);
        press(&mut app, KeyCode::Backspace);
        press(&mut app, KeyCode::Enter);
        assert_eq!((app.filter(), app.filter_input()), ("BU", None));
        assert_eq!(names(&app), ["desk-busy"]);
        // `/` again starts from the applied filter; Esc clears it.
        press(&mut app, KeyCode::Char('/'));
        assert_eq!(app.filter_input(), Some("BU"));
        press(&mut app, KeyCode::Esc);
        assert_eq!((app.filter(), app.filter_input()), ("", None));
        assert_eq!(names(&app).len(), 3);
    }

    #[test]
    fn pause_freezes_the_screen_while_ticks_still_arrive() {
        let mut app = app();
        press(&mut app, KeyCode::Char('p'));
        app.ingest(fixtures::tick(2));
        app.ingest(fixtures::tick(3));
        assert!(app.paused());
        assert_eq!(app.ticks_while_paused(), 2);
        assert_eq!(app.screen().tick.as_ref().map(|t| t.seq), Some(1));
        press(&mut app, KeyCode::Char(' '));
        assert!(!app.paused());
        assert_eq!(app.screen().tick.as_ref().map(|t| t.seq), Some(3));
        // The history went on while paused.
        let history = &app.screen().history["00000000-0000-0000-0000-00000000000b"];
        assert_eq!(history.cpu_vcpu_pct.newest_first().count(), 3);
    }

    #[test]
    fn plus_and_minus_step_the_interval_and_stop_at_the_ends() {
        let mut app = app();
        let ms = Duration::from_millis;
        assert_eq!(
            press(&mut app, KeyCode::Char('+')),
            Action::SetInterval(ms(2000))
        );
        assert_eq!(
            press(&mut app, KeyCode::Char('-')),
            Action::SetInterval(ms(1000))
        );
        assert_eq!(
            press(&mut app, KeyCode::Char('-')),
            Action::SetInterval(ms(500))
        );
        assert_eq!(app.interval(), ms(500));
        let mut fast = App::new(fixtures::coverage_all_on(), ms(100));
        assert_eq!(press(&mut fast, KeyCode::Char('-')), Action::Continue);
        // An interval between steps goes to the neighbouring step.
        let mut odd = App::new(fixtures::coverage_all_on(), ms(700));
        assert_eq!(
            press(&mut odd, KeyCode::Char('+')),
            Action::SetInterval(ms(1000))
        );
        let mut slow = App::new(fixtures::coverage_all_on(), ms(60_000));
        assert_eq!(press(&mut slow, KeyCode::Char('+')), Action::Continue);
    }

    #[test]
    fn selection_moves_within_the_rows_and_follows_its_vm_through_a_resort() {
        let mut app = app();
        press(&mut app, KeyCode::Up);
        assert_eq!(
            app.selected_row().map(|r| r.name.as_str()),
            Some("desk-busy")
        );
        press(&mut app, KeyCode::Char('j'));
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Down);
        assert_eq!(
            app.selected_row().map(|r| r.name.as_str()),
            Some("desk-away")
        );
        press(&mut app, KeyCode::Char('k'));
        assert_eq!(
            app.selected_row().map(|r| r.name.as_str()),
            Some("desk-idle")
        );
        press(&mut app, KeyCode::Char('r'));
        assert_eq!(app.selected_index(&app.visible_rows()), Some(0));
        assert_eq!(
            app.selected_row().map(|r| r.name.as_str()),
            Some("desk-idle")
        );
        press(&mut app, KeyCode::End);
        assert_eq!(
            app.selected_row().map(|r| r.name.as_str()),
            Some("desk-away")
        );
        press(&mut app, KeyCode::Home);
        assert_eq!(
            app.selected_row().map(|r| r.name.as_str()),
            Some("desk-idle")
        );
    }

    #[test]
    fn enter_opens_the_selected_vm_and_esc_closes_it() {
        let mut app = app();
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Enter);
        assert!(app.detail_open());
        assert_eq!(
            app.selected_row().map(|r| r.name.as_str()),
            Some("desk-idle")
        );
        press(&mut app, KeyCode::Esc);
        assert!(!app.detail_open());
        press(&mut app, KeyCode::Char('d'));
        assert!(app.detail_open());
    }

    #[test]
    fn enter_without_rows_opens_nothing() {
        let mut app = App::new(fixtures::coverage_all_on(), Duration::from_secs(1));
        press(&mut app, KeyCode::Enter);
        press(&mut app, KeyCode::Down);
        assert!(!app.detail_open());
    }

    #[test]
    fn help_opens_with_question_mark_and_any_key_but_quit_closes_it() {
        let mut app = app();
        press(&mut app, KeyCode::Char('?'));
        assert!(app.help_shown());
        // The key only closes the help: no sort change.
        press(&mut app, KeyCode::Char('s'));
        assert!(!app.help_shown());
        assert_eq!(app.sort().column, Column::Cpu);
        press(&mut app, KeyCode::Char('?'));
        assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);
    }

    #[test]
    fn q_and_ctrl_c_quit_even_while_typing() {
        let mut app = app();
        assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);
        press(&mut app, KeyCode::Char('/'));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(handle_key(&mut app, ctrl_c), Action::Quit);
    }

    #[test]
    fn a_vm_that_leaves_takes_its_history_with_it() {
        let mut app = app();
        let mut tick = (*fixtures::tick(2)).clone();
        tick.vms.retain(|vm| vm.name != "desk-idle");
        app.ingest(Arc::new(tick));
        assert_eq!(app.screen().history.len(), 2);
        assert_eq!(names(&app), ["desk-busy", "desk-away"]);
    }

    #[test]
    fn odd_figures_neither_panic_nor_plot() {
        let mut series = Series::default();
        series.push(Some(f64::NAN));
        series.push(Some(f64::INFINITY));
        series.push(Some(3.0));
        assert_eq!(series.latest(), Some(3.0));
        assert_eq!(series.max_of_newest(10), Some(3.0));
        for _ in 0..HISTORY_LEN + 5 {
            series.push(None);
        }
        assert_eq!(series.newest_first().count(), HISTORY_LEN);
        assert_eq!(series.max_of_newest(HISTORY_LEN), None);
    }
}
