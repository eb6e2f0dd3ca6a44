//! The recordings directory: one media file and one small JSON report per recording
//! (`{id}.webm`, `{id}.json`, the report being the same `RecordingReport` the app is
//! sent), the in-memory index the HTTP handlers read, and which reports the app has not
//! been sent yet.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use privatehub_protocol::recordings::{
    RecordingContainer, RecordingId, RecordingReport, RecordingState,
};

#[derive(Default)]
struct Index {
    reports: BTreeMap<RecordingId, RecordingReport>,
    /// Changed since the app last accepted a sync.
    unsent: BTreeSet<RecordingId>,
    /// Asked to be deleted: never served again, whatever the file's state.
    hidden: BTreeSet<RecordingId>,
}

pub struct Catalog {
    dir: PathBuf,
    index: Mutex<Index>,
}

impl Catalog {
    /// Reads every report in `dir` (created if missing); leftovers of an interrupted
    /// report write are removed.
    pub fn open(dir: &Path) -> io::Result<Catalog> {
        std::fs::create_dir_all(dir)?;
        let mut index = Index::default();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.ends_with(".json.tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            let Ok(id) = RecordingId::parse(stem) else {
                continue;
            };
            match std::fs::read(&path)
                .map(|bytes| serde_json::from_slice::<RecordingReport>(&bytes))
            {
                Ok(Ok(report)) if report.id == id => {
                    index.unsent.insert(id.clone());
                    index.reports.insert(id, report);
                }
                _ => {
                    tracing::warn!(path = %path.display(), "recordings: an unreadable report was skipped")
                }
            }
        }
        Ok(Catalog {
            dir: dir.to_owned(),
            index: Mutex::new(index),
        })
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn media_path(&self, id: &RecordingId, container: RecordingContainer) -> PathBuf {
        self.dir.join(format!("{id}.{}", container.extension()))
    }

    /// Records a report (in memory at once, on disk by write-and-rename) for the app.
    pub fn update(&self, report: RecordingReport) -> io::Result<()> {
        let id = report.id.clone();
        let written = self.write_report(&report);
        let mut index = self.index();
        index.unsent.insert(id.clone());
        index.reports.insert(id, report);
        written
    }

    fn write_report(&self, report: &RecordingReport) -> io::Result<()> {
        let path = self.dir.join(format!("{}.json", report.id));
        let temporary = self.dir.join(format!("{}.json.tmp", report.id));
        let bytes = serde_json::to_vec(report).map_err(io::Error::other)?;
        std::fs::write(&temporary, bytes)?;
        std::fs::rename(&temporary, &path)
    }

    /// Stops serving these at once (their files are deleted by the recorder thread).
    pub fn hide(&self, ids: &[RecordingId]) {
        let mut index = self.index();
        // Bounded by what exists: an unknown id is nothing to hide.
        for id in ids {
            if index.reports.contains_key(id) {
                index.hidden.insert(id.clone());
            }
        }
    }

    /// The report of a recording that may be served.
    pub fn servable(&self, id: &RecordingId) -> Option<RecordingReport> {
        let index = self.index();
        if index.hidden.contains(id) {
            return None;
        }
        index
            .reports
            .get(id)
            .filter(|r| r.state != RecordingState::Deleted)
            .cloned()
    }

    pub fn get(&self, id: &RecordingId) -> Option<RecordingReport> {
        self.index().reports.get(id).cloned()
    }

    pub fn all(&self) -> Vec<RecordingReport> {
        self.index().reports.values().cloned().collect()
    }

    /// Up to `most` reports the app has not accepted yet; they stay unsent until
    /// [`Catalog::mark_sent`].
    pub fn unsent(&self, most: usize) -> Vec<RecordingReport> {
        let index = self.index();
        index
            .unsent
            .iter()
            .filter_map(|id| index.reports.get(id).cloned())
            .take(most)
            .collect()
    }

    /// The app accepted these reports; one changed since is sent again.
    pub fn mark_sent(&self, sent: &[RecordingReport]) {
        let mut index = self.index();
        for report in sent {
            if index.reports.get(&report.id) == Some(report) {
                index.unsent.remove(&report.id);
            }
        }
    }

    /// Closed recordings to delete, oldest first: those older than `max_age_ms`, then
    /// as many more as bring the total under `max_total_bytes`.
    pub fn retention_victims(
        &self,
        now_ms: i64,
        max_age_ms: Option<i64>,
        max_total_bytes: Option<u64>,
    ) -> Vec<RecordingReport> {
        let index = self.index();
        let mut closed: Vec<&RecordingReport> = index
            .reports
            .values()
            .filter(|r| matches!(r.state, RecordingState::Finished | RecordingState::Stopped))
            .collect();
        closed.sort_by_key(|r| r.started_at_ms);
        let mut total: u64 = index
            .reports
            .values()
            .filter(|r| r.state != RecordingState::Deleted)
            .map(|r| r.bytes)
            .sum();
        let mut victims = Vec::new();
        for report in closed {
            let too_old = max_age_ms.is_some_and(|age| now_ms - report.started_at_ms > age);
            let too_big = max_total_bytes.is_some_and(|most| total > most);
            if !too_old && !too_big {
                continue;
            }
            total = total.saturating_sub(report.bytes);
            victims.push(report.clone());
        }
        victims
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use privatehub_protocol::LiveId;

    fn report(n: u8, started_at_ms: i64, bytes: u64, state: RecordingState) -> RecordingReport {
        RecordingReport {
            id: RecordingId::from_random([n; 16]),
            live_id: LiveId(i64::from(n)),
            started_at_ms,
            duration_ms: 1_000,
            bytes,
            container: RecordingContainer::Webm,
            state,
        }
    }

    #[test]
    fn reports_survive_a_restart_and_are_all_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        catalog
            .update(report(1, 10, 100, RecordingState::Finished))
            .unwrap();
        let sent = catalog.unsent(10);
        assert_eq!(sent.len(), 1);
        catalog.mark_sent(&sent);
        assert!(catalog.unsent(10).is_empty());
        std::fs::write(dir.path().join("junk.json"), b"{").unwrap();
        std::fs::write(
            dir.path().join(format!("{}.json", "ab".repeat(16))),
            b"not json",
        )
        .unwrap();
        let reopened = Catalog::open(dir.path()).unwrap();
        assert_eq!(reopened.unsent(10), sent);
    }

    #[test]
    fn retention_takes_the_oldest_closed_recordings_first() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        catalog
            .update(report(1, 1_000, 400, RecordingState::Finished))
            .unwrap();
        catalog
            .update(report(2, 2_000, 400, RecordingState::Stopped))
            .unwrap();
        catalog
            .update(report(3, 3_000, 400, RecordingState::Finished))
            .unwrap();
        catalog
            .update(report(4, 500, 400, RecordingState::Recording))
            .unwrap();
        let by_size = catalog.retention_victims(4_000, None, Some(1_000));
        let ids: Vec<LiveId> = by_size.iter().map(|r| r.live_id).collect();
        assert_eq!(ids, vec![LiveId(1), LiveId(2)], "never the one in progress");
        let by_age = catalog.retention_victims(4_000, Some(2_500), None);
        assert_eq!(
            by_age.iter().map(|r| r.live_id).collect::<Vec<_>>(),
            vec![LiveId(1)]
        );
        assert!(catalog.retention_victims(4_000, None, None).is_empty());
    }
}
