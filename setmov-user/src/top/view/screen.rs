//! The view's tests draw it on ratatui's `TestBackend` and read the screen back as text.

use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Modifier;

use super::render;
use crate::top::app::{App, Coverage, handle_key};
use crate::top::fixtures;

/// The screen as text, one string per line, trailing blanks cut.
pub fn draw(app: &App, width: u16, height: u16) -> Vec<String> {
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

pub fn app(coverage: Coverage) -> App {
    let mut app = App::new(coverage, Duration::from_secs(1));
    app.ingest(fixtures::tick(1));
    app
}

pub fn press(app: &mut App, keys: &[KeyCode]) {
    for &code in keys {
        handle_key(app, KeyEvent::new(code, KeyModifiers::NONE));
    }
}

/// Compares the screen with the expected lines; on a difference prints the screen as the
/// Rust lines to paste after checking it.
pub fn assert_screen(actual: Vec<String>, expected: &[&str]) {
    if actual != expected {
        let pasteable: String = actual
            .iter()
            .map(|l| format!("            {l:?},\n"))
            .collect();
        panic!("the screen differs; it is:\n{pasteable}");
    }
}

/// A VM table's selected row is drawn reversed.
pub fn row_is_highlighted(app: &App, width: u16, height: u16, y: u16) -> bool {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal.draw(|frame| render(app, frame)).expect("draw");
    let buffer = terminal.backend().buffer();
    (0..width).all(|x| buffer[(x, y)].modifier.contains(Modifier::REVERSED))
}
