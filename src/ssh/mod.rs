//! SSH: host configuration as OpenSSH resolves it (`config/`) and host-key
//! checking with OpenSSH's known_hosts semantics (`known_hosts/`). The only
//! module that will know russh (the connection pool comes with the SSH issue).

pub mod cmdline;
pub mod config;
pub mod known_hosts;
