//! `setmov top`: a live terminal view of the host and its VMs, in the spirit of virt-top and
//! bottom.
//!
//! The state and its keys ([`app`]) and the drawing ([`view`]) are pure and tested on
//! ratatui's `TestBackend`.

pub mod app;
#[cfg(test)]
mod fixtures;
mod format;
pub mod view;

pub use app::{Action, App, Availability, Coverage, handle_key};
