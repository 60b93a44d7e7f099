//! Time-series line charts as standalone SVG, and an HTML page that gathers them
//! (`setmov plot`). No plotting library: the charts are plain polylines with a time axis, a
//! value axis in the figure's unit, a grid and a legend.

use std::fmt::Write;

use time::OffsetDateTime;

pub use super::axis_labels::Unit;

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    /// (seconds since the epoch, value), in time order; gaps (no value) break the line.
    pub points: Vec<(i64, Option<f64>)>,
}

/// What the horizontal axis holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// Seconds since the epoch, labelled as UTC clock times or dates.
    Time,
    /// A guest's memory size in MiB.
    MemoryMib,
}

/// One chart: a title, a unit and its lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub unit: Unit,
    pub x_axis: XAxis,
    pub series: Vec<Series>,
}

const WIDTH: f64 = 880.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 70.0;
/// Colour-blind-safe line colours (Okabe–Ito).
const COLOURS: [&str; 6] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
];

/// The colour of the `i`th line: the palette, again from its start past its end.
fn colour(i: usize) -> &'static str {
    COLOURS.get(i % COLOURS.len()).copied().unwrap_or("black")
}

/// Values of a larger magnitude are left out of a chart, as gaps: no figure SETMOV measures
/// reaches it (10^15 bytes per second is a petabyte per second), so such a value is a broken
/// counter, and it would squash every real value onto the axis.
const MAX_PLOTTED: f64 = 1e15;

/// A value that can be drawn: finite and within [`MAX_PLOTTED`].
fn plotted(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite() && v.abs() <= MAX_PLOTTED)
}

/// "Nice" axis steps: 1, 2 or 5 × 10^n (or the binary-looking 1, 2, 4, 8 steps would read
/// worse for bytes: decimal steps are kept, the labels scale).
fn nice_step(span: f64, ticks: f64) -> f64 {
    let raw = (span / ticks).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Time steps that read as clock times: from 10 s to 1 week.
fn time_step(span: i64) -> i64 {
    const STEPS: [i64; 14] = [
        10,
        30,
        60,
        300,
        600,
        1800,
        3600,
        3 * 3600,
        6 * 3600,
        12 * 3600,
        86_400,
        2 * 86_400,
        7 * 86_400,
        14 * 86_400,
    ];
    STEPS
        .iter()
        .copied()
        .find(|step| span / step <= 8)
        // Beyond 16 weeks: 30-day steps, or longer ones so that there are at most about 8.
        .unwrap_or((30 * 86_400i64).max(span / 8))
}

fn time_label(t: i64, step: i64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp(t) else {
        return t.to_string();
    };
    if step >= 86_400 {
        format!("{:02}-{:02}", u8::from(t.month()), t.day())
    } else if step >= 3600 {
        format!(
            "{:02}-{:02} {:02}:00",
            u8::from(t.month()),
            t.day(),
            t.hour()
        )
    } else {
        format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
    }
}

/// `text` as XML character data: control characters (which XML 1.0 forbids) written out, then
/// the markup characters as entities.
fn escape(text: &str) -> String {
    crate::escape::escape_control(text)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The time step past which two neighbouring points of a series are not joined: twice the
/// series' usual (median) interval, so that a monitor that stopped leaves a gap instead of a
/// straight line over the hours it measured nothing. `None` with fewer than two points.
fn gap_after(points: &[(i64, Option<f64>)]) -> Option<i64> {
    let mut steps: Vec<i64> = points
        .windows(2)
        .filter_map(|pair| match pair {
            [(a, _), (b, _)] => Some(b.saturating_sub(*a)),
            _ => None,
        })
        .filter(|step| *step > 0)
        .collect();
    steps.sort_unstable();
    let usual = steps.get(steps.len() / 2)?;
    Some(usual.saturating_mul(2))
}

/// The chart as a standalone SVG document.
pub fn svg(chart: &Chart) -> String {
    let values = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| plotted(p.1)));
    let max = values.fold(0.0f64, f64::max);
    let times = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0));
    let (t0, t1) = times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
    let (t0, t1) = if t0 > t1 {
        (0, 1)
    } else {
        (t0, t1.max(t0.saturating_add(1)))
    };
    let y_step = nice_step(if max > 0.0 { max } else { 1.0 }, 5.0);
    let y_max = (max / y_step).ceil().max(1.0) * y_step;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    // In f64: the span of two arbitrary stored times may not fit an i64.
    let x = |t: i64| LEFT + (t as f64 - t0 as f64) / (t1 as f64 - t0 as f64) * plot_w;
    let y = |v: f64| TOP + plot_h - v / y_max * plot_h;

    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text class=\"title\" x=\"{LEFT}\" y=\"24\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        escape(&chart.title)
    );
    // Value axis: grid lines and labels.
    let _ = writeln!(out, "<g class=\"y-axis\">");
    // Counted, not accumulated: `v += y_step` can stop growing, and never reach the top.
    let lines = (y_max / y_step).round().clamp(1.0, 20.0) as u32;
    for v in (0..=lines).map(|i| f64::from(i) * y_step) {
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{right:.1}\" y1=\"{at:.1}\" y2=\"{at:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{label_x:.1}\" y=\"{label_y:.1}\" text-anchor=\"end\">{label}</text>",
            right = WIDTH - RIGHT,
            at = y(v),
            label_x = LEFT - 8.0,
            label_y = y(v) + 4.0,
            label = escape(&chart.unit.format(v, y_step))
        );
    }
    let _ = writeln!(out, "</g>");
    // Horizontal axis.
    let span = t1.saturating_sub(t0);
    let step = match chart.x_axis {
        XAxis::Time => time_step(span),
        XAxis::MemoryMib => (nice_step(span as f64, 6.0) as i64).max(1),
    };
    let label = |t: i64| match chart.x_axis {
        XAxis::Time => time_label(t, step),
        XAxis::MemoryMib => format!("{t} MiB"),
    };
    let _ = writeln!(out, "<g class=\"x-axis\">");
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" x2=\"{right:.1}\" y1=\"{base:.1}\" y2=\"{base:.1}\" stroke=\"#333\"/>",
        right = WIDTH - RIGHT,
        base = TOP + plot_h
    );
    let mut t = t0
        .saturating_add(step - 1)
        .div_euclid(step)
        .saturating_mul(step);
    while t <= t1 {
        let _ = writeln!(
            out,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"#333\"/>\
             <text x=\"{0:.1}\" y=\"{3:.1}\" text-anchor=\"middle\">{4}</text>",
            x(t),
            TOP + plot_h,
            TOP + plot_h + 5.0,
            TOP + plot_h + 20.0,
            label(t)
        );
        let Some(next) = t.checked_add(step) else {
            break;
        };
        t = next;
    }
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
        LEFT + plot_w / 2.0,
        TOP + plot_h + 38.0,
        match chart.x_axis {
            XAxis::Time => "time (UTC)",
            XAxis::MemoryMib => "guest memory",
        }
    );
    let _ = writeln!(out, "</g>");
    // Lines: one polyline per unbroken run of points.
    for (i, series) in chart.series.iter().enumerate() {
        let colour = colour(i);
        let _ = writeln!(
            out,
            "<g class=\"series\" data-label=\"{}\" stroke=\"{colour}\" fill=\"none\" stroke-width=\"1.6\">",
            escape(&series.label)
        );
        let mut run: Vec<String> = Vec::new();
        let flush = |run: &mut Vec<String>, out: &mut String| {
            if !run.is_empty() {
                let _ = writeln!(out, "<polyline points=\"{}\"/>", run.join(" "));
                run.clear();
            }
        };
        let gap = match chart.x_axis {
            XAxis::Time => gap_after(&series.points),
            XAxis::MemoryMib => None,
        };
        let mut last_t: Option<i64> = None;
        for &(t, value) in &series.points {
            let broken =
                matches!((last_t, gap), (Some(last), Some(gap)) if t.saturating_sub(last) > gap);
            if broken {
                flush(&mut run, &mut out);
            }
            last_t = Some(t);
            match plotted(value) {
                Some(v) => run.push(format!("{:.1},{:.1}", x(t), y(v))),
                None => flush(&mut run, &mut out),
            }
        }
        flush(&mut run, &mut out);
        // Few points: each one marked, so that a reader sees where the measurements are.
        if series.points.len() <= 50 {
            for &(t, value) in &series.points {
                if let Some(v) = plotted(value) {
                    let _ = writeln!(
                        out,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{colour}\"/>",
                        x(t),
                        y(v)
                    );
                }
            }
        }
        let _ = writeln!(out, "</g>");
    }
    // Legend, under the time axis.
    let _ = writeln!(out, "<g class=\"legend\">");
    let mut lx = LEFT;
    for (i, series) in chart.series.iter().enumerate() {
        let colour = colour(i);
        let ly = HEIGHT - 12.0;
        let _ = writeln!(
            out,
            "<line x1=\"{lx:.1}\" x2=\"{:.1}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" \
             stroke-width=\"3\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            escape(&series.label)
        );
        lx += 40.0 + 7.0 * series.label.chars().count() as f64;
    }
    let _ = writeln!(out, "</g>\n</svg>");
    out
}

/// One HTML page with every chart inline, under `title`.
pub fn html(title: &str, charts: &[Chart]) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{0}</title>\
         <style>body{{font-family:sans-serif;margin:2em;color:#222}}\
         figure{{margin:0 0 2em 0}}</style></head>\n<body>\n<h1>{0}</h1>\n",
        escape(title)
    );
    for chart in charts {
        let _ = writeln!(out, "<figure>\n{}</figure>", svg(chart));
    }
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            title: "desk-1 <CPU>".into(),
            unit: Unit::Percent,
            x_axis: XAxis::Time,
            series: vec![
                Series {
                    label: "CPU per vCPU".into(),
                    points: (0..10).map(|i| (i * 60, Some(10.0 * i as f64))).collect(),
                },
                Series {
                    label: "steal".into(),
                    points: vec![
                        (0, Some(1.0)),
                        (60, None),
                        (120, Some(2.0)),
                        (180, Some(3.0)),
                    ],
                },
            ],
        }
    }

    #[test]
    fn the_svg_has_axes_a_legend_and_every_point() {
        let text = svg(&chart());
        let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
        let class = |name: &str| {
            doc.descendants()
                .find(|n| n.attribute("class") == Some(name))
                .unwrap_or_else(|| panic!("no {name}"))
        };
        let texts = |node: roxmltree::Node<'_, '_>| -> Vec<String> {
            node.descendants()
                .filter(|n| n.has_tag_name("text"))
                .filter_map(|n| n.text().map(str::to_owned))
                .collect()
        };
        assert_eq!(class("title").text(), Some("desk-1 <CPU>"));
        let y = texts(class("y-axis"));
        assert!(
            y.first().is_some_and(|l| l == "0 %") && y.contains(&"100 %".to_owned()),
            "{y:?}"
        );
        let x = texts(class("x-axis"));
        assert!(
            x.contains(&"00:00:00".to_owned()) && x.contains(&"time (UTC)".to_owned()),
            "{x:?}"
        );
        assert_eq!(texts(class("legend")), ["CPU per vCPU", "steal"]);
        let series: Vec<_> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("series"))
            .collect();
        assert_eq!(series.len(), 2);
        let points = |g: &roxmltree::Node<'_, '_>| -> Vec<usize> {
            g.children()
                .filter(|n| n.has_tag_name("polyline"))
                .map(|p| p.attribute("points").unwrap_or("").split(' ').count())
                .collect()
        };
        assert_eq!(points(&series[0]), [10]);
        // A gap breaks the line: one lone point, then two.
        assert_eq!(points(&series[1]), [1, 2]);
    }

    #[test]
    fn axes_use_round_steps_and_readable_units() {
        assert_eq!(nice_step(87.0, 5.0), 20.0);
        assert_eq!(nice_step(3.2e6, 5.0), 1e6);
        assert_eq!(time_step(3600), 600);
        assert_eq!(time_step(7 * 86_400), 86_400);
        assert_eq!(
            Unit::BytesPerSecond.format(1_572_864.0, 524_288.0),
            "1.5 MiB/s"
        );
        assert_eq!(Unit::BitsPerSecond.format(12e6, 2e6), "12 Mbit/s");
        assert_eq!(Unit::Microseconds.format(2500.0, 500.0), "2.5 ms");
        assert_eq!(Unit::Percent.format(0.5, 0.5), "0.5 %");
        assert_eq!(Unit::Percent.format(1.0, 0.5), "1.0 %");
    }

    #[test]
    fn huge_and_non_finite_values_are_gaps_and_the_chart_still_finishes() {
        let odd = [
            f64::MAX,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -f64::MAX,
            1e300,
        ];
        for value in odd {
            let mut chart = chart();
            chart.series[1].points[0].1 = Some(value);
            let text = svg(&chart);
            let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
            let y_labels = doc
                .descendants()
                .find(|n| n.attribute("class") == Some("y-axis"))
                .map_or(0, |axis| {
                    axis.children().filter(|n| n.has_tag_name("text")).count()
                });
            // The axis is the one of the other values (0 to 100 %), the odd one a gap.
            assert!((2..=12).contains(&y_labels), "{value}: {y_labels} labels");
            assert!(!text.contains("inf") && !text.contains("NaN"), "{value}");
        }
        // Every value odd: an empty chart, with its axis.
        let mut chart = chart();
        for series in &mut chart.series {
            for point in &mut series.points {
                point.1 = Some(f64::MAX);
            }
        }
        assert!(svg(&chart).contains("y-axis"));
    }

    #[test]
    fn the_largest_plotted_value_and_extreme_times_finish() {
        let mut chart = chart();
        chart.series[0].points = vec![(i64::MIN, Some(MAX_PLOTTED)), (i64::MAX, Some(1.0))];
        let text = svg(&chart);
        roxmltree::Document::parse(&text).expect("well-formed SVG");
        assert!(text.matches("<text").count() < 100);
    }

    #[test]
    fn control_characters_in_names_are_escaped_in_the_svg() {
        let mut chart = chart();
        chart.title = "desk\n\x1b[2J\t<1>".into();
        let text = svg(&chart);
        let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
        let title = doc
            .descendants()
            .find(|n| n.attribute("class") == Some("title"))
            .and_then(|n| n.text());
        assert_eq!(title, Some("desk\\n\\x1b[2J\\t<1>"));
    }

    #[test]
    fn the_page_gathers_the_charts() {
        let page = html("desk-1", &[chart(), chart()]);
        assert_eq!(page.matches("<svg ").count(), 2);
        assert!(page.starts_with("<!DOCTYPE html>"));
    }

    #[test]
    fn an_idle_percent_axis_reads_its_half_percent_ticks() {
        let mut chart = chart();
        chart.series = vec![Series {
            label: "CPU".into(),
            points: vec![(0, Some(0.3)), (60, Some(2.1))],
        }];
        let text = svg(&chart);
        assert!(
            text.contains(">0.5 %<") && text.contains(">1.5 %<"),
            "{text}"
        );
    }

    fn polylines(chart: &Chart) -> Vec<usize> {
        let text = svg(chart);
        let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .map(|p| p.attribute("points").unwrap_or("").split(' ').count())
            .collect()
    }

    #[test]
    fn a_time_gap_in_a_series_breaks_its_line_in_two() {
        let mut chart = chart();
        // Every 10 s, then the monitor stopped for an hour, then every 10 s again.
        let times = [0, 10, 20, 30, 3630, 3640, 3650];
        chart.series = vec![Series {
            label: "CPU".into(),
            points: times.iter().map(|&t| (t, Some(5.0))).collect(),
        }];
        assert_eq!(polylines(&chart), [4, 3]);
        // Jitter below twice the usual interval keeps the line whole.
        chart.series[0].points = [0, 10, 29, 40].iter().map(|&t| (t, Some(5.0))).collect();
        assert_eq!(polylines(&chart), [4]);
        // A NaN value is a gap too.
        chart.series[0].points = vec![
            (0, Some(1.0)),
            (10, Some(f64::NAN)),
            (20, Some(2.0)),
            (30, Some(2.0)),
        ];
        assert_eq!(polylines(&chart), [1, 2]);
    }
}
