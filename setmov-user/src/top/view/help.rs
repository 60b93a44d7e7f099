//! The help overlay: the keys and what they do, and what the marks for a missing figure mean.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::{NO_FIGURE, SOURCE_OFF};

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

pub(super) fn render_help(frame: &mut Frame, area: Rect) {
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
    use crossterm::event::KeyCode;

    use crate::top::fixtures;
    use crate::top::view::screen::{app, assert_screen, draw, press};

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
}
