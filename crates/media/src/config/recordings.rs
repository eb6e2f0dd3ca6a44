//! The recording settings (`MEDIA_RECORDINGS*`).

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, invalid, parse_bool, parse_num};

/// Default of `MEDIA_RECORDINGS_DIR`.
pub const DEFAULT_RECORDINGS_DIR: &str = "data/recordings";
/// Default of `MEDIA_RECORDINGS_MIN_FREE_MB`: below this much free space on its file
/// system no recording is written.
pub const DEFAULT_MIN_FREE_MB: u64 = 1024;
/// Default of `MEDIA_RECORDINGS_SEEK_POINT_SECONDS`: a seek decodes at most this much
/// video; one keyframe more per interval costs a few percent of the live's bitrate.
pub const DEFAULT_SEEK_POINT_SECONDS: u64 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSettings {
    /// `MEDIA_RECORDINGS`: record lives whose creator has recording on (default on).
    pub enabled: bool,
    /// `MEDIA_RECORDINGS_DIR`: where recordings are written.
    pub dir: PathBuf,
    /// `MEDIA_RECORDINGS_MAX_AGE_DAYS`: recordings older than this are deleted; 0 keeps
    /// them (the default).
    pub max_age: Option<Duration>,
    /// `MEDIA_RECORDINGS_MAX_TOTAL_MB`: the oldest recordings are deleted while all of
    /// them together hold more; 0 for no limit (the default).
    pub max_total_bytes: Option<u64>,
    /// `MEDIA_RECORDINGS_MIN_FREE_MB`: recordings stop (and none start) while the file
    /// system has less free space.
    pub min_free_bytes: u64,
    /// `MEDIA_RECORDINGS_SEEK_POINT_SECONDS`: a recorded live's publisher is asked for a
    /// keyframe when it sent none this long, so replays seek quickly; `None` (0) never.
    pub seek_point_every: Option<Duration>,
}

impl RecordingSettings {
    /// For tests: recording on, into `dir`, no retention, no free-space floor.
    pub fn for_tests(dir: PathBuf) -> Self {
        RecordingSettings {
            enabled: true,
            dir,
            max_age: None,
            max_total_bytes: None,
            min_free_bytes: 0,
            seek_point_every: Some(Duration::from_secs(DEFAULT_SEEK_POINT_SECONDS)),
        }
    }

    pub(super) fn from_lookup(
        get: impl Fn(&[&'static str]) -> Option<(&'static str, String)>,
    ) -> Result<Self, ConfigError> {
        let enabled = match get(&["MEDIA_RECORDINGS"]) {
            Some((var, value)) => parse_bool(var, &value)?,
            None => true,
        };
        let dir = get(&["MEDIA_RECORDINGS_DIR"]).map_or_else(
            || PathBuf::from(DEFAULT_RECORDINGS_DIR),
            |(_, v)| PathBuf::from(v),
        );
        let max_age_days: u64 = parse_num(get(&["MEDIA_RECORDINGS_MAX_AGE_DAYS"]), 0)?;
        if max_age_days > 36_500 {
            return Err(invalid(
                "MEDIA_RECORDINGS_MAX_AGE_DAYS",
                max_age_days,
                "at most 36500 days (0 keeps recordings)",
            ));
        }
        let max_total_mb: u64 = parse_num(get(&["MEDIA_RECORDINGS_MAX_TOTAL_MB"]), 0)?;
        let min_free_mb: u64 =
            parse_num(get(&["MEDIA_RECORDINGS_MIN_FREE_MB"]), DEFAULT_MIN_FREE_MB)?;
        if max_total_mb > u64::MAX >> 21 || min_free_mb > u64::MAX >> 21 {
            return Err(invalid(
                "MEDIA_RECORDINGS_MAX_TOTAL_MB",
                max_total_mb,
                "too large",
            ));
        }
        let seek_point_seconds: u64 = parse_num(
            get(&["MEDIA_RECORDINGS_SEEK_POINT_SECONDS"]),
            DEFAULT_SEEK_POINT_SECONDS,
        )?;
        if seek_point_seconds > 3600 {
            return Err(invalid(
                "MEDIA_RECORDINGS_SEEK_POINT_SECONDS",
                seek_point_seconds,
                "at most 3600 (0: never ask for a keyframe)",
            ));
        }
        Ok(RecordingSettings {
            seek_point_every: (seek_point_seconds > 0)
                .then(|| Duration::from_secs(seek_point_seconds)),
            enabled,
            dir,
            max_age: (max_age_days > 0).then(|| Duration::from_secs(max_age_days * 86_400)),
            max_total_bytes: (max_total_mb > 0).then_some(max_total_mb << 20),
            min_free_bytes: min_free_mb << 20,
        })
    }
}
