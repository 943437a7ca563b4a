//! The `mcpsh` binary: a thin wrapper over the library's CLI.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    // The job zygote must start before any thread exists (it forks), so it is
    // dispatched before argument parsing or the async runtime.
    if std::env::args_os().nth(1).is_some_and(|a| a == "__zygote") {
        mcpsh::telemetry::init();
        return std::process::ExitCode::from(mcpsh::jobs::zygote::main() as u8);
    }
    mcpsh::cli::main()
}
