//! The VM table: which columns fit, their headers with the sort arrow, and each row's cells;
//! the cells' figures serve the detail pane too.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, HighlightSpacing, Paragraph, Row, Table, TableState};

use super::{NO_FIGURE, SOURCE_OFF, dim};
use crate::top::app::{App, Availability, Column, VmMemory, VmRow};
use crate::top::format;

const NAME_MIN_WIDTH: u16 = 8;
const NAME_MAX_WIDTH: u16 = 32;
const HIGHLIGHT: &str = "> ";

/// Which columns stay when the terminal is narrow, most important first.
const KEEP_ORDER: [Column; 13] = [
    Column::Name,
    Column::Cpu,
    Column::Memory,
    Column::State,
    Column::VcpuCpu,
    Column::DiskRead,
    Column::DiskWrite,
    Column::NetRx,
    Column::NetTx,
    Column::Steal,
    Column::Iops,
    Column::Latency,
    Column::Kvm,
];

fn header(column: Column) -> &'static str {
    match column {
        Column::Name => "NAME",
        Column::State => "STATE",
        Column::Cpu => "CPU%",
        Column::VcpuCpu => "VCPU%",
        Column::Steal => "STEAL",
        Column::Memory => "MEM",
        Column::DiskRead => "RD B/s",
        Column::DiskWrite => "WR B/s",
        Column::Iops => "IOPS",
        Column::Latency => "IO P99",
        Column::NetRx => "RX b/s",
        Column::NetTx => "TX b/s",
        Column::Kvm => "KVM/s",
    }
}

/// Cell width of a fixed column: its widest figure, and its header with the sort arrow.
fn column_width(column: Column) -> u16 {
    match column {
        Column::Name => NAME_MIN_WIDTH,
        Column::State => 8,
        Column::Cpu | Column::VcpuCpu | Column::Steal | Column::Iops | Column::Kvm => 6,
        Column::Memory => 11,
        Column::DiskRead | Column::DiskWrite | Column::Latency | Column::NetRx | Column::NetTx => 7,
    }
}

/// One figure of a cell.
pub(super) enum Figure {
    Value(String),
    /// This tick has none.
    Missing,
    /// Its source is off.
    SourceOff,
}

pub(super) fn figure(value: Option<f64>, show: fn(f64) -> String) -> Figure {
    match value.filter(|v| v.is_finite()) {
        // + 0.0 turns -0.0 (a float sum of nothing) into 0, which prints without a sign.
        Some(v) => Figure::Value(show(v + 0.0)),
        None => Figure::Missing,
    }
}

fn gated(source: &Availability, value: Option<f64>, show: fn(f64) -> String) -> Figure {
    if source.is_on() {
        figure(value, show)
    } else {
        Figure::SourceOff
    }
}

fn memory_text(memory: VmMemory) -> Figure {
    match memory {
        VmMemory::Used { used, allocated } => Figure::Value(format!(
            "{}/{}",
            format::bytes(used as f64),
            format::bytes(allocated as f64)
        )),
        VmMemory::AllocationOnly(allocated) => {
            Figure::Value(format!("{} alloc", format::bytes(allocated as f64)))
        }
        VmMemory::Unknown => Figure::Missing,
    }
}

pub(super) fn cell_figure(app: &App, row: &VmRow, column: Column) -> Figure {
    let coverage = app.coverage();
    match column {
        Column::Name => Figure::Value(row.name.clone()),
        Column::State => Figure::Value(row.status.to_owned()),
        Column::Cpu => figure(row.cpu_pct, format::percent),
        Column::VcpuCpu => figure(row.vcpu_pct, format::percent),
        Column::Steal => figure(row.steal_pct, format::percent),
        Column::Memory => memory_text(row.memory),
        Column::DiskRead => figure(row.disk.map(|d| d.read_bytes_per_sec), format::bytes),
        Column::DiskWrite => figure(row.disk.map(|d| d.write_bytes_per_sec), format::bytes),
        Column::Iops => figure(row.disk_iops(), format::decimal),
        Column::Latency => gated(&coverage.latency, row.latency_p99_us, format::latency_us),
        Column::NetRx => figure(row.net.map(|n| n.rx.bps), format::decimal),
        Column::NetTx => figure(row.net.map(|n| n.tx.bps), format::decimal),
        Column::Kvm => gated(&coverage.kvm, row.kvm_per_sec, format::decimal),
    }
}

fn cell(figure: Figure, column: Column) -> Cell<'static> {
    let (text, style) = match figure {
        Figure::Value(text) => (text, Style::new()),
        Figure::Missing => (NO_FIGURE.to_owned(), dim()),
        Figure::SourceOff => (SOURCE_OFF.to_owned(), dim()),
    };
    let line = Line::styled(text, style);
    Cell::from(match column {
        Column::Name | Column::State => line,
        _ => line.alignment(Alignment::Right),
    })
}

/// The columns that fit `width`, in display order, and the name column's width.
fn fitting_columns(width: u16, longest_name: u16) -> (Vec<Column>, u16) {
    let available = width.saturating_sub(HIGHLIGHT.len() as u16);
    let name_width = longest_name
        .clamp(NAME_MIN_WIDTH, NAME_MAX_WIDTH)
        .min(available);
    let mut used = name_width;
    let mut columns = vec![Column::Name];
    for &column in &KEEP_ORDER[1..] {
        let needed = 1 + column_width(column);
        if used + needed <= available {
            used += needed;
            columns.push(column);
        }
    }
    columns.sort_by_key(|c| Column::ALL.iter().position(|a| a == c));
    (columns, name_width)
}

pub(super) fn render_table(app: &App, frame: &mut Frame, area: Rect) {
    if let Availability::Off(reason) = &app.coverage().vms {
        frame.render_widget(
            Paragraph::new(format!("VM table {SOURCE_OFF}: {reason}")).style(dim()),
            area,
        );
        return;
    }
    let rows = app.visible_rows();
    let longest_name = app
        .screen()
        .rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0);
    let (columns, name_width) =
        fitting_columns(area.width, u16::try_from(longest_name).unwrap_or(u16::MAX));
    let sort = app.sort();
    let headers = columns.iter().map(|&column| {
        let mut text = header(column).to_owned();
        if column == sort.column {
            text.push(if sort.ascending() { '▲' } else { '▼' });
        }
        let line = Line::from(text);
        Cell::from(match column {
            Column::Name | Column::State => line,
            _ => line.alignment(Alignment::Right),
        })
    });
    let widths = columns.iter().map(|&column| match column {
        Column::Name => Constraint::Length(name_width),
        _ => Constraint::Length(column_width(column)),
    });
    let table_rows = rows.iter().map(|row| {
        let style = if row.missing.is_some() || row.status == "gone" {
            Style::new().fg(Color::Yellow)
        } else {
            Style::new()
        };
        Row::new(
            columns
                .iter()
                .map(|&column| cell(cell_figure(app, row, column), column)),
        )
        .style(style)
    });
    let table = Table::new(table_rows, widths)
        .header(
            Row::new(headers).style(Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)),
        )
        .column_spacing(1)
        .highlight_symbol(HIGHLIGHT)
        .highlight_spacing(HighlightSpacing::Always)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let [table_area, note_area] = Layout::vertical([
        Constraint::Length(
            u16::try_from(rows.len())
                .unwrap_or(u16::MAX)
                .saturating_add(1),
        ),
        Constraint::Min(0),
    ])
    .areas(area);
    let mut state = TableState::default().with_selected(app.selected_index(&rows));
    frame.render_stateful_widget(table, table_area, &mut state);
    let note = match (&app.screen().tick, rows.is_empty()) {
        (None, _) | (_, false) => None,
        (Some(_), true) if !app.filter().is_empty() => {
            Some(format!("no VM name contains \"{}\"", app.filter()))
        }
        (Some(tick), true) if tick.vm_count.is_none() => {
            Some("libvirt does not answer: no VMs to show yet".to_owned())
        }
        (Some(_), true) => Some("libvirt lists no VMs".to_owned()),
    };
    if let Some(note) = note {
        frame.render_widget(Paragraph::new(note).style(dim()), note_area);
    }
}

#[cfg(test)]
mod tests {
    use crossterm::event::KeyCode;
    use std::time::Duration;

    use crate::top::app::{App, Availability};
    use crate::top::fixtures;
    use crate::top::view::screen::{app, assert_screen, draw, press, row_is_highlighted};

    #[test]
    fn the_table_shows_every_figure_and_marks_what_this_tick_lacks() {
        let app = app(fixtures::coverage_all_on());
        assert_screen(
            draw(&app, 120, 10),
            &[
                "setmov top  hv1 192.0.2.2  tick 1 00:00:01 UTC  every 1s  eBPF on  VMs 2 running",
                "CPU 37.5%  MEM 1.0G/4.0G B (25.0% used)  DISK R 1.5M W 256K B/s, 120 IOPS  NET RX 2.4M TX 300k bit/s",
                "  NAME      STATE     CPU%▼  VCPU%  STEAL         MEM  RD B/s  WR B/s   IOPS  IO P99  RX b/s  TX b/s  KVM/s",
                "> desk-busy running    10.0   10.0    1.5   700M/1.0G    1.5M    256K    120   2.3ms    2.4M    300k   1.5k",
                "  desk-idle running     0.4    0.8    0.0  512M alloc       0    4.0K      1       –    1.6k     900      –",
                "  desk-away missing       –      –      –           –       –       –      –       –       –       –      –",
                "",
                "–: no figure this tick (first sample, counter reset, VM not answering, no I/O) · alloc: allocation only, the guest",
                "reports no balloon stats · missing: libvirt did not answer within the tick",
                "q quit  ? help  s/S sort  r reverse  / filter  p pause  +/- interval  ↑/↓ select  Enter detail",
            ],
        );
        assert!(row_is_highlighted(&app, 120, 10, 3));
        assert!(!row_is_highlighted(&app, 120, 10, 4));
    }

    #[test]
    fn without_ebpf_latency_and_kvm_read_not_available_and_the_footer_says_why() {
        let app = app(fixtures::coverage_without_ebpf());
        assert_screen(
            draw(&app, 120, 10),
            &[
                "setmov top  hv1 192.0.2.2  tick 1 00:00:01 UTC  every 1s  eBPF off  VMs 2 running",
                "CPU 37.5%  MEM 1.0G/4.0G B (25.0% used)  DISK R 1.5M W 256K B/s, 120 IOPS  NET RX 2.4M TX 300k bit/s",
                "  NAME      STATE     CPU%▼  VCPU%  STEAL         MEM  RD B/s  WR B/s   IOPS  IO P99  RX b/s  TX b/s  KVM/s",
                "> desk-busy running    10.0   10.0    1.5   700M/1.0G    1.5M    256K    120     n/a    2.4M    300k    n/a",
                "  desk-idle running     0.4    0.8    0.0  512M alloc       0    4.0K      1     n/a    1.6k     900    n/a",
                "  desk-away missing       –      –      –           –       –       –      –     n/a       –       –    n/a",
                "",
                "IO P99, KVM/s n/a: eBPF is off: --no-ebpf given · –: no figure this tick (first sample, counter reset, VM not answering,",
                "no I/O) · alloc: allocation only, the guest reports no balloon stats · missing: libvirt did not answer within the tick",
                "q quit  ? help  s/S sort  r reverse  / filter  p pause  +/- interval  ↑/↓ select  Enter detail",
            ],
        );
    }

    #[test]
    fn without_libvirt_the_table_is_not_available() {
        let mut coverage = fixtures::coverage_without_ebpf();
        coverage.vms = Availability::Off("--no-libvirt given".into());
        let mut app = App::new(coverage, Duration::from_millis(500));
        let mut tick = (*fixtures::tick(1)).clone();
        tick.vms.clear();
        tick.vm_count = None;
        app.ingest(std::sync::Arc::new(tick));
        assert_screen(
            draw(&app, 100, 8),
            &[
                "setmov top  hv1 192.0.2.2  tick 1 00:00:01 UTC  every 500ms  eBPF off  VMs n/a",
                "CPU 37.5%  MEM 1.0G/4.0G B (25.0% used)  DISK R 1.5M W 256K B/s, 120 IOPS  NET RX 2.4M TX 300k bit/s",
                "VM table n/a: --no-libvirt given",
                "",
                "",
                "VMs n/a: --no-libvirt given · IO P99, KVM/s n/a: eBPF is off: --no-ebpf given · –: no figure this",
                "tick (first sample, counter reset, VM not answering, no I/O)",
                "q quit  ? help  s/S sort  r reverse  / filter  p pause  +/- interval  ↑/↓ select  Enter detail",
            ],
        );
    }

    #[test]
    fn sorted_by_name_the_arrow_moves_and_points_up() {
        let mut app = app(fixtures::coverage_all_on());
        press(&mut app, &[KeyCode::Char('S'), KeyCode::Char('S')]);
        assert_screen(
            draw(&app, 120, 10),
            &[
                "setmov top  hv1 192.0.2.2  tick 1 00:00:01 UTC  every 1s  eBPF on  VMs 2 running",
                "CPU 37.5%  MEM 1.0G/4.0G B (25.0% used)  DISK R 1.5M W 256K B/s, 120 IOPS  NET RX 2.4M TX 300k bit/s",
                "  NAME▲     STATE      CPU%  VCPU%  STEAL         MEM  RD B/s  WR B/s   IOPS  IO P99  RX b/s  TX b/s  KVM/s",
                "> desk-away missing       –      –      –           –       –       –      –       –       –       –      –",
                "  desk-busy running    10.0   10.0    1.5   700M/1.0G    1.5M    256K    120   2.3ms    2.4M    300k   1.5k",
                "  desk-idle running     0.4    0.8    0.0  512M alloc       0    4.0K      1       –    1.6k     900      –",
                "",
                "–: no figure this tick (first sample, counter reset, VM not answering, no I/O) · alloc: allocation only, the guest",
                "reports no balloon stats · missing: libvirt did not answer within the tick",
                "q quit  ? help  s/S sort  r reverse  / filter  p pause  +/- interval  ↑/↓ select  Enter detail",
            ],
        );
        press(&mut app, &[KeyCode::Char('r')]);
        assert_screen(
            draw(&app, 120, 10),
            &[
                "setmov top  hv1 192.0.2.2  tick 1 00:00:01 UTC  every 1s  eBPF on  VMs 2 running",
                "CPU 37.5%  MEM 1.0G/4.0G B (25.0% used)  DISK R 1.5M W 256K B/s, 120 IOPS  NET RX 2.4M TX 300k bit/s",
                "  NAME▼     STATE      CPU%  VCPU%  STEAL         MEM  RD B/s  WR B/s   IOPS  IO P99  RX b/s  TX b/s  KVM/s",
                "> desk-idle running     0.4    0.8    0.0  512M alloc       0    4.0K      1       –    1.6k     900      –",
                "  desk-busy running    10.0   10.0    1.5   700M/1.0G    1.5M    256K    120   2.3ms    2.4M    300k   1.5k",
                "  desk-away missing       –      –      –           –       –       –      –       –       –       –      –",
                "",
                "–: no figure this tick (first sample, counter reset, VM not answering, no I/O) · alloc: allocation only, the guest",
                "reports no balloon stats · missing: libvirt did not answer within the tick",
                "q quit  ? help  s/S sort  r reverse  / filter  p pause  +/- interval  ↑/↓ select  Enter detail",
            ],
        );
    }

    #[test]
    fn a_filter_shows_matching_names_and_is_named_in_the_header() {
        let mut app = app(fixtures::coverage_all_on());
        press(&mut app, &[KeyCode::Char('/')]);
        for c in "IDLE".chars() {
            press(&mut app, &[KeyCode::Char(c)]);
        }
        assert_screen(
            draw(&app, 100, 10),
            &[
                "setmov top  hv1 192.0.2.2  tick 1 00:00:01 UTC  every 1s  eBPF on  VMs 2 running",
                "CPU 37.5%  MEM 1.0G/4.0G B (25.0% used)  DISK R 1.5M W 256K B/s, 120 IOPS  NET RX 2.4M TX 300k bit/s",
                "  NAME      STATE     CPU%▼  VCPU%  STEAL         MEM  RD B/s  WR B/s   IOPS  IO P99  RX b/s  TX b/s",
                "> desk-busy running    10.0   10.0    1.5   700M/1.0G    1.5M    256K    120   2.3ms    2.4M    300k",
                "  desk-idle running     0.4    0.8    0.0  512M alloc       0    4.0K      1       –    1.6k     900",
                "  desk-away missing       –      –      –           –       –       –      –       –       –       –",
                "",
                "–: no figure this tick (first sample, counter reset, VM not answering, no I/O) · alloc: allocation",
                "only, the guest reports no balloon stats · missing: libvirt did not answer within the tick",
                "filter: IDLE█  Enter applies · Esc clears",
            ],
        );
        press(&mut app, &[KeyCode::Enter]);
        assert_screen(
            draw(&app, 100, 8),
            &[
                "setmov top  hv1 192.0.2.2  tick 1 00:00:01 UTC  every 1s  eBPF on  VMs 2 running  filter \"IDLE\"",
                "CPU 37.5%  MEM 1.0G/4.0G B (25.0% used)  DISK R 1.5M W 256K B/s, 120 IOPS  NET RX 2.4M TX 300k bit/s",
                "  NAME      STATE     CPU%▼  VCPU%  STEAL         MEM  RD B/s  WR B/s   IOPS  IO P99  RX b/s  TX b/s",
                "> desk-idle running     0.4    0.8    0.0  512M alloc       0    4.0K      1       –    1.6k     900",
                "",
                "–: no figure this tick (first sample, counter reset, VM not answering, no I/O) · alloc: allocation",
                "only, the guest reports no balloon stats · missing: libvirt did not answer within the tick",
                "q quit  ? help  s/S sort  r reverse  / filter  p pause  +/- interval  ↑/↓ select  Enter detail",
            ],
        );
        press(
            &mut app,
            &[KeyCode::Char('/'), KeyCode::Char('x'), KeyCode::Enter],
        );
        assert_screen(
            draw(&app, 100, 8),
            &[
                "setmov top  hv1 192.0.2.2  tick 1 00:00:01 UTC  every 1s  eBPF on  VMs 2 running  filter \"IDLEx\"",
                "CPU 37.5%  MEM 1.0G/4.0G B (25.0% used)  DISK R 1.5M W 256K B/s, 120 IOPS  NET RX 2.4M TX 300k bit/s",
                "  NAME      STATE     CPU%▼  VCPU%  STEAL         MEM  RD B/s  WR B/s   IOPS  IO P99  RX b/s  TX b/s",
                "no VM name contains \"IDLEx\"",
                "",
                "–: no figure this tick (first sample, counter reset, VM not answering, no I/O) · alloc: allocation",
                "only, the guest reports no balloon stats · missing: libvirt did not answer within the tick",
                "q quit  ? help  s/S sort  r reverse  / filter  p pause  +/- interval  ↑/↓ select  Enter detail",
            ],
        );
    }

    #[test]
    fn a_narrow_terminal_keeps_the_most_important_columns() {
        let app = app(fixtures::coverage_all_on());
        assert_screen(
            draw(&app, 60, 10),
            &[
                "setmov top  hv1 192.0.2.2  tick 1 00:00:01 UTC  every 1s  eB",
                "CPU 37.5%  MEM 1.0G/4.0G B (25.0% used)  DISK R 1.5M W 256K",
                "  NAME      STATE     CPU%▼  VCPU%         MEM  RD B/s",
                "> desk-busy running    10.0   10.0   700M/1.0G    1.5M",
                "  desk-idle running     0.4    0.8  512M alloc       0",
                "  desk-away missing       –      –           –       –",
                "",
                "–: no figure this tick (first sample, counter reset, VM not",
                "answering, no I/O) · alloc: allocation only, the guest",
                "q quit  ? help  s/S sort  r reverse  / filter  p pause  +/-",
            ],
        );
        assert_screen(
            draw(&app, 24, 8),
            &[
                "setmov top  hv1 192.0.2.",
                "CPU 37.5%  MEM 1.0G/4.0G",
                "  NAME       CPU%▼",
                "> desk-busy   10.0",
                "  desk-idle    0.4",
                "–: no figure this tick",
                "(first sample, counter",
                "q quit  ? help  s/S sort",
            ],
        );
    }
}
