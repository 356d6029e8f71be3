//! `berth-agent`: PID 1 (`/init`) of a berth microVM. The protocol it
//! speaks with the host is the library (`berth_agent`); the rest is here.

mod agent;

fn main() {
    agent::main()
}
