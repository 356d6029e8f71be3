//! berth-runtime: everything below the OCI bundle line. For now, the host
//! probe the engine reports and the runtimes will choose by.

pub mod host;
