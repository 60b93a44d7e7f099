//! Drawing the state: host lines, the VM table or one VM's detail, the footer, the help.
//!
//! Here the whole screen, the host lines and the footer; the VM table and the cells the detail
//! shares with it in `table.rs`, one VM's detail with its history in `detail.rs`, the help
//! overlay in `help.rs`.

mod detail;
mod help;
#[cfg(test)]
mod screen;
mod table;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use time::macros::format_description;

use super::app::{App, Availability, VmMemory};
use super::format;
use crate::escape::escape_control;
use detail::render_detail;
use help::render_help;
use table::render_table;

/// Shown for a figure its source cannot give at all (eBPF or libvirt off); the footer says why.
pub const SOURCE_OFF: &str = "n/a";
/// Shown for a figure this tick does not have (first sample, reset, VM not answering, no I/O).
pub const NO_FIGURE: &str = "–";

fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
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
            let host = escape_control(&tick.host.name);
            add(&mut first, format!("{host} {}", tick.host.ip));
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
                        format!(
                            "MEM {}/{} B ({:.1}% used)",
                            format::bytes(mem.used_bytes as f64),
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
        // It may quote a VM's name, or libvirt's words about it.
        return Paragraph::new(escape_control(warning).into_owned())
            .style(Style::new().fg(Color::Yellow));
    }
    Paragraph::new(
        "q quit  ? help  s/S sort  r reverse  / filter  p pause  +/- interval  ↑/↓ select  Enter detail",
    )
}

#[cfg(test)]
mod tests {
    use crossterm::event::KeyCode;
    use std::time::Duration;

    use crate::top::app::App;
    use crate::top::fixtures;
    use crate::top::view::screen::{app, assert_screen, draw, press};

    #[test]
    fn control_characters_in_the_host_and_vm_names_are_drawn_escaped() {
        let mut app = App::new(fixtures::coverage_all_on(), Duration::from_secs(1));
        let mut tick = (*fixtures::tick(1)).clone();
        tick.host.name = "hv\x1b[2J".into();
        if let Some(vm) = tick.vms.first_mut() {
            vm.name = "ev\n\x1b[2Jil".into();
        }
        app.ingest(std::sync::Arc::new(tick));
        let screen = draw(&app, 120, 12).join("\n");
        assert!(!screen.contains('\x1b'), "{screen}");
        assert!(
            screen.contains("hv\\x1b[2J") && screen.contains("ev\\n\\x1b[2Jil"),
            "{screen}"
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
}
