//! The decision archive: reports with their facts appended to rotated JSONL files, for a
//! backtest over a longer history than the retained reports.
//!
//! One line per report, in `decisions.jsonl`; when it would grow past its size, it is renamed
//! `decisions-<UTC time>.jsonl` and the oldest rotated files beyond the kept count are
//! removed. Appending happens on a thread of its own behind a bounded channel, so a slow disk
//! never holds a worker: when the channel is full the report is left out of the archive (it
//! stays in the decision log) and a warning says so. The files hold customer data, like the
//! reports: they are created readable by their owner only.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::SystemTime;

use crate::workflow::DecisionReport;
use crate::workflow::report::rfc3339;

/// The file being appended to.
const CURRENT: &str = "decisions.jsonl";
/// Rotated files start with this and end with `.jsonl`.
const PREFIX: &str = "decisions";
/// Reports waiting to be written at most.
const QUEUED: usize = 1_024;

/// Size and count of the archive's files.
#[derive(Clone, Copy, Debug)]
pub struct ArchiveLimits {
    /// Bytes a file reaches before it is rotated.
    pub max_file_bytes: u64,
    /// Rotated files kept besides the current one.
    pub max_files: usize,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: 64 * 1024 * 1024,
            max_files: 20,
        }
    }
}

/// An archive that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("failed to open the decision archive {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read the decision archive {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The writing end of an archive directory.
pub struct DecisionArchive {
    lines: SyncSender<String>,
}

impl DecisionArchive {
    /// Creates the directory if needed and starts the writer thread.
    pub fn open(dir: &Path, limits: ArchiveLimits) -> Result<Self, ArchiveError> {
        let open_error = |source| ArchiveError::Open {
            path: dir.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(open_error)?;
        let mut writer = Writer::open(dir.to_owned(), limits).map_err(open_error)?;
        let (lines, received) = mpsc::sync_channel::<String>(QUEUED);
        std::thread::Builder::new()
            .name("decision-archive".into())
            .spawn(move || {
                for line in received {
                    if let Err(error) = writer.append(&line) {
                        tracing::warn!(error = %error, "a decision was not archived");
                    }
                }
            })
            .map_err(open_error)?;
        Ok(Self { lines })
    }

    /// Queues a report for the archive; only reports with facts are worth replaying.
    pub fn append(&self, report: &DecisionReport) {
        if report.facts.is_none() {
            return;
        }
        let Ok(line) = serde_json::to_string(report) else {
            return;
        };
        match self.lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!("the decision archive is behind: a decision was not archived")
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::warn!("the decision archive stopped: a decision was not archived")
            }
        }
    }
}

/// The archive's files, appended to and rotated on one thread.
struct Writer {
    dir: PathBuf,
    limits: ArchiveLimits,
    file: File,
    size: u64,
}

impl Writer {
    fn open(dir: PathBuf, limits: ArchiveLimits) -> std::io::Result<Self> {
        let file = open_current(&dir)?;
        let size = file.metadata()?.len();
        Ok(Self {
            dir,
            limits,
            file,
            size,
        })
    }

    fn append(&mut self, line: &str) -> std::io::Result<()> {
        let needed = line.len() as u64 + 1;
        if self.size > 0 && self.size + needed > self.limits.max_file_bytes {
            self.rotate()?;
        }
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.file.write_all(&bytes)?;
        self.size += needed;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let stamp = rfc3339::format(SystemTime::now()).replace(':', "");
        let mut target = self.dir.join(format!("{PREFIX}-{stamp}.jsonl"));
        let mut n = 1;
        while target.exists() {
            target = self.dir.join(format!("{PREFIX}-{stamp}-{n}.jsonl"));
            n += 1;
        }
        fs::rename(self.dir.join(CURRENT), &target)?;
        self.file = open_current(&self.dir)?;
        self.size = 0;
        let mut rotated: Vec<PathBuf> = archive_files(&self.dir)?
            .into_iter()
            .filter(|path| path.file_name().is_some_and(|n| n != CURRENT))
            .collect();
        rotated.sort();
        let excess = rotated.len().saturating_sub(self.limits.max_files);
        for old in rotated.into_iter().take(excess) {
            fs::remove_file(old)?;
        }
        Ok(())
    }
}

fn open_current(dir: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(dir.join(CURRENT))
}

/// The archive's files in `dir`, rotated and current.
fn archive_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(PREFIX) && name.ends_with(".jsonl") && path.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

/// What reading an archive found.
#[derive(Debug, Default)]
pub struct ArchiveContents {
    /// Every report read, in no particular order.
    pub reports: Vec<DecisionReport>,
    /// Lines that were not a report (a torn last line, another version's shape).
    pub unreadable: usize,
}

/// Reads every report of an archive directory, or of one archive file.
pub fn read(path: &Path) -> Result<ArchiveContents, ArchiveError> {
    let read_error = |source| ArchiveError::Read {
        path: path.display().to_string(),
        source,
    };
    let files = if path.is_dir() {
        archive_files(path).map_err(read_error)?
    } else {
        vec![path.to_owned()]
    };
    let mut contents = ArchiveContents::default();
    for file in files {
        let reader = BufReader::new(File::open(&file).map_err(read_error)?);
        for line in reader.lines() {
            let line = line.map_err(read_error)?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<DecisionReport>(&line) {
                Ok(report) => contents.reports.push(report),
                Err(_) => contents.unreadable += 1,
            }
        }
    }
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::{Settings, SettingsSource};
    use crate::event::TicketEvent;
    use crate::workflow::Run;
    use crate::workflow::facts::Facts;

    fn report(ticket: &str) -> DecisionReport {
        let settings =
            Settings::from_spec(Default::default(), SettingsSource::Environment, 1).unwrap();
        let job = Run {
            id: 0,
            event: TicketEvent::manual(ticket.to_owned()),
            attempt: 1,
            enqueued_at: Instant::now(),
        };
        let mut report = DecisionReport::start(&job, &settings);
        report.facts = Some(Facts {
            ticket_id: ticket.to_owned(),
            subject: "Ma facture".into(),
            ..Facts::default()
        });
        report.finish()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("deskhook-archive-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn reports_are_appended_rotated_and_read_back() {
        let dir = scratch("rotate");
        // Lines differ by a few bytes (times, durations): three fit in a file, four never do.
        let line = serde_json::to_string(&report("1")).unwrap().len() as u64 + 1;
        let limits = ArchiveLimits {
            max_file_bytes: line * 3 + line / 2,
            max_files: 2,
        };
        let archive = DecisionArchive::open(&dir, limits).unwrap();
        for n in 0..10 {
            archive.append(&report(&n.to_string()));
        }
        let mut without_facts = report("x");
        without_facts.facts = None;
        archive.append(&without_facts);
        // 10 reports of 3 per file: the current file ends with the tenth alone.
        wait_for("the tenth report", || {
            read(&dir.join(CURRENT)).is_ok_and(|c| c.reports.iter().any(|r| r.ticket_id == "9"))
        });
        let files = archive_files(&dir).unwrap();
        assert_eq!(
            files.len(),
            3,
            "the current file and two rotated ones: {files:?}"
        );
        let contents = read(&dir).unwrap();
        let mut tickets: Vec<String> = contents.reports.into_iter().map(|r| r.ticket_id).collect();
        tickets.sort();
        assert_eq!(
            tickets,
            ["3", "4", "5", "6", "7", "8", "9"],
            "the oldest file was removed"
        );
        assert_eq!(contents.unreadable, 0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(CURRENT))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "only the owner reads customer data");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_line_is_counted_not_fatal() {
        let dir = scratch("torn");
        fs::create_dir_all(&dir).unwrap();
        let good = serde_json::to_string(&report("1")).unwrap();
        fs::write(
            dir.join(CURRENT),
            format!("{good}\n{{\"job_id\": 3, \"tick"),
        )
        .unwrap();
        let contents = read(&dir).unwrap();
        assert_eq!(contents.reports.len(), 1);
        assert_eq!(contents.unreadable, 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
