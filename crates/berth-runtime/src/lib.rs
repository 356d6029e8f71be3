//! berth-runtime: everything below the OCI bundle line — the host probe the
//! engine reports and chooses by, cgroups, seccomp, and (next) the Linux
//! container runtime itself.

pub mod cgroups;
pub mod host;
pub mod linux;
pub mod memory;
pub mod microvm;
pub mod seccomp;
