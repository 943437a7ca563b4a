//! The `mcpsh` binary: a thin wrapper over the library's CLI.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    // The job zygote must start before any thread exists (it forks), so it is
    // dispatched before argument parsing or the async runtime.
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == "__zygote") {
        let Some(socket) = args.next() else {
            eprintln!("mcpsh __zygote: internal mode, started by the server with a socket path");
            return std::process::ExitCode::FAILURE;
        };
        return std::process::ExitCode::from(mcpsh::jobs::zygote::main(socket.as_ref()) as u8);
    }
    mcpsh::cli::main()
}
