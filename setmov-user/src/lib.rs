//! SETMOV: Supervised rEal-Time MOnitoring on VDI.
//!
//! The paper's three modules are kept apart: resource collection ([`host`], [`vm`], [`ebpf`]),
//! usage computation ([`usage`]) and the database ([`store`]). Every top-level module:
//!
//! - [`host`]: the host's procfs counters and its identity (name, IP);
//! - [`vm`]: libvirt's node facts and domain counters, each qemu's PID and vCPU threads;
//! - [`ebpf`]: the loader of the kernel programs and one module per probe;
//! - [`usage`]: pure equations from counters at two instants to usage figures;
//! - [`store`]: the `Store` trait, the SQLite and MySQL stores, the spool and the rollups;
//! - [`sampler`]: the ticker, one task per source, the assembler and the writer;
//! - [`export`]: the ticks handed to other systems (the Prometheus exposition and server);
//! - [`stream`]: `run --stream`, one CSV or JSON record per VM per tick on stdout;
//! - [`top`]: the live terminal view (state and keys, drawing, the terminal loop);
//! - [`analysis`]: reports, charts, recommendations, migration plans and the knee;
//! - [`experiment`]: `experiment mem-knee` in test guests;
//! - [`show`]: stored rows, reports and plans rendered as a table, JSON or CSV;
//! - [`config`]: the configuration file;
//! - [`escape`]: names from outside made safe to print (control characters written out);
//! - [`cli`]: the command line: its options, then parse and dispatch (`main`);
//! - [`commands`]: one module per command, and the sources `run` and `top` start;
//! - [`logging`]: log lines to stderr or the journal;
//! - [`privileges`]: the capabilities given up once `run` has started;
//! - [`progress`]: progress as a bar on a terminal or as log lines.

// Outside tests, data from /proc, libvirt, the database, files, the command line and the network
// must never panic the monitor: each remaining `expect` or index is a narrow `#[allow]` with the
// internal invariant that makes it safe. (`unwrap_used` is on for the whole workspace.)
#![cfg_attr(not(test), warn(clippy::expect_used, clippy::indexing_slicing))]

pub mod analysis;
pub mod cli;
pub mod commands;
pub mod config;
pub mod ebpf;
pub mod escape;
pub mod experiment;
pub mod export;
pub mod host;
pub mod logging;
pub mod privileges;
pub mod progress;
pub mod resident;
pub mod sampler;
pub mod show;
pub mod store;
pub mod stream;
pub mod top;
pub mod usage;
pub mod vm;
