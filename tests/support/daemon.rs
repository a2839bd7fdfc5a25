//! The `chartsync` binary as a child process: commands run with a clean
//! environment, and daemons whose log lines can be waited for.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::EXE as BIN;

/// The binary with `args` (under `umask 000` when `open_umask`), without
/// token variables from the environment, stdin closed.
pub fn command(args: &[&str], open_umask: bool) -> Command {
    let mut cmd = if open_umask {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg("umask 000; exec \"$0\" \"$@\"")
            .arg(BIN)
            .args(args);
        sh
    } else {
        let mut direct = Command::new(BIN);
        direct.args(args);
        direct
    };
    cmd.env("NO_COLOR", "1")
        .env_remove("CHARTSYNC_ADMIN_TOKEN")
        .env_remove("CHARTSYNC_CENTRAL_TOKEN")
        .stdin(Stdio::null());
    cmd
}

/// A child process killed when dropped, with its stderr collected.
pub struct Daemon {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Daemon {
    pub fn start(args: &[&str], open_umask: bool) -> Daemon {
        let mut child = command(args, open_umask)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon { child, lines }
    }

    /// Waits for a log line containing `text`; returns it.
    pub fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = String::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                }
                Err(_) => break,
            }
        }
        panic!("no log line with {text:?}; the log so far:\n{seen}");
    }

    /// The log lines received so far.
    pub fn drain(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `url/healthz` answers.
pub async fn wait_healthy(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while http.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "{url} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
