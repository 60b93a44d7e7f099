//! One VM's detail: its figures in words, and sparklines of its history (CPU, disk, network,
//! IO latency).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Sparkline};

use super::table::{Figure, cell_figure, figure};
use super::{NO_FIGURE, SOURCE_OFF, dim};
use crate::top::app::{App, Availability, Column, Series, VmHistory, VmMemory, VmRow};
use crate::top::format;

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

pub(super) fn render_detail(app: &App, frame: &mut Frame, area: Rect) {
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

#[cfg(test)]
mod tests {
    use crossterm::event::KeyCode;
    use std::time::Duration;

    use crate::top::app::App;
    use crate::top::fixtures;
    use crate::top::view::screen::{assert_screen, draw, press};

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
}
