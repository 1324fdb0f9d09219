//! Instance output: each stream goes to its own file (`<dir>/<id>.out.log`, `<id>.err.log`),
//! rotated by size (`.1` newest … `.max_files` oldest), and to a broadcast channel that
//! `herd logs -f` subscribes to.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::broadcast;

/// Longest line kept whole; longer output is split (protects memory from binary output).
const MAX_LINE: usize = 64 * 1024;

/// Bytes of output read at once, and written to the file at most in one go.
const BATCH: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    fn suffix(self) -> &'static str {
        match self {
            Stream::Out => "out",
            Stream::Err => "err",
        }
    }
}

/// One line of instance output.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub instance: Arc<str>,
    pub stream: Stream,
    pub line: String,
}

/// Where and how much to keep.
#[derive(Debug, Clone)]
pub(crate) struct LogSettings {
    pub(crate) dir: PathBuf,
    pub(crate) max_size: u64,
    pub(crate) max_files: u32,
    /// `[logs] date_format`: the strftime format of the timestamp before each line.
    pub(crate) date_format: Option<Arc<str>>,
}

/// The log file of an instance stream.
pub(crate) fn log_path(dir: &Path, instance: &str, stream: Stream) -> PathBuf {
    dir.join(format!("{instance}.{}.log", stream.suffix()))
}

struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    settings: LogSettings,
}

/// Instance output may hold what an app logs of its users: readable by herd's user and group
/// only (as nginx's logs), whatever the umask.
const LOG_MODE: u32 = 0o640;

impl RotatingFile {
    async fn open(path: PathBuf, settings: LogSettings) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(LOG_MODE)
            .open(&path)
            .await?;
        let size = file.metadata().await?.len();
        Ok(RotatingFile {
            path,
            file,
            size,
            settings,
        })
    }

    /// Appends whole lines, rotating between lines so that no file passes `max_size` (a single
    /// line longer than that gets a file of its own).
    async fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let room = usize::try_from(self.settings.max_size.saturating_sub(self.size))
                .unwrap_or(usize::MAX);
            let take = if bytes.len() <= room {
                bytes.len()
            } else {
                match bytes[..room].iter().rposition(|&b| b == b'\n') {
                    Some(i) => i + 1,
                    None if self.size == 0 => bytes
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(bytes.len(), |i| i + 1),
                    None => 0,
                }
            };
            if take > 0 {
                self.file.write_all(&bytes[..take]).await?;
                self.size += take as u64;
                bytes = &bytes[take..];
            }
            if !bytes.is_empty() {
                self.rotate().await?;
            }
        }
        Ok(())
    }

    async fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush().await?;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        let keep = self.settings.max_files;
        if keep == 0 {
            tokio::fs::remove_file(&self.path).await.ok();
        } else {
            tokio::fs::remove_file(numbered(keep)).await.ok();
            for n in (1..keep).rev() {
                tokio::fs::rename(numbered(n), numbered(n + 1)).await.ok();
            }
            // Gone already (an operator removed it): nothing to keep, start a new one.
            match tokio::fs::rename(&self.path, numbered(1)).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(LOG_MODE)
            .open(&self.path)
            .await?;
        self.size = 0;
        Ok(())
    }
}

/// The log file of one instance stream, shared by every process that runs under that id (during
/// a replacement the old and the new process write at once): one writer, one size count.
#[derive(Clone)]
pub(crate) struct LogFile {
    path: PathBuf,
    settings: LogSettings,
    state: Arc<tokio::sync::Mutex<FileState>>,
}

/// Bumped by [`reopen_logs`]: a log file opened before the bump is closed and opened again by
/// its path at its next write.
static REOPEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Makes every instance log file be opened again by its path at its next write (SIGUSR1, as
/// nginx's `-s reopen` and PM2's `reloadLogs`): after logrotate or an operator moved a file
/// away, output goes to a new file under the configured name instead of the moved one.
pub fn reopen_logs() {
    REOPEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

enum FileState {
    Closed,
    /// The file, and the [`REOPEN`] generation it was opened in.
    Open(RotatingFile, u64),
    /// Opening or writing failed (a full disk, a removed directory): the output is only
    /// broadcast until this time, then the file is opened again.
    Failed(std::time::Instant),
}

/// How long a log file that failed stays skipped before it is tried again.
const RETRY_FAILED: std::time::Duration = std::time::Duration::from_secs(10);

impl std::fmt::Debug for LogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFile").field("path", &self.path).finish()
    }
}

impl LogFile {
    pub(crate) fn new(settings: &LogSettings, instance: &str, stream: Stream) -> Self {
        LogFile {
            path: log_path(&settings.dir, instance, stream),
            settings: settings.clone(),
            state: Arc::new(tokio::sync::Mutex::new(FileState::Closed)),
        }
    }

    /// Appends whole lines (opening the file on first use). A file that cannot be opened or
    /// written is reported and skipped for [`RETRY_FAILED`], then tried again (a disk that was
    /// full has room again); the output is broadcast meanwhile.
    async fn write_line(&self, line: &[u8]) {
        let mut state = self.state.lock().await;
        let generation = REOPEN.load(std::sync::atomic::Ordering::Relaxed);
        if matches!(*state, FileState::Failed(until) if std::time::Instant::now() >= until) {
            *state = FileState::Closed;
        }
        if let FileState::Open(f, opened) = &mut *state {
            if *opened != generation {
                let _ = f.file.flush().await;
                *state = FileState::Closed;
            }
        }
        if matches!(*state, FileState::Closed) {
            *state = match RotatingFile::open(self.path.clone(), self.settings.clone()).await {
                Ok(f) => FileState::Open(f, generation),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, retry_in = ?RETRY_FAILED, "failed to open instance log file; output is only broadcast meanwhile");
                    FileState::Failed(std::time::Instant::now() + RETRY_FAILED)
                }
            };
        }
        if let FileState::Open(f, _) = &mut *state {
            if let Err(e) = f.write(line).await {
                tracing::warn!(path = %self.path.display(), error = %e, retry_in = ?RETRY_FAILED, "failed to write instance log; output is only broadcast meanwhile");
                *state = FileState::Failed(std::time::Instant::now() + RETRY_FAILED);
            }
        }
    }

    async fn flush(&self) {
        if let FileState::Open(f, _) = &mut *self.state.lock().await {
            let _ = f.file.flush().await;
        }
    }
}

/// Copies one output stream of an instance to its file and the broadcast channel until EOF
/// (the process and every child holding the pipe have exited).
pub(crate) async fn pump(
    reader: impl AsyncRead + Unpin,
    instance: Arc<str>,
    stream: Stream,
    file: LogFile,
    tx: broadcast::Sender<LogLine>,
) {
    let mut reader = BufReader::with_capacity(BATCH, reader);
    let mut buf = Vec::with_capacity(1024);
    // The lines already read go to the file in one write: a chatty app costs one file write
    // (a blocking-pool hop) per buffer of output, not per line.
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        buf.clear();
        match AsyncReadExt::take(&mut reader, MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "instance output stream ended with an error");
                break;
            }
        };
        if !buf.ends_with(b"\n") {
            buf.push(b'\n');
        }
        if let Some(stamp) = file.settings.date_format.as_deref().and_then(timestamp) {
            buf.splice(0..0, stamp.into_bytes());
        }
        batch.extend_from_slice(&buf);
        if tx.receiver_count() > 0 {
            let text = String::from_utf8_lossy(&buf);
            let _ = tx.send(LogLine {
                instance: Arc::clone(&instance),
                stream,
                line: text.trim_end_matches(['\n', '\r']).to_owned(),
            });
        }
        // More whole lines already read: take them before writing (no waiting for more).
        if batch.len() < BATCH && reader.buffer().contains(&b'\n') {
            continue;
        }
        file.write_line(&batch).await;
        batch.clear();
    }
    if !batch.is_empty() {
        file.write_line(&batch).await;
    }
    file.flush().await;
}

/// Now, in `format` and the local time zone, followed by ": " (as PM2's `time`); `None` when
/// the format fails (it was checked when the config was read).
fn timestamp(format: &str) -> Option<String> {
    let mut stamp = jiff::fmt::strtime::format(format, &jiff::Zoned::now()).ok()?;
    stamp.push_str(": ");
    Some(stamp)
}

/// The last `n` lines of a log, continued into its rotated files (`.1`, `.2`, ...) when the
/// current one holds fewer, as `pm2 logs --lines` shows them right after a rotation.
pub async fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let mut lines = tail_of_file(path, n).await;
    for generation in 1..=9 {
        if lines.len() >= n {
            break;
        }
        let mut rotated = path.as_os_str().to_owned();
        rotated.push(format!(".{generation}"));
        let rotated = std::path::PathBuf::from(rotated);
        if !rotated.exists() {
            break;
        }
        let mut older = tail_of_file(&rotated, n - lines.len()).await;
        older.append(&mut lines);
        lines = older;
    }
    lines
}

/// The last `n` lines of a file, read backwards from its end in blocks (a 1 GiB log costs only
/// the blocks that hold those lines; at most `MAX_TAIL_BYTES` are read).
async fn tail_of_file(path: &Path, n: usize) -> Vec<String> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    const BLOCK: u64 = 64 * 1024;
    const MAX_TAIL_BYTES: u64 = 16 * 1024 * 1024;
    if n == 0 {
        return Vec::new();
    }
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return Vec::new();
    };
    let Ok(len) = file.metadata().await.map(|m| m.len()) else {
        return Vec::new();
    };
    let floor = len.saturating_sub(MAX_TAIL_BYTES);
    let mut start = len;
    // Blocks from the end backwards, joined once at the end.
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0;
    // n lines need n newlines before them (the last line may end with one of its own).
    while start > floor && newlines <= n {
        let from = start.saturating_sub(BLOCK).max(floor);
        let mut block = vec![0u8; usize::try_from(start - from).unwrap_or(0)];
        if file.seek(std::io::SeekFrom::Start(from)).await.is_err()
            || file.read_exact(&mut block).await.is_err()
        {
            break;
        }
        newlines += block.iter().filter(|b| **b == b'\n').count();
        blocks.push(block);
        start = from;
    }
    let tail: Vec<u8> = blocks.into_iter().rev().flatten().collect();
    let text = String::from_utf8_lossy(&tail);
    let mut lines: Vec<&str> = text.lines().collect();
    // Unless the file was read from its start, the first line may be cut: not a whole line.
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tail_reads_the_last_lines_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.log");
        // ~1.3 MB: many blocks; lines of varying length cross block boundaries.
        let text: String = (0..60_000)
            .map(|i| format!("line {i} {}\n", "x".repeat(i % 13)))
            .collect();
        std::fs::write(&path, &text).unwrap();
        let last = tail_lines(&path, 3).await;
        assert_eq!(last.len(), 3);
        assert!(last[0].starts_with("line 59997 "), "{last:?}");
        assert!(last[2].starts_with("line 59999 "), "{last:?}");
        let many = tail_lines(&path, 10_000).await;
        assert_eq!(many.len(), 10_000);
        assert!(many[0].starts_with("line 50000 "), "{:?}", &many[0]);
        // A file shorter than asked: every line; no trailing newline: the last line still.
        std::fs::write(&path, "a\nb\nc").unwrap();
        assert_eq!(tail_lines(&path, 10).await, vec!["a", "b", "c"]);
        assert!(tail_lines(&path, 0).await.is_empty());
        assert!(tail_lines(&dir.path().join("none"), 5).await.is_empty());
    }

    #[tokio::test]
    async fn tail_goes_on_into_the_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w-1.out.log");
        std::fs::write(dir.path().join("w-1.out.log.2"), "l1\nl2\n").unwrap();
        std::fs::write(dir.path().join("w-1.out.log.1"), "l3\nl4\n").unwrap();
        std::fs::write(&path, "l5\n").unwrap();
        assert_eq!(tail_lines(&path, 2).await, ["l4", "l5"]);
        assert_eq!(tail_lines(&path, 4).await, ["l2", "l3", "l4", "l5"]);
        assert_eq!(tail_lines(&path, 9).await.len(), 5);
    }

    #[tokio::test]
    async fn reopen_writes_to_a_new_file_under_the_name_after_a_move() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            dir: dir.path().to_path_buf(),
            max_size: 1 << 20,
            max_files: 2,
            date_format: None,
        };
        let file = LogFile::new(&settings, "web-1", Stream::Out);
        let base = log_path(dir.path(), "web-1", Stream::Out);
        file.write_line(b"before\n").await;
        file.flush().await;
        let moved = dir.path().join("moved.log");
        std::fs::rename(&base, &moved).unwrap();
        reopen_logs();
        file.write_line(b"after\n").await;
        file.flush().await;
        assert_eq!(std::fs::read_to_string(&base).unwrap(), "after\n");
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), "before\n");
    }

    #[tokio::test]
    async fn a_log_file_removed_by_an_operator_comes_back_at_the_next_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            dir: dir.path().to_path_buf(),
            max_size: 100,
            max_files: 2,
            date_format: None,
        };
        let file = LogFile::new(&settings, "web-1", Stream::Out);
        let base = log_path(dir.path(), "web-1", Stream::Out);
        for i in 0..3 {
            file.write_line(format!("line {i:04}\n").as_bytes()).await;
        }
        std::fs::remove_file(&base).unwrap();
        for i in 3..30 {
            file.write_line(format!("line {i:04}\n").as_bytes()).await;
        }
        file.flush().await;
        let current = std::fs::read_to_string(&base).expect("the log file is written again");
        assert!(current.ends_with("line 0029\n"), "{current}");
    }

    #[tokio::test]
    async fn date_format_stamps_each_line_in_the_file_and_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            dir: dir.path().to_path_buf(),
            max_size: 1 << 20,
            max_files: 1,
            date_format: Some(Arc::from("[%Y]")),
        };
        let (tx, mut rx) = broadcast::channel(10);
        let file = LogFile::new(&settings, "web-1", Stream::Err);
        let year = jiff::Zoned::now().year();
        pump(&b"one\ntwo"[..], Arc::from("web-1"), Stream::Err, file, tx).await;
        let written = std::fs::read_to_string(log_path(dir.path(), "web-1", Stream::Err)).unwrap();
        // Lines straddling New Year's midnight are not a concern of a test run: years agree.
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines, [format!("[{year}]: one"), format!("[{year}]: two")]);
        assert_eq!(rx.try_recv().unwrap().line, format!("[{year}]: one"));
        assert_eq!(rx.try_recv().unwrap().line, format!("[{year}]: two"));
    }

    #[tokio::test]
    async fn rotates_by_size_and_keeps_max_files() {
        let dir = std::env::temp_dir().join(format!("herd-logs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let settings = LogSettings {
            dir: dir.clone(),
            max_size: 100,
            max_files: 2,
            date_format: None,
        };
        let input: Vec<u8> = (0..50)
            .flat_map(|i| format!("line {i:04}\n").into_bytes())
            .collect();
        let (tx, mut rx) = broadcast::channel(100);
        let file = LogFile::new(&settings, "web-1", Stream::Out);
        let pumped = pump(&input[..], Arc::from("web-1"), Stream::Out, file, tx);
        pumped.await;
        let first = rx.try_recv().unwrap();
        assert_eq!(
            (first.line.as_str(), first.stream),
            ("line 0000", Stream::Out)
        );
        let base = log_path(&dir, "web-1", Stream::Out);
        let current = std::fs::read_to_string(&base).unwrap();
        assert!(current.len() <= 100);
        assert!(current.ends_with("line 0049\n"));
        assert!(PathBuf::from(format!("{}.1", base.display())).exists());
        assert!(PathBuf::from(format!("{}.2", base.display())).exists());
        assert!(!PathBuf::from(format!("{}.3", base.display())).exists());
        assert_eq!(tail_lines(&base, 2).await, vec!["line 0048", "line 0049"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
