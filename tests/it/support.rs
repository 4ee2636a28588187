//! Starting Outpost for a test: in-process on port 0, or as a child process of the built binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost::config::{FlagOverrides, RawConfig};
use outpost::server::{self, Addrs, Running};
use storage::Storage;

/// An in-process server with its own runtime and data folder.
pub struct TestServer {
    pub rt: tokio::runtime::Runtime,
    pub addrs: Addrs,
    pub running: Option<Running>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts with defaults on port 0; `tweak` adjusts the raw config (limits etc.).
    pub fn start(tweak: impl FnOnce(&mut RawConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = RawConfig::load(None, Vec::new(), &FlagOverrides::default()).unwrap();
        raw.data_dir = dir.path().to_path_buf();
        raw.listen = "127.0.0.1:0".into();
        raw.otlp_grpc_listen = "127.0.0.1:0".into();
        raw.otlp_http_listen = "127.0.0.1:0".into();
        tweak(&mut raw);
        let config = raw.resolve().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let running = rt.block_on(async {
            let listeners = server::Listeners::bind(&config).await.unwrap();
            let mut running = server::start(config, listeners).await.unwrap();
            running.ready().await.unwrap();
            running
        });
        TestServer { rt, addrs: running.addrs, running: Some(running), _dir: dir }
    }

    pub fn storage(&self) -> Arc<Storage> {
        Arc::clone(self.running.as_ref().unwrap().pipeline.storage().expect("ready"))
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.addrs.http)
    }

    pub fn otlp_http(&self) -> String {
        format!("http://{}", self.addrs.otlp_http.unwrap())
    }

    pub fn otlp_grpc(&self) -> String {
        format!("http://{}", self.addrs.otlp_grpc.unwrap())
    }

    /// Graceful shutdown.
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.shutdown()).unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Path of the `outpost` binary Cargo built for these tests.
pub fn outpost_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_outpost"))
}

/// A child-process server; its addresses are read from its JSON "Listening" log line.
pub struct ChildServer {
    pub child: Child,
    pub addrs: ChildAddrs,
}

#[derive(Debug, Clone, Copy)]
pub struct ChildAddrs {
    pub http: SocketAddr,
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
}

impl ChildServer {
    /// Starts `outpost` on port 0 with `data_dir`, plus extra args/env, and waits until ready.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> ChildServer {
        let mut cmd = Command::new(outpost_bin());
        cmd.args(["--data-dir"])
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--otlp-grpc-listen", "127.0.0.1:0", "--otlp-http-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .env("OUTPOST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn outpost");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // The receiver goes away after start-up; keep draining so the child never blocks.
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut addrs = None;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("outpost exited with {status} during start-up:\n{}", seen.join("\n"));
                }
                continue;
            };
            seen.push(line.clone());
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            match v["message"].as_str() {
                Some("Listening") => {
                    let a = |k: &str| v[k].as_str().unwrap().parse::<SocketAddr>().unwrap();
                    addrs = Some(ChildAddrs { http: a("http"), otlp_grpc: a("otlp_grpc"), otlp_http: a("otlp_http") });
                }
                Some("Ready") => {
                    return ChildServer { child, addrs: addrs.expect("Listening before Ready") };
                }
                _ => {}
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("outpost did not become ready:\n{}", seen.join("\n"));
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(self) {
        drop(self);
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

/// Opens a data folder directly (replaying its WAL) to check what survived.
pub fn open_store(dir: &Path) -> (Storage, storage::ReplayReport) {
    Storage::open(storage::StorageOptions::new(dir), Arc::new(storage::NoEvents)).unwrap()
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// `base?k=v&...`, form-encoded.
pub fn with_query(base: &str, params: &[(&str, String)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    format!("{base}?{}", q.finish())
}
