//! Drawing the state: host lines, the VM table or one VM's detail, the footer, the help.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Block, Cell, Clear, HighlightSpacing, Paragraph, Row, Sparkline, Table, TableState, Wrap,
};
use time::macros::format_description;

use super::app::{App, Availability, Column, Series, VmHistory, VmMemory, VmRow};
use super::format;

/// Shown for a figure its source cannot give at all (eBPF or libvirt off); the footer says why.
pub const SOURCE_OFF: &str = "n/a";
/// Shown for a figure this tick does not have (first sample, reset, VM not answering, no I/O).
pub const NO_FIGURE: &str = "–";

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
enum Figure {
    Value(String),
    /// This tick has none.
    Missing,
    /// Its source is off.
    SourceOff,
}

fn figure(value: Option<f64>, show: fn(f64) -> String) -> Figure {
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

fn cell_figure(app: &App, row: &VmRow, column: Column) -> Figure {
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

fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
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

/// Draws the whole view.
pub fn render(app: &App, frame: &mut Frame) {
    let [top, body, legend, status] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(0),
        Constraint::Length(2),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    render_host(app, frame, top);
    if app.detail_open() {
        render_detail(app, frame, body);
    } else {
        render_table(app, frame, body);
    }
    frame.render_widget(
        Paragraph::new(legend_text(app))
            .style(dim())
            .wrap(Wrap { trim: true }),
        legend,
    );
    frame.render_widget(status_line(app), status);
    if app.help_shown() {
        render_help(frame, frame.area());
    }
}

fn render_host(app: &App, frame: &mut Frame, area: Rect) {
    let label = Style::new().add_modifier(Modifier::BOLD);
    let screen = app.screen();
    let mut first = vec![Span::styled("setmov top", label)];
    // First, so that a narrow terminal still shows it.
    if app.paused() {
        first.push(Span::raw("  "));
        first.push(Span::styled(
            format!("PAUSED (+{} ticks)", app.ticks_while_paused()),
            Style::new()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ));
    }
    let mut second = Vec::new();
    let add = |spans: &mut Vec<Span<'static>>, text: String| {
        spans.push(Span::raw("  "));
        spans.push(Span::raw(text));
    };
    match &screen.tick {
        None => add(&mut first, "waiting for the first sample…".into()),
        Some(tick) => {
            let clock = tick
                .time
                .format(format_description!("[hour]:[minute]:[second]"))
                .unwrap_or_default();
            add(&mut first, format!("{} {}", tick.host.name, tick.host.ip));
            // The tick's number and time: what pausing freezes.
            add(&mut first, format!("tick {} {clock} UTC", tick.seq));
            let usage = tick.host_sample.as_ref().map(|s| &s.usage);
            add(
                &mut second,
                match usage.and_then(|u| u.cpu) {
                    Some(cpu) => format!("CPU {:.1}%", cpu.busy_pct),
                    None => format!("CPU {NO_FIGURE}"),
                },
            );
            add(
                &mut second,
                match usage.and_then(|u| u.mem) {
                    Some(mem) => {
                        let used = mem.total_bytes as f64 * mem.used_pct / 100.0;
                        format!(
                            "MEM {}/{} B ({:.1}% used)",
                            format::bytes(used),
                            format::bytes(mem.total_bytes as f64),
                            mem.used_pct
                        )
                    }
                    None => format!("MEM {NO_FIGURE}"),
                },
            );
            add(
                &mut second,
                match usage.and_then(|u| u.disk_total) {
                    Some(d) => format!(
                        "DISK R {} W {} B/s, {} IOPS",
                        format::bytes(d.read_bytes_per_sec),
                        format::bytes(d.write_bytes_per_sec),
                        format::decimal(d.read_iops + d.write_iops)
                    ),
                    None => format!("DISK {NO_FIGURE}"),
                },
            );
            add(
                &mut second,
                match usage.and_then(|u| u.net_total) {
                    Some(n) => format!(
                        "NET RX {} TX {} bit/s",
                        format::decimal(n.rx.bps),
                        format::decimal(n.tx.bps)
                    ),
                    None => format!("NET {NO_FIGURE}"),
                },
            );
        }
    }
    add(
        &mut first,
        format!("every {}", format::interval(app.interval())),
    );
    add(
        &mut first,
        match app.coverage().ebpf {
            Availability::On => "eBPF on".into(),
            Availability::Off(_) => "eBPF off".into(),
        },
    );
    let vm_count = match (
        &app.coverage().vms,
        screen.tick.as_ref().and_then(|t| t.vm_count),
    ) {
        (Availability::On, Some(n)) => format!("VMs {n} running"),
        (Availability::On, None) => format!("VMs {NO_FIGURE}"),
        (Availability::Off(_), _) => format!("VMs {SOURCE_OFF}"),
    };
    add(&mut first, vm_count);
    if !app.filter().is_empty() {
        add(&mut first, format!("filter \"{}\"", app.filter()));
    }
    // Both lines start with the separator `add` puts before each item.
    if let Some(first_item) = second.first_mut() {
        *first_item = Span::raw("");
    }
    frame.render_widget(
        Paragraph::new(vec![Line::from(first), Line::from(second)]),
        area,
    );
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

fn render_table(app: &App, frame: &mut Frame, area: Rect) {
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

/// What each mark in the table means, and why sources are off.
fn legend_text(app: &App) -> String {
    let coverage = app.coverage();
    let mut parts = Vec::new();
    if let Availability::Off(reason) = &coverage.vms {
        parts.push(format!("VMs {SOURCE_OFF}: {reason}"));
    }
    match (&coverage.ebpf, &coverage.latency, &coverage.kvm) {
        (Availability::Off(reason), _, _) => {
            parts.push(format!("IO P99, KVM/s {SOURCE_OFF}: {reason}"));
        }
        (Availability::On, latency, kvm) => {
            if let Availability::Off(reason) = latency {
                parts.push(format!("IO P99 {SOURCE_OFF}: {reason}"));
            }
            if let Availability::Off(reason) = kvm {
                parts.push(format!("KVM/s {SOURCE_OFF}: {reason}"));
            }
        }
    }
    parts.push(format!(
        "{NO_FIGURE}: no figure this tick (first sample, counter reset, VM not answering, no I/O)"
    ));
    let rows = &app.screen().rows;
    if rows
        .iter()
        .any(|r| matches!(r.memory, VmMemory::AllocationOnly(_)))
    {
        parts.push("alloc: allocation only, the guest reports no balloon stats".into());
    }
    if let Some(reason) = rows.iter().find_map(|r| r.missing.as_deref()) {
        parts.push(format!("missing: {reason}"));
    }
    parts.join(" · ")
}

fn status_line(app: &App) -> Paragraph<'static> {
    if let Some(input) = app.filter_input() {
        return Paragraph::new(Line::from(vec![
            Span::styled("filter: ", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!("{input}█")),
            Span::styled("  Enter applies · Esc clears", dim()),
        ]));
    }
    if let Some(warning) = app.warning() {
        // The newest message logged (warnings and errors: it names its level).
        return Paragraph::new(warning.to_owned()).style(Style::new().fg(Color::Yellow));
    }
    Paragraph::new(
        "q quit  ? help  s/S sort  r reverse  / filter  p pause  +/- interval  ↑/↓ select  Enter detail",
    )
}

/// A plottable form of a series: sparklines draw whole numbers, newest at the right.
fn bars(series: &Series, scale: f64) -> Vec<Option<u64>> {
    series
        .newest_first()
        .map(|v| v.map(|v| (v * scale).max(0.0).round() as u64))
        .collect()
}

/// One labelled sparkline; `off` says why it cannot have values.
fn render_sparkline(
    frame: &mut Frame,
    area: Rect,
    title: &str,
    series: &Series,
    show: fn(f64) -> String,
    percent: bool,
    off: Option<&str>,
) {
    let visible = usize::from(area.width.saturating_sub(2));
    let title = match off {
        Some(reason) => format!(" {title}: {SOURCE_OFF} ({reason}) "),
        None => {
            let now = series.latest().map_or(NO_FIGURE.to_owned(), show);
            let max = series
                .max_of_newest(visible)
                .map_or(NO_FIGURE.to_owned(), show);
            format!(" {title}: now {now}, max {max} ")
        }
    };
    // Percentages plot against 100 % (tenths for resolution), other figures against their
    // largest visible value.
    let (scale, max) = if percent {
        (10.0, 1000)
    } else {
        let max = series.max_of_newest(visible).unwrap_or(0.0).round() as u64;
        (1.0, max.max(1))
    };
    let sparkline = Sparkline::default()
        .block(Block::bordered().title(title))
        .data(if off.is_some() {
            Vec::new()
        } else {
            bars(series, scale)
        })
        .max(max)
        .direction(ratatui::widgets::RenderDirection::RightToLeft)
        .style(Style::new().fg(Color::Cyan));
    frame.render_widget(sparkline, area);
}

fn detail_lines(app: &App, row: &VmRow) -> Vec<Line<'static>> {
    let text = |figure: Figure| match figure {
        Figure::Value(text) => text,
        Figure::Missing => NO_FIGURE.to_owned(),
        Figure::SourceOff => SOURCE_OFF.to_owned(),
    };
    let cell = |column| text(cell_figure(app, row, column));
    let pct = |value: Option<f64>| text(figure(value, |v| format!("{v:.1}%")));
    let vcpus = match row.vcpus {
        Some(1) => "1 vCPU".to_owned(),
        Some(n) => format!("{n} vCPUs"),
        None => format!("{NO_FIGURE} vCPUs"),
    };
    let cpu_ready = if app.coverage().ebpf.is_on() {
        pct(row.cpu_ready_pct)
    } else {
        SOURCE_OFF.to_owned()
    };
    let memory = match row.memory {
        VmMemory::Used { used, allocated } => format!(
            "{} used of {}",
            format::bytes(used as f64),
            format::bytes(allocated as f64)
        ),
        VmMemory::AllocationOnly(allocated) => format!(
            "{} allocated (the guest reports no balloon stats)",
            format::bytes(allocated as f64)
        ),
        VmMemory::Unknown => NO_FIGURE.to_owned(),
    };
    let each_vcpu = if row.each_vcpu_pct.is_empty() {
        NO_FIGURE.to_owned()
    } else {
        let shares: Vec<String> = row
            .each_vcpu_pct
            .iter()
            .enumerate()
            .map(|(n, &share)| format!("#{n} {}", pct(share)))
            .collect();
        shares.join("  ")
    };
    let rss = row
        .rss_bytes
        .map_or(NO_FIGURE.to_owned(), |b| format::bytes(b as f64));
    let mut lines = vec![
        Line::from(format!(
            "CPU {} of the host, {} per vCPU ({vcpus}) · steal {} · CPU ready {cpu_ready}",
            pct(row.cpu_pct),
            pct(row.vcpu_pct),
            pct(row.steal_pct),
        )),
        Line::from(format!("each vCPU: {each_vcpu}")),
        Line::from(format!("memory {memory} · qemu RSS {rss}")),
        Line::from(format!(
            "disk R {} W {} B/s, {} IOPS, IO p99 {} · net RX {} TX {} bit/s · KVM {} events/s",
            cell(Column::DiskRead),
            cell(Column::DiskWrite),
            cell(Column::Iops),
            cell(Column::Latency),
            cell(Column::NetRx),
            cell(Column::NetTx),
            cell(Column::Kvm),
        )),
    ];
    if let Some(reason) = &row.missing {
        lines.push(Line::styled(
            format!("missing this tick: {reason}"),
            Style::new().fg(Color::Yellow),
        ));
    }
    lines
}

fn render_detail(app: &App, frame: &mut Frame, area: Rect) {
    let Some(row) = app.selected_row() else {
        frame.render_widget(
            Paragraph::new("the VM is no longer listed (Esc goes back)").style(dim()),
            area,
        );
        return;
    };
    let block = Block::bordered().title(format!(" {} · {} · {} ", row.name, row.uuid, row.status));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let lines = detail_lines(app, row);
    let [facts, cpu, disk, net, latency] = Layout::vertical([
        Constraint::Length(lines.len() as u16),
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Fill(1),
    ])
    .areas(inner);
    frame.render_widget(Paragraph::new(lines), facts);
    let empty = VmHistory::default();
    let history = app.screen().history.get(&row.uuid).unwrap_or(&empty);
    render_sparkline(
        frame,
        cpu,
        "CPU % per vCPU",
        &history.cpu_vcpu_pct,
        format::percent,
        true,
        None,
    );
    render_sparkline(
        frame,
        disk,
        "disk R+W B/s",
        &history.disk_bytes_per_sec,
        format::bytes,
        false,
        None,
    );
    render_sparkline(
        frame,
        net,
        "net RX+TX bit/s",
        &history.net_bits_per_sec,
        format::decimal,
        false,
        None,
    );
    let latency_off = match &app.coverage().latency {
        Availability::On => None,
        Availability::Off(reason) => Some(reason.as_str()),
    };
    render_sparkline(
        frame,
        latency,
        "IO p99 latency",
        &history.latency_p99_us,
        format::latency_us,
        false,
        latency_off,
    );
}

const HELP: [(&str, &str); 14] = [
    ("q, Ctrl-C", "quit"),
    ("?", "this help (any key closes it)"),
    ("s / S", "sort by the next / previous column"),
    ("r", "reverse the sort"),
    ("/", "filter by name: type, Enter applies, Esc clears"),
    ("Esc", "close the detail, else clear the filter"),
    ("p, space", "pause the display (sampling goes on)"),
    ("+ / -", "sample less / more often"),
    ("↑ ↓, k j", "select a VM"),
    ("PgUp PgDn", "select 10 rows up / down"),
    ("Home End, g G", "select the first / last VM"),
    ("Enter, d", "the selected VM's detail with history"),
    (SOURCE_OFF, "its source is off (the footer says why)"),
    (NO_FIGURE, "no figure this tick"),
];

fn render_help(frame: &mut Frame, area: Rect) {
    let width = 72.min(area.width);
    let height = (HELP.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(key, what)| {
            Line::from(vec![
                Span::styled(
                    format!("{key:>14}  "),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(Text::from(lines)).block(Block::bordered().title(" setmov top: keys ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::app::{Coverage, handle_key};
    use crate::top::fixtures;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use std::time::Duration;

    /// The screen as text, one string per line, trailing blanks cut.
    fn draw(app: &App, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
        terminal.draw(|frame| render(app, frame)).expect("draw");
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                let line: String = (0..width).map(|x| buffer[(x, y)].symbol()).collect();
                line.trim_end().to_owned()
            })
            .collect()
    }

    fn app(coverage: Coverage) -> App {
        let mut app = App::new(coverage, Duration::from_secs(1));
        app.ingest(fixtures::tick(1));
        app
    }

    fn press(app: &mut App, keys: &[KeyCode]) {
        for &code in keys {
            handle_key(app, KeyEvent::new(code, KeyModifiers::NONE));
        }
    }

    /// Compares the screen with the expected lines; on a difference prints the screen as the
    /// Rust lines to paste after checking it.
    fn assert_screen(actual: Vec<String>, expected: &[&str]) {
        if actual != expected {
            let pasteable: String = actual
                .iter()
                .map(|l| format!("            {l:?},\n"))
                .collect();
            panic!("the screen differs; it is:\n{pasteable}");
        }
    }

    /// A VM table's selected row is drawn reversed.
    fn row_is_highlighted(app: &App, width: u16, height: u16, y: u16) -> bool {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
        terminal.draw(|frame| render(app, frame)).expect("draw");
        let buffer = terminal.backend().buffer();
        (0..width).all(|x| buffer[(x, y)].modifier.contains(Modifier::REVERSED))
    }

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
    fn before_the_first_tick_it_says_it_waits() {
        let app = App::new(fixtures::coverage_all_on(), Duration::from_secs(1));
        assert_screen(
            draw(&app, 100, 6),
            &[
                "setmov top  waiting for the first sample…  every 1s  eBPF on  VMs –",
                "",
                "  NAME     STATE     CPU%▼  VCPU%  STEAL         MEM  RD B/s  WR B/s   IOPS  IO P99  RX b/s  TX b/s",
                "–: no figure this tick (first sample, counter reset, VM not answering, no I/O)",
                "",
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
    fn paused_it_keeps_the_tick_it_showed_and_counts_the_new_ones() {
        let mut app = app(fixtures::coverage_all_on());
        press(&mut app, &[KeyCode::Char('p')]);
        app.ingest(fixtures::tick(2));
        app.ingest(fixtures::tick(3));
        assert_screen(
            draw(&app, 120, 10),
            &[
                "setmov top  PAUSED (+2 ticks)  hv1 192.0.2.2  tick 1 00:00:01 UTC  every 1s  eBPF on  VMs 2 running",
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
    }

    #[test]
    fn the_detail_pane_plots_the_selected_vms_history() {
        let mut app = App::new(fixtures::coverage_all_on(), Duration::from_secs(1));
        for seq in 1..=8 {
            app.ingest(fixtures::tick(seq));
        }
        press(&mut app, &[KeyCode::Enter]);
        assert_screen(
            draw(&app, 100, 26),
            &[
                "setmov top  hv1 192.0.2.2  tick 8 00:00:08 UTC  every 1s  eBPF on  VMs 2 running",
                "CPU 37.5%  MEM 1.0G/4.0G B (25.0% used)  DISK R 1.5M W 256K B/s, 120 IOPS  NET RX 2.4M TX 300k bit/s",
                "┌ desk-busy · 00000000-0000-0000-0000-00000000000a · running ──────────────────────────────────────┐",
                "│CPU 60.0% of the host, 60.0% per vCPU (2 vCPUs) · steal 1.5% · CPU ready –                        │",
                "│each vCPU: #0 90.0%  #1 30.0%                                                                     │",
                "│memory 700M used of 1.0G · qemu RSS 512M                                                          │",
                "│disk R 1.5M W 2.0M B/s, 120 IOPS, IO p99 6.4ms · net RX 19.2M TX 300k bit/s · KVM 1.5k events/s   │",
                "│┌ CPU % per vCPU: now 60.0, max 100.0 ───────────────────────────────────────────────────────────┐│",
                "││                                                                                           ▃▆█▄▁││",
                "││                                                                                        ▁▄██████││",
                "│└────────────────────────────────────────────────────────────────────────────────────────────────┘│",
                "│┌ disk R+W B/s: now 3.5M, max 3.5M ──────────────────────────────────────────────────────────────┐│",
                "││                                                                                         ▁▂▃▄▅▆█││",
                "││                                                                                        ████████││",
                "│└────────────────────────────────────────────────────────────────────────────────────────────────┘│",
                "│┌ net RX+TX bit/s: now 19.5M, max 19.5M ─────────────────────────────────────────────────────────┐│",
                "││                                                                                        ▁▂▃▄▅▆▇█││",
                "│└────────────────────────────────────────────────────────────────────────────────────────────────┘│",
                "│┌ IO p99 latency: now 6.4ms, max 6.4ms ──────────────────────────────────────────────────────────┐│",
                "││                                                                                            ▂▄▆█││",
                "││                                                                                        ▅▅▆█████││",
                "│└────────────────────────────────────────────────────────────────────────────────────────────────┘│",
                "└──────────────────────────────────────────────────────────────────────────────────────────────────┘",
                "–: no figure this tick (first sample, counter reset, VM not answering, no I/O) · alloc: allocation",
                "only, the guest reports no balloon stats · missing: libvirt did not answer within the tick",
                "q quit  ? help  s/S sort  r reverse  / filter  p pause  +/- interval  ↑/↓ select  Enter detail",
            ],
        );
    }

    #[test]
    fn the_detail_of_a_vm_without_balloon_or_ebpf_figures_says_so() {
        let mut app = App::new(fixtures::coverage_without_ebpf(), Duration::from_secs(1));
        for seq in 1..=3 {
            app.ingest(fixtures::tick(seq));
        }
        press(&mut app, &[KeyCode::Down, KeyCode::Char('d')]);
        assert_screen(
            draw(&app, 100, 26),
            &[
                "setmov top  hv1 192.0.2.2  tick 3 00:00:03 UTC  every 1s  eBPF off  VMs 2 running",
                "CPU 37.5%  MEM 1.0G/4.0G B (25.0% used)  DISK R 1.5M W 256K B/s, 120 IOPS  NET RX 2.4M TX 300k bit/s",
                "┌ desk-idle · 00000000-0000-0000-0000-00000000000b · running ──────────────────────────────────────┐",
                "│CPU 0.4% of the host, 0.8% per vCPU (1 vCPU) · steal 0.0% · CPU ready n/a                         │",
                "│each vCPU: #0 0.8%                                                                                │",
                "│memory 512M allocated (the guest reports no balloon stats) · qemu RSS 256M                        │",
                "│disk R 0 W 4.0K B/s, 1 IOPS, IO p99 n/a · net RX 1.6k TX 900 bit/s · KVM n/a events/s             │",
                "│┌ CPU % per vCPU: now 0.8, max 0.8 ──────────────────────────────────────────────────────────────┐│",
                "││                                                                                                ││",
                "││                                                                                                ││",
                "│└────────────────────────────────────────────────────────────────────────────────────────────────┘│",
                "│┌ disk R+W B/s: now 4.0K, max 4.0K ──────────────────────────────────────────────────────────────┐│",
                "││                                                                                             ███││",
                "││                                                                                             ███││",
                "│└────────────────────────────────────────────────────────────────────────────────────────────────┘│",
                "│┌ net RX+TX bit/s: now 2.5k, max 2.5k ───────────────────────────────────────────────────────────┐│",
                "││                                                                                             ███││",
                "│└────────────────────────────────────────────────────────────────────────────────────────────────┘│",
                "│┌ IO p99 latency: n/a (eBPF is off: --no-ebpf given) ────────────────────────────────────────────┐│",
                "││                                                                                                ││",
                "││                                                                                                ││",
                "│└────────────────────────────────────────────────────────────────────────────────────────────────┘│",
                "└──────────────────────────────────────────────────────────────────────────────────────────────────┘",
                "IO P99, KVM/s n/a: eBPF is off: --no-ebpf given · –: no figure this tick (first sample, counter",
                "reset, VM not answering, no I/O) · alloc: allocation only, the guest reports no balloon stats ·",
                "q quit  ? help  s/S sort  r reverse  / filter  p pause  +/- interval  ↑/↓ select  Enter detail",
            ],
        );
    }

    #[test]
    fn the_help_overlay_lists_the_keys() {
        let mut app = app(fixtures::coverage_all_on());
        press(&mut app, &[KeyCode::Char('?')]);
        assert_screen(
            draw(&app, 100, 22),
            &[
                "setmov top  hv1 192.0.2.2  tick 1 00:00:01 UTC  every 1s  eBPF on  VMs 2 running",
                "CPU 37.5%  MEM 1.0G/4.0G B (25.0% used)  DISK R 1.5M W 256K B/s, 120 IOPS  NET RX 2.4M TX 300k bit/s",
                "  NAME      STATE     CPU%▼  VCPU%  STEAL         MEM  RD B/s  WR B/s   IOPS  IO P99  RX b/s  TX b/s",
                "> desk-busy ru┌ setmov top: keys ────────────────────────────────────────────────────┐  2.4M    300k",
                "  desk-idle ru│     q, Ctrl-C  quit                                                  │  1.6k     900",
                "  desk-away mi│             ?  this help (any key closes it)                         │     –       –",
                "              │         s / S  sort by the next / previous column                    │",
                "              │             r  reverse the sort                                      │",
                "              │             /  filter by name: type, Enter applies, Esc clears       │",
                "              │           Esc  close the detail, else clear the filter               │",
                "              │      p, space  pause the display (sampling goes on)                  │",
                "              │         + / -  sample less / more often                              │",
                "              │      ↑ ↓, k j  select a VM                                           │",
                "              │     PgUp PgDn  select 10 rows up / down                              │",
                "              │ Home End, g G  select the first / last VM                            │",
                "              │      Enter, d  the selected VM's detail with history                 │",
                "              │           n/a  its source is off (the footer says why)               │",
                "              │             –  no figure this tick                                   │",
                "              └──────────────────────────────────────────────────────────────────────┘",
                "–: no figure this tick (first sample, counter reset, VM not answering, no I/O) · alloc: allocation",
                "only, the guest reports no balloon stats · missing: libvirt did not answer within the tick",
                "q quit  ? help  s/S sort  r reverse  / filter  p pause  +/- interval  ↑/↓ select  Enter detail",
            ],
        );
    }

    #[test]
    fn tiny_terminals_and_odd_figures_draw_without_panicking() {
        let mut tick = (*fixtures::tick(1)).clone();
        for vm in &mut tick.vms {
            if let Some(usage) = &mut vm.usage {
                usage.cpu_host_pct = Some(f64::NAN);
                usage.cpu_vcpu_pct = Some(f64::INFINITY);
                usage.steal_pct = Some(-1.0);
            }
            // No KVM event: their rate is a float sum of nothing, -0.0.
            if let Some(ebpf) = &mut vm.ebpf {
                ebpf.kvm_events.clear();
            }
        }
        let mut app = App::new(fixtures::coverage_all_on(), Duration::from_secs(1));
        app.ingest(std::sync::Arc::new(tick));
        for keys in [
            &[][..],
            &[KeyCode::Char('?')],
            &[KeyCode::Enter],
            &[KeyCode::Char('/'), KeyCode::Char('d')],
        ] {
            press(&mut app, keys);
            for (width, height) in [(1, 1), (3, 2), (12, 5), (30, 12)] {
                draw(&app, width, height);
            }
        }
        // Not-a-number and infinite figures read as no figure; -0.0 reads 0.
        let row = draw(&app, 120, 10).remove(3);
        assert!(
            row.starts_with("> desk-busy running       –      –") && row.ends_with(" 0"),
            "{row}"
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
