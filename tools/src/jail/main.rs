//! `hull-jail`: runc's command line over rustjail, the library Hull's agent
//! builds containers with. A thin front: it parses arguments, formats
//! output and maps errors to runc's exit codes (1 for a failed command;
//! `run` and `exec` exit with the container process's code).

mod cli;
mod commands;
mod output;

use clap::Parser;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // The re-executed container init takes no other options.
    if args.get(1).map(String::as_str) == Some("init") {
        rustjail::init::main("hull-jail", &args[2..]);
    }
    let cli = cli::Cli::parse();
    let log = output::Log::new(cli.log.as_deref(), cli.log_format);
    let code = match commands::run(&cli, &log) {
        Ok(code) => code,
        Err(e) => {
            log.error(&e);
            1
        }
    };
    std::process::exit(code)
}
