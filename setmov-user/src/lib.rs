//! SETMOV: Supervised rEal-Time MOnitoring on VDI.
//!
//! The paper's three modules are kept apart:
//! - resource collection: [`host`] (procfs), [`vm`] (libvirt) and [`ebpf`] (kernel
//!   tracepoints);
//! - usage computation: [`usage`], pure equations over two samples;
//! - database: [`store`].
//!
//! [`sampler`] ties them together on a tokio runtime, [`top`] shows it live in a terminal and
//! [`cli`] is the `setmov` command; [`export`] hands the ticks to other systems (Prometheus).

pub mod analysis;
pub mod cli;
pub mod commands;
pub mod config;
pub mod ebpf;
pub mod experiment;
pub mod export;
pub mod host;
pub mod logging;
pub mod progress;
pub mod sampler;
pub mod show;
pub mod store;
pub mod stream;
pub mod top;
pub mod usage;
pub mod vm;
