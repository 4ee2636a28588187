//! A server under test as a child process: started on port 0 with JSON logs on stderr, its
//! addresses read from the `"Listening"` line, ready at the `"Ready"` line; stderr is drained for
//! the whole run (warnings and errors kept for the report); killed (SIGKILL) on drop.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The addresses a server logged in its `"Listening"` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addrs {
    /// Main HTTP port (`/metrics`, `/readyz`, …).
    pub http: SocketAddr,
    /// OTLP/gRPC port.
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP port.
    pub otlp_http: SocketAddr,
}

/// What the stderr drain keeps.
#[derive(Default)]
pub struct LogState {
    /// The last lines, for error reports.
    pub tail: VecDeque<String>,
    /// The first few lines at WARN or ERROR level.
    pub problems: Vec<String>,
    /// How many lines at WARN or ERROR level.
    pub problem_count: u64,
}

const TAIL_LINES: usize = 40;
const KEPT_PROBLEMS: usize = 10;

/// A running child server.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addrs: Addrs,
    /// Its log lines.
    pub log: Arc<Mutex<LogState>>,
    lines: Arc<AtomicU64>,
    _data_dir: Option<TempDir>,
}

impl ServerProcess {
    /// Spawns `cmd` (stdio is set here) and waits up to `timeout` for its `"Ready"` line.
    /// `data_dir` is removed when the server is dropped.
    pub fn spawn(mut cmd: Command, data_dir: Option<TempDir>, timeout: Duration) -> anyhow::Result<ServerProcess> {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let log = Arc::new(Mutex::new(LogState::default()));
        let lines = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
        {
            let log = Arc::clone(&log);
            let lines = Arc::clone(&lines);
            std::thread::Builder::new().name("server-stderr".into()).spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    lines.fetch_add(1, Ordering::Relaxed);
                    let parsed = serde_json::from_str::<serde_json::Value>(&line).ok();
                    {
                        let mut st = log.lock().unwrap_or_else(|e| e.into_inner());
                        let level = parsed.as_ref().and_then(|v| v["level"].as_str()).unwrap_or("");
                        if level.eq_ignore_ascii_case("warn") || level.eq_ignore_ascii_case("error") {
                            st.problem_count += 1;
                            if st.problems.len() < KEPT_PROBLEMS {
                                st.problems.push(line.clone());
                            }
                        }
                        if st.tail.len() == TAIL_LINES {
                            st.tail.pop_front();
                        }
                        st.tail.push_back(line);
                    }
                    if let Some(v) = parsed {
                        // Nobody listens once the server is up; keep draining regardless.
                        let _ = tx.send(v);
                    }
                }
            })?;
        }
        let tail = |log: &Mutex<LogState>| {
            std::thread::sleep(Duration::from_millis(100)); // let the drain catch up
            log.lock().unwrap_or_else(|e| e.into_inner()).tail.iter().cloned().collect::<Vec<_>>().join("\n")
        };
        let deadline = Instant::now() + timeout;
        let mut addrs = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the server did not log \"Ready\" within {timeout:?}; its last lines:\n{}", tail(&log));
            }
            let Ok(v) = rx.recv_timeout(left.min(Duration::from_millis(100))) else {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!("the server exited with {status} while starting; its last lines:\n{}", tail(&log));
                }
                continue;
            };
            match v["message"].as_str() {
                Some("Listening") => match Addrs::from_log(&v) {
                    Ok(a) => addrs = Some(a),
                    Err(e) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(e);
                    }
                },
                Some("Ready") => {
                    let Some(addrs) = addrs else {
                        let _ = child.kill();
                        let _ = child.wait();
                        bail!("the server logged \"Ready\" before \"Listening\"");
                    };
                    return Ok(ServerProcess { child, addrs, log, lines, _data_dir: data_dir });
                }
                _ => {}
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stderr lines seen so far.
    pub fn log_lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    /// The last log lines, one per line.
    pub fn log_tail(&self) -> String {
        let st = self.log.lock().unwrap_or_else(|e| e.into_inner());
        st.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// `(count, first few)` of WARN/ERROR lines.
    pub fn problems(&self) -> (u64, Vec<String>) {
        let st = self.log.lock().unwrap_or_else(|e| e.into_inner());
        (st.problem_count, st.problems.clone())
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Addrs {
    fn from_log(v: &serde_json::Value) -> anyhow::Result<Addrs> {
        let a = |k: &str| -> anyhow::Result<SocketAddr> {
            let s = v[k].as_str().with_context(|| format!("no string field {k:?} in the \"Listening\" line: {v}"))?;
            s.parse().with_context(|| format!("field {k:?} of the \"Listening\" line is not a socket address: {s:?}"))
        };
        Ok(Addrs { http: a("http")?, otlp_grpc: a("otlp_grpc")?, otlp_http: a("otlp_http")? })
    }
}

/// A fresh directory under a parent, removed (with its contents) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<parent>/<prefix>-<pid>-<n>`.
    pub fn new(parent: &Path, prefix: &str) -> anyhow::Result<TempDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("{prefix}-{}-{n}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path).with_context(|| format!("cannot clear {}", path.display()))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The `outpost` binary to run: `flag` when it is a file; else, when `flag` is the default
/// `target/release/outpost`, the `outpost` next to the running harness (both are built by
/// `cargo build --release --workspace`); else an error that says how to build it.
pub fn find_outpost(flag: &Path) -> anyhow::Result<PathBuf> {
    if flag.is_file() {
        return Ok(flag.to_path_buf());
    }
    let sibling = std::env::current_exe().ok().and_then(|e| Some(e.parent()?.join("outpost")));
    match sibling {
        Some(s) if s.is_file() && flag == Path::new("target/release/outpost") => Ok(s),
        _ => bail!(
            "no outpost binary at {} (build it with `cargo build --release --workspace`, or pass --outpost PATH)",
            flag.display()
        ),
    }
}

/// The first line of `<bin> version`, or `version unknown`.
pub fn outpost_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "version unknown".into())
}

/// The command that starts `bin` as the harnesses run it: data in `data_dir`, every listener on
/// port 0 of loopback, JSON logs (which [`ServerProcess::spawn`] reads the addresses from), and
/// none of the caller's `OUTPOST_*` variables, so only what the harness sets configures it.
pub fn outpost_command(bin: &Path, data_dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--data-dir").arg(data_dir).args([
        "--listen",
        "127.0.0.1:0",
        "--otlp-grpc-listen",
        "127.0.0.1:0",
        "--otlp-http-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OUTPOST_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Outpost's `wal.fsync` setting, as a harness flag (`OUTPOST_WAL__FSYNC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fsync {
    /// Sync before acknowledging (the default).
    Batch,
    /// Acknowledge after `write(2)`, sync on a timer.
    Interval,
    /// Never sync except on close.
    None,
}

impl Fsync {
    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            Fsync::Batch => "batch",
            Fsync::Interval => "interval",
            Fsync::None => "none",
        }
    }
}
