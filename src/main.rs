//! `chartsync`: one binary for central, satellites and the demo.

mod bench;
mod cli;
mod demo;
#[cfg(test)]
mod openapi_check;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose, args.is_demo());
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            // One line: the error and its causes.
            let mut line = format!("chartsync: {error}");
            for cause in error.chain().skip(1) {
                line.push_str(": ");
                line.push_str(&cause.to_string());
            }
            eprintln!("{line}");
            ExitCode::FAILURE
        }
    }
}
