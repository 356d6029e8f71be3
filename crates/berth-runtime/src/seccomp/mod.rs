//! seccomp: Docker's default profile and OCI seccomp compiled to BPF (being written).
