//! `chartsync`: one binary for central, satellites and the demo.

mod bench;
mod bench_clinics;
mod bench_link;
mod bench_long;
mod bench_pg;
mod bench_pouchdb;
mod cli;
mod copy;
mod demo;
mod export;
#[cfg(test)]
mod openapi_check;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Everything chartsync writes (records, databases, locks, logs of the
    // demo) is patient data or guards it: readable by this user only,
    // whatever umask the shell, cron or service manager gave us.
    // SAFETY: umask(2) only replaces the process's file-creation mask and
    // cannot fail; no other thread exists yet.
    unsafe {
        libc::umask(0o077);
    }
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
