//! `setmov top`: a live terminal view of the host and its VMs, in the spirit of virt-top and
//! bottom. It runs the sampler without a store and shows every tick as it comes.
//!
//! The state and its keys ([`app`]), a VM's row and history (`vm_row`) and the drawing
//! ([`view`]) are pure and tested on
//! ratatui's `TestBackend`; [`run`] is the edge: terminal, keyboard, signals and sampler.

pub mod app;
#[cfg(test)]
mod fixtures;
mod format;
pub mod log;
mod terminal;
pub mod view;
mod vm_row;

pub use app::{Action, App, Availability, Coverage, handle_key};
pub use log::RecentLog;
pub use terminal::{TopError, run};
