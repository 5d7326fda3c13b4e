//! `webhooks`: the service in one process (`serve`), the OneFuzz client verbs, and tools for
//! receivers (`listen`, `verify`).

mod args;
mod client;
mod commands;
mod console;
mod listen;
mod migrate;
mod serve;
mod verify;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use args::{Cli, Command};

/// glibc's malloc, shared by the runtime's workers and the store thread, spent much of
/// `serve`'s time waiting on its arena locks (README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(options) => serve::run(options).await,
        Command::Console(options) => console::proxy::run(&cli.remote, options).await,
        Command::Listen { port, secret } => listen::run(port, secret).await,
        Command::Verify { secret, body, headers } => verify::run(&secret, &body, &headers),
        Command::MigrateTable { table } => migrate::run(&table).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "webhooks", &mut std::io::stdout());
            Ok(())
        }
        command => commands::run(&cli.remote, command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
