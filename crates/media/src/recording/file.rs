//! A recording's file, whichever container the live's video codec calls for.

use std::io;
use std::path::Path;

use privatehub_protocol::recordings::RecordingContainer;

use super::mp4::{self, H264Track, Mp4File};
use super::webm::{self, Block, Repaired, Tracks, WebmFile};

/// The video track a file is begun with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoHeader {
    Vp8 { width: u16, height: u16 },
    H264(H264Track),
}

impl VideoHeader {
    pub fn size(&self) -> (u16, u16) {
        match self {
            VideoHeader::Vp8 { width, height } => (*width, *height),
            VideoHeader::H264(track) => (track.width, track.height),
        }
    }
}

pub enum RecordingFile {
    Webm(WebmFile),
    // Boxed: it holds the movie header it rewrites on close.
    Mp4(Box<Mp4File>),
}

impl RecordingFile {
    /// WebM for VP8 or audio only, fragmented MP4 for H.264.
    pub fn create(path: &Path, video: Option<&VideoHeader>, audio: bool) -> io::Result<Self> {
        Ok(match video {
            Some(VideoHeader::H264(track)) => {
                RecordingFile::Mp4(Box::new(Mp4File::create(path, Some(track), audio)?))
            }
            Some(VideoHeader::Vp8 { width, height }) => RecordingFile::Webm(WebmFile::create(
                path,
                Tracks {
                    video: Some((*width, *height)),
                    audio,
                },
            )?),
            None => RecordingFile::Webm(WebmFile::create(path, Tracks { video: None, audio })?),
        })
    }

    pub fn len(&self) -> u64 {
        match self {
            RecordingFile::Webm(file) => file.len(),
            RecordingFile::Mp4(file) => file.len(),
        }
    }

    pub fn duration_ms(&self) -> u64 {
        match self {
            RecordingFile::Webm(file) => file.duration_ms(),
            RecordingFile::Mp4(file) => file.duration_ms(),
        }
    }

    pub fn append_cluster(&mut self, start_ms: u64, blocks: &[Block]) -> io::Result<()> {
        match self {
            RecordingFile::Webm(file) => file.append_cluster(start_ms, blocks),
            RecordingFile::Mp4(file) => file.append_cluster(start_ms, blocks),
        }
    }

    /// Writes the seek index and duration; the file's final length.
    pub fn close(self) -> io::Result<u64> {
        match self {
            RecordingFile::Webm(file) => file.close(),
            RecordingFile::Mp4(file) => file.close(),
        }
    }
}

/// Closes a file a killed server left open (see each container's `repair`).
pub fn repair(path: &Path, container: RecordingContainer) -> io::Result<Repaired> {
    match container {
        RecordingContainer::Webm => webm::repair(path),
        RecordingContainer::Mp4 => mp4::repair(path),
    }
}

/// Whether `bytes` read as a recording of `container` that the start-up repair could
/// close; never panics (the fuzz entry point feeds it anything).
pub fn scans(bytes: &[u8], container: RecordingContainer) -> bool {
    match container {
        RecordingContainer::Webm => webm::scans(bytes),
        RecordingContainer::Mp4 => mp4::scans(bytes),
    }
}
