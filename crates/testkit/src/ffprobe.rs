//! ffprobe, the independent reader of the media files the media server records: codecs,
//! duration and keyframes, for the tests of recordings and replays.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// What ffprobe reads in a recording.
#[derive(Debug)]
pub struct Probe {
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    /// The video track's picture size.
    pub video_size: Option<(u64, u64)>,
    /// The container's duration, seconds.
    pub duration: f64,
    /// Times of the video keyframes (seconds): where a seek can start decoding.
    pub keyframes: Vec<f64>,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keyframes: Vec<String> = self.keyframes.iter().map(|at| format!("{at:.2}")).collect();
        write!(
            f,
            "{} {:?} + {}, {:.3} s, video keyframes at [{}] s",
            self.video_codec.as_deref().unwrap_or("no video"),
            self.video_size,
            self.audio_codec.as_deref().unwrap_or("no audio"),
            self.duration,
            keyframes.join(", ")
        )
    }
}

/// Runs ffprobe (Debian's ffmpeg, installed by `scripts/install-test-deps`) on `file`;
/// panics if it cannot read it.
pub fn ffprobe(file: &Path) -> Probe {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,width,height:format=duration",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .expect("run ffprobe (scripts/install-test-deps installs ffmpeg)");
    assert!(
        output.status.success(),
        "ffprobe {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let read: Value = serde_json::from_slice(&output.stdout).expect("ffprobe's JSON");
    let codec = |kind: &str| {
        read["streams"]
            .as_array()?
            .iter()
            .find(|stream| stream["codec_type"] == kind)?["codec_name"]
            .as_str()
            .map(str::to_owned)
    };
    let video_size = read["streams"].as_array().and_then(|streams| {
        let video = streams
            .iter()
            .find(|stream| stream["codec_type"] == "video")?;
        Some((video["width"].as_u64()?, video["height"].as_u64()?))
    });
    Probe {
        video_size,
        keyframes: video_keyframes(file),
        video_codec: codec("video"),
        audio_codec: codec("audio"),
        duration: read["format"]["duration"]
            .as_str()
            .and_then(|text| text.parse().ok())
            .unwrap_or(f64::NAN),
    }
}

/// The times of the video keyframes in `file`, from its packets (nothing decoded).
pub fn video_keyframes(file: &Path) -> Vec<f64> {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,flags",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (time, flags) = line.split_once(',')?;
            flags.starts_with('K').then(|| time.parse().ok()).flatten()
        })
        .collect()
}
