use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = mamori::cli::Cli::parse();
    // One worker thread per core (it was fixed at two, this machine's count, whatever the
    // machine), or TOKIO_WORKER_THREADS when set.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(mamori::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
