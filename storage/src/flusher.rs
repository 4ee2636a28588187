//! The head flusher: a thread of the [`crate::Storage`] that writes a head grown past its
//! `head_flush_bytes` (traces, logs) to files while writers go on.
//!
//! Before it, the writer whose batch took a head over the limit flushed it itself, so one request
//! in every few hundred waited the whole flush (a second or more) and its client sent nothing
//! meanwhile. Now a writer only asks ([`HeadFlusher::want`]) and returns once its batch is
//! durable. Back-pressure is unchanged: a head that reaches [`TRACES_BACKPRESSURE`] (traces) or
//! [`LOGS_BACKPRESSURE`] (logs) times its limit anyway (the flusher cannot keep up) makes writers
//! wait for the running flush and flush themselves, so memory stays bounded.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::mem::MemStore;

/// How many times `head_flush_bytes` the traces head may hold before writers wait for its flush.
pub(crate) const TRACES_BACKPRESSURE: usize = 3;

/// The same for the logs head. Lower than for traces: when pushes outpace the flusher, the head
/// grows while the previous one is being written, and the two are most of the process' memory.
/// Measured with `logs_bench` (5 M lines, 4 senders, 2 cores): peak RSS 377–402 MiB at 3,
/// 284 MiB at 2, for about 10 % fewer lines/s (376k → 333k).
pub(crate) const LOGS_BACKPRESSURE: usize = 2;

/// What a head's size asks of the writer that just grew it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadPressure {
    /// At or below its flush size (or flushing by size is off).
    Below,
    /// Past its flush size: the flusher should write it out.
    Over,
    /// Past its back-pressure factor times its flush size: the writer flushes it itself.
    Backpressure,
}

impl HeadPressure {
    /// The pressure of a head holding `bytes` with flush size `limit` (0 = only at checkpoints)
    /// and back-pressure past `factor` × `limit`.
    pub(crate) fn of(bytes: usize, limit: usize, factor: usize) -> HeadPressure {
        if limit == 0 || bytes <= limit {
            HeadPressure::Below
        } else if bytes > limit.saturating_mul(factor) {
            HeadPressure::Backpressure
        } else {
            HeadPressure::Over
        }
    }
}

/// A head the flusher can be asked to write out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Head {
    Traces,
    Logs,
}

#[derive(Default)]
struct Wants {
    traces: bool,
    logs: bool,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    wants: Mutex<Wants>,
    wake: Condvar,
}

/// The flusher thread; dropping it stops and joins the thread (a flush in progress finishes).
pub(crate) struct HeadFlusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl HeadFlusher {
    /// Starts the thread, which flushes heads of `mem` when asked.
    pub(crate) fn start(mem: Arc<MemStore>) -> io::Result<HeadFlusher> {
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name("outpost-flush".into()).spawn(move || run(&s, &mem))?;
        Ok(HeadFlusher { shared, thread: Some(thread) })
    }

    /// Asks for `head` to be flushed if it is still over its limit when the thread gets to it.
    pub(crate) fn want(&self, head: Head) {
        let mut w = self.shared.wants.lock();
        let wanted = match head {
            Head::Traces => &mut w.traces,
            Head::Logs => &mut w.logs,
        };
        if !*wanted {
            *wanted = true;
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for HeadFlusher {
    fn drop(&mut self) {
        self.shared.wants.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared, mem: &MemStore) {
    loop {
        let (traces, logs) = {
            let mut w = shared.wants.lock();
            while !w.stop && !w.traces && !w.logs {
                shared.wake.wait(&mut w);
            }
            if w.stop {
                return;
            }
            (std::mem::take(&mut w.traces), std::mem::take(&mut w.logs))
        };
        // The batches are durable in the WAL already: a failed flush loses nothing, and the next
        // checkpoint retries it and reports the error.
        if traces {
            let _ = mem.flush_large_traces_head();
        }
        if logs {
            let _ = mem.flush_large_logs_head();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::{Head, HeadFlusher, HeadPressure};
    use crate::EngineOptions;
    use crate::mem::MemStore;
    use crate::model::WriteBatch;
    use crate::read::Reader;
    use crate::traces::TracesOptions;
    use crate::traces::tests::{batch, full_span, pos};
    use crate::wal::Apply;

    fn parquet_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("traces"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "parquet"))
            .count()
    }

    /// A head past its flush size (and short of back-pressure) is written to a span file by the
    /// flusher thread when asked, with no checkpoint; dropping the flusher joins its thread.
    #[test]
    fn the_flusher_writes_a_head_past_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let opts = EngineOptions {
            traces: TracesOptions { head_flush_bytes: 20_000, ..TracesOptions::default() },
            ..EngineOptions::default()
        };
        let mem = Arc::new(MemStore::open(Some(dir.path()), &opts).unwrap());
        let flusher = HeadFlusher::start(Arc::clone(&mem)).unwrap();
        let mut n = 0;
        while mem.traces_head_pressure() == HeadPressure::Below {
            n += 1;
            let t = u8::try_from(n).unwrap();
            Apply::apply(
                &*mem,
                pos(n),
                WriteBatch::Spans(batch("shop", vec![full_span(t, 1, 1_000), full_span(t, 2, 1_500)])),
            );
        }
        assert_eq!(mem.traces_head_pressure(), HeadPressure::Over, "one batch jumped past the back-pressure mark");
        assert_eq!(parquet_files(dir.path()), 0);
        flusher.want(Head::Traces);
        let deadline = Instant::now() + Duration::from_secs(60);
        while parquet_files(dir.path()) == 0 {
            assert!(Instant::now() < deadline, "the flusher wrote no span file");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(flusher);
        assert_eq!(mem.traces_head_pressure(), HeadPressure::Below);
        assert_eq!(parquet_files(dir.path()), 1);
        assert_eq!(mem.trace_store().span_count(), 2 * n);
    }

    #[test]
    fn pressure_follows_the_limit() {
        assert_eq!(HeadPressure::of(0, 0, 3), HeadPressure::Below);
        assert_eq!(HeadPressure::of(1 << 40, 0, 3), HeadPressure::Below);
        assert_eq!(HeadPressure::of(100, 100, 3), HeadPressure::Below);
        assert_eq!(HeadPressure::of(101, 100, 3), HeadPressure::Over);
        assert_eq!(HeadPressure::of(300, 100, 3), HeadPressure::Over);
        assert_eq!(HeadPressure::of(301, 100, 3), HeadPressure::Backpressure);
        assert_eq!(HeadPressure::of(200, 100, 2), HeadPressure::Over);
        assert_eq!(HeadPressure::of(201, 100, 2), HeadPressure::Backpressure);
    }
}
