//! Resource collection from libvirt (the paper's first module, VM half): node facts and every
//! domain's counters, plus each qemu process's PID and vCPU threads for the eBPF layer.

pub mod libvirt;
pub mod runfiles;
pub mod stats;
