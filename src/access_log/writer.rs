//! The buffers and the writer thread.
//!
//! Each thread that records a line has a [`Shard`]: its own buffer behind its own lock,
//! which only the writer ever contends for (once per pass), so a line costs an
//! uncontended lock and its formatting. The writer swaps each non-empty buffer for an
//! empty one and writes what it took with one `write`; it runs when a buffer passes
//! [`CHUNK`], every `interval`, and when asked (write now, reopen, close). A thread whose
//! buffer reaches [`LIMIT`] waits for the writer: when the destination does not keep up
//! (a full disk, a reader of stdout that stopped reading) requests slow down rather than
//! memory grow or lines go missing, as they did when each request wrote its own line.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::line::{Clock, Format, Line};

/// A buffer this full wakes the writer: the size of one write.
pub(super) const CHUNK: usize = 64 * 1024;

/// A thread whose buffer holds this much waits until the writer has taken it.
const LIMIT: usize = 16 * CHUNK;

/// The target of the writer's own events: not under `fluxlit::access`, so that a filter
/// that turns the access lines off (`fluxlit::access=off`, a prefix) keeps these.
const LOG_TARGET: &str = "fluxlit::logging";

/// Room for a chunk and the line that filled it, so a buffer does not grow as it fills.
const CAPACITY: usize = CHUNK + 4096;

/// What one access log shares between the threads recording lines and its writer.
#[derive(Debug)]
pub(super) struct Shared {
    /// Tells this access log's shards from another's (tests start several).
    id: u64,
    format: Format,
    interval: Duration,
    shards: Mutex<Vec<Arc<Shard>>>,
    control: Mutex<Control>,
    /// The writer waits on it for work.
    wake: Condvar,
    /// [`Shared::flush`] waits on it for the writer's pass.
    passed: Condvar,
    sink: Mutex<Sink>,
    /// Set once the writer makes its last pass: from then on a line is written at once.
    closed: AtomicBool,
}

#[derive(Debug, Default)]
struct Control {
    /// A buffer passed [`CHUNK`].
    full: bool,
    reopen: bool,
    closing: bool,
    /// Passes asked for by [`Shared::flush`], and those done.
    flushes_asked: u64,
    flushes_done: u64,
    writer_gone: bool,
}

/// One thread's buffer.
#[derive(Debug)]
struct Shard {
    buffer: Mutex<Buffer>,
    /// A thread waiting for the writer (at [`LIMIT`]) waits on it.
    taken: Condvar,
}

#[derive(Debug)]
struct Buffer {
    bytes: Vec<u8>,
    clock: Clock,
}

thread_local! {
    /// This thread's shard, and the id of the access log it belongs to.
    static SHARD: RefCell<Option<(u64, Arc<Shard>)>> = const { RefCell::new(None) };
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A buffer or a flag is whole even if a thread panicked holding it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(super) fn new(id: u64, format: Format, interval: Duration, sink: Sink) -> Self {
        Self {
            id,
            format,
            interval,
            shards: Mutex::new(Vec::new()),
            control: Mutex::new(Control::default()),
            wake: Condvar::new(),
            passed: Condvar::new(),
            sink: Mutex::new(sink),
            closed: AtomicBool::new(false),
        }
    }

    /// Adds `line` to this thread's buffer.
    pub(super) fn record(&self, line: &Line<'_>) {
        let now = SystemTime::now();
        let recorded = SHARD.try_with(|slot| {
            let Ok(mut slot) = slot.try_borrow_mut() else {
                return false;
            };
            if !matches!(&*slot, Some((id, _)) if *id == self.id) {
                *slot = Some((self.id, self.register()));
            }
            match &*slot {
                Some((_, shard)) => {
                    self.append(shard, line, now);
                    true
                }
                None => false,
            }
        });
        if !matches!(recorded, Ok(true)) {
            // A thread being torn down (its thread-locals are gone): write the line now.
            let mut bytes = Vec::new();
            line.write(self.format, &mut Clock::default(), now, &mut bytes);
            self.write(&bytes);
        }
    }

    fn register(&self) -> Arc<Shard> {
        let shard = Arc::new(Shard {
            buffer: Mutex::new(Buffer {
                bytes: Vec::with_capacity(CAPACITY),
                clock: Clock::default(),
            }),
            taken: Condvar::new(),
        });
        lock(&self.shards).push(Arc::clone(&shard));
        shard
    }

    fn append(&self, shard: &Shard, line: &Line<'_>, now: SystemTime) {
        let mut buffer = lock(&shard.buffer);
        while buffer.bytes.len() >= LIMIT && !self.closed.load(Ordering::Acquire) {
            buffer = shard
                .taken
                .wait(buffer)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let Buffer { bytes, clock } = &mut *buffer;
        if self.closed.load(Ordering::Acquire) {
            // The writer made its last pass (checked under the shard's lock, which that
            // pass takes after setting `closed`): nobody will take this buffer again.
            let mut line_bytes = Vec::new();
            line.write(self.format, clock, now, &mut line_bytes);
            drop(buffer);
            self.write(&line_bytes);
            return;
        }
        let before = bytes.len();
        line.write(self.format, clock, now, bytes);
        let filled = before < CHUNK && bytes.len() >= CHUNK;
        drop(buffer);
        if filled {
            lock(&self.control).full = true;
            self.wake.notify_one();
        }
    }

    /// Has the writer make a pass now.
    pub(super) fn write_now(&self) {
        lock(&self.control).full = true;
        self.wake.notify_one();
    }

    /// Has the writer make a pass, then reopen the file.
    pub(super) fn reopen(&self) {
        lock(&self.control).reopen = true;
        self.wake.notify_one();
    }

    /// Waits until the writer has written every line recorded before the call.
    pub(super) fn flush(&self) {
        let mut control = lock(&self.control);
        control.flushes_asked += 1;
        let ticket = control.flushes_asked;
        self.wake.notify_one();
        while control.flushes_done < ticket && !control.writer_gone {
            control = self
                .passed
                .wait(control)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Has the writer make its last pass and end.
    pub(super) fn close(&self) {
        lock(&self.control).closing = true;
        self.wake.notify_one();
    }

    /// Writes to the destination at once (under its lock, so never in the middle of a
    /// chunk).
    fn write(&self, bytes: &[u8]) {
        lock(&self.sink).write(bytes);
    }

    /// The writer thread's loop: waits for a reason to write, takes every buffer and
    /// writes it, until [`Shared::close`].
    pub(super) fn run(&self) {
        let _gone = WriterGone(self);
        let mut next_tick = Instant::now() + self.interval;
        let mut spare = Vec::with_capacity(CAPACITY);
        loop {
            let (reopen, closing, flushes) = {
                let mut control = lock(&self.control);
                loop {
                    let asked = control.full
                        || control.reopen
                        || control.closing
                        || control.flushes_asked > control.flushes_done;
                    let now = Instant::now();
                    if asked || now >= next_tick {
                        break;
                    }
                    control = self
                        .wake
                        .wait_timeout(control, next_tick - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                control.full = false;
                let reopen = std::mem::take(&mut control.reopen);
                (reopen, control.closing, control.flushes_asked)
            };
            if closing {
                self.closed.store(true, Ordering::Release);
            }
            self.pass(&mut spare);
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + self.interval;
            }
            if reopen {
                lock(&self.sink).reopen();
            }
            {
                let mut control = lock(&self.control);
                control.flushes_done = control.flushes_done.max(flushes);
            }
            self.passed.notify_all();
            if closing {
                lock(&self.sink).report_lost();
                return;
            }
        }
    }

    /// Takes every non-empty buffer and writes it, one `write` per buffer; forgets the
    /// shards of threads that ended once their buffers are written.
    fn pass(&self, spare: &mut Vec<u8>) {
        let shards = lock(&self.shards).clone();
        for shard in &shards {
            {
                let mut buffer = lock(&shard.buffer);
                if buffer.bytes.is_empty() {
                    continue;
                }
                std::mem::swap(&mut buffer.bytes, spare);
            }
            shard.taken.notify_all();
            self.write(spare);
            spare.clear();
            if spare.capacity() > 4 * CAPACITY {
                // What a stalled destination made grow goes back.
                spare.shrink_to(CAPACITY);
            }
        }
        drop(shards);
        // The registry's is the last reference once the thread is gone.
        lock(&self.shards)
            .retain(|shard| Arc::strong_count(shard) > 1 || !lock(&shard.buffer).bytes.is_empty());
    }
}

/// Marks the writer gone however its loop ends, so that nobody waits for it.
struct WriterGone<'a>(&'a Shared);

impl Drop for WriterGone<'_> {
    fn drop(&mut self) {
        let shared = self.0;
        shared.closed.store(true, Ordering::Release);
        lock(&shared.control).writer_gone = true;
        shared.passed.notify_all();
        for shard in lock(&shared.shards).iter() {
            // Taken and released so that a thread between its check of `closed` and its
            // wait cannot miss this wake-up.
            drop(lock(&shard.buffer));
            shard.taken.notify_all();
        }
    }
}

/// Where the lines go.
#[derive(Debug)]
pub(super) struct Sink {
    file: File,
    /// The file's path; `None` for standard output.
    path: Option<PathBuf>,
    /// Lines lost since writing started failing.
    lost: Option<u64>,
}

impl Sink {
    pub(super) fn stdout() -> std::io::Result<Self> {
        use std::os::fd::AsFd;
        // Its own handle on the descriptor: chunks go out in one `write` each, not
        // through the line buffer of `std::io::Stdout`.
        let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
        Ok(Self {
            file: File::from(fd),
            path: None,
            lost: None,
        })
    }

    pub(super) fn file(path: PathBuf) -> std::io::Result<Self> {
        Ok(Self {
            file: open(&path)?,
            path: Some(path),
            lost: None,
        })
    }

    fn destination(&self) -> String {
        self.path.as_ref().map_or_else(
            || "standard output".to_owned(),
            |path| path.display().to_string(),
        )
    }

    fn write(&mut self, bytes: &[u8]) {
        match self.file.write_all(bytes) {
            Ok(()) => {
                if let Some(lost) = self.lost.take() {
                    tracing::warn!(
                        target: LOG_TARGET,
                        "the access log ({}) is written again; {lost} line(s) were lost",
                        self.destination()
                    );
                }
            }
            Err(error) => {
                let lines = bytes.iter().filter(|&&byte| byte == b'\n').count() as u64;
                match &mut self.lost {
                    Some(lost) => *lost += lines,
                    None => {
                        tracing::error!(
                            target: LOG_TARGET,
                            %error,
                            "cannot write the access log ({}); its lines are lost until it \
                             can be written again",
                            self.destination()
                        );
                        self.lost = Some(lines);
                    }
                }
            }
        }
    }

    /// Says how many lines were lost if writing is failing still (at the end).
    fn report_lost(&mut self) {
        if let Some(lost) = self.lost.take() {
            tracing::error!(
                target: LOG_TARGET,
                "{lost} access log line(s) could not be written to {}",
                self.destination()
            );
        }
    }

    /// Opens the file at its path again (after a rotation renamed it); standard output
    /// stays as it is. A file that cannot be opened keeps the one open before.
    fn reopen(&mut self) {
        let Some(path) = &self.path else {
            return;
        };
        match open(path) {
            Ok(file) => {
                self.file = file;
                tracing::info!(target: LOG_TARGET, path = %path.display(), "access log reopened");
            }
            Err(error) => tracing::error!(
                target: LOG_TARGET,
                path = %path.display(),
                %error,
                "cannot reopen the access log; still writing to the file open before"
            ),
        }
    }
}

/// Appends, creating the file (mode 0640: the lines name clients and paths) if needed.
fn open(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn line(request_id: &str) -> Line<'_> {
        Line {
            method: "GET",
            path: "/",
            route: "ui",
            status: 200,
            duration: Duration::from_micros(100),
            bytes: 10,
            request_id,
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
        }
    }

    fn ids(text: &str) -> Vec<String> {
        text.lines()
            .map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).unwrap();
                event["fields"]["request_id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    /// A writer into a file of a temporary directory, with a tick too long to matter.
    fn started(id: u64) -> (Arc<Shared>, std::thread::JoinHandle<()>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::file(dir.path().join("access.log")).unwrap();
        let shared = Arc::new(Shared::new(
            id,
            Format::Json,
            Duration::from_secs(3600),
            sink,
        ));
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || shared.run())
        };
        (shared, writer, dir)
    }

    fn read(dir: &tempfile::TempDir, name: &str) -> String {
        std::fs::read_to_string(dir.path().join(name)).unwrap_or_default()
    }

    #[test]
    fn a_full_chunk_is_written_without_waiting_for_the_tick() {
        let (shared, writer, dir) = started(1001);
        let mut count = 0;
        while count * 200 < CHUNK {
            shared.record(&line(&format!("id-{count}")));
            count += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while read(&dir, "access.log").is_empty() {
            assert!(Instant::now() < deadline, "nothing written");
            std::thread::sleep(Duration::from_millis(10));
        }
        shared.close();
        writer.join().unwrap();
        let expected: Vec<String> = (0..count).map(|i| format!("id-{i}")).collect();
        assert_eq!(ids(&read(&dir, "access.log")), expected);
    }

    #[test]
    fn close_writes_every_line_of_every_thread_and_later_lines_go_straight_out() {
        let (shared, writer, dir) = started(1002);
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    for i in 0..500 {
                        shared.record(&line(&format!("{thread}-{i}")));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        shared.close();
        writer.join().unwrap();
        assert!(
            lock(&shared.shards).is_empty(),
            "the shards of ended threads are forgotten"
        );
        shared.record(&line("after-close"));
        let mut written = ids(&read(&dir, "access.log"));
        assert_eq!(written.pop().as_deref(), Some("after-close"));
        // Each thread's lines in its own order.
        for thread in 0..4 {
            let prefix = format!("{thread}-");
            let of_thread: Vec<&String> = written
                .iter()
                .filter(|id| id.starts_with(&prefix))
                .collect();
            let expected: Vec<String> = (0..500).map(|i| format!("{thread}-{i}")).collect();
            assert_eq!(of_thread, expected.iter().collect::<Vec<_>>());
        }
        assert_eq!(written.len(), 2000);
    }

    #[test]
    fn a_reopen_writes_what_came_before_into_the_old_file() {
        let (shared, writer, dir) = started(1003);
        shared.record(&line("before"));
        std::fs::rename(
            dir.path().join("access.log"),
            dir.path().join("access.log.1"),
        )
        .unwrap();
        shared.reopen();
        // The pass that reopens has been made once a later flush is done.
        shared.flush();
        shared.record(&line("after"));
        shared.close();
        writer.join().unwrap();
        assert_eq!(ids(&read(&dir, "access.log.1")), ["before"]);
        assert_eq!(ids(&read(&dir, "access.log")), ["after"]);
    }

    #[test]
    fn lines_that_cannot_be_written_are_counted_until_writing_works_again() {
        // Every write to /dev/full fails with "no space left on device".
        let mut sink = Sink::file(PathBuf::from("/dev/full")).unwrap();
        sink.write(b"one\ntwo\n");
        sink.write(b"three\n");
        assert_eq!(sink.lost, Some(3));
        let dir = tempfile::tempdir().unwrap();
        sink.file = open(&dir.path().join("access.log")).unwrap();
        sink.write(b"four\n");
        assert_eq!(sink.lost, None, "reported and reset once a write works");
        assert_eq!(read(&dir, "access.log"), "four\n");
    }

    #[test]
    fn a_thread_over_the_limit_waits_for_the_writer_instead_of_dropping_lines() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::file(dir.path().join("access.log")).unwrap();
        let shared = Arc::new(Shared::new(
            1004,
            Format::Json,
            Duration::from_secs(3600),
            sink,
        ));
        // No writer yet: the recording thread must stop at the limit.
        let recorder = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let mut count = 0_usize;
                while count < 3 * LIMIT / 200 {
                    shared.record(&line(&format!("id-{count}")));
                    count += 1;
                }
                count
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(!recorder.is_finished(), "the recorder went past the limit");
        let buffered: usize = lock(&shared.shards)
            .iter()
            .map(|shard| lock(&shard.buffer).bytes.len())
            .sum();
        assert!(buffered < LIMIT + 1024, "{buffered} bytes buffered");
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || shared.run())
        };
        let count = recorder.join().unwrap();
        shared.close();
        writer.join().unwrap();
        assert_eq!(ids(&read(&dir, "access.log")).len(), count);
    }
}
