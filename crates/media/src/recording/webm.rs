//! The WebM file of one recording: written cluster by cluster as the live goes, so a
//! file cut short (the server killed) plays up to its last whole cluster; closed with a
//! seek index (Cues) and a duration, which `repair` also adds to a cut file.
//!
//! Layout (positions inside the Segment are relative to its data, as Matroska wants):
//! ```text
//! EBML header | Segment id, 8-byte size | Info, SeekHead, Void (HEAD_RESERVE bytes) |
//! Tracks | Cluster... | Cues
//! ```
//! The reserved head is rewritten in place when the file is closed (Duration in Info,
//! the Cues' position in SeekHead), so nothing after it moves. Elements are encoded by
//! `webm-iterable`; the few bytes written by hand are the Void filler and sizes patched
//! in place, which that crate has no call for.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use webm_iterable::WebmWriter;
use webm_iterable::WriteOptions;
use webm_iterable::matroska_spec::{Master, MatroskaSpec};

/// Track numbers; fixed, so the repair pass knows them without parsing Tracks.
pub const VIDEO_TRACK: u64 = 1;
pub const AUDIO_TRACK: u64 = 2;

/// Bytes reserved at the start of the Segment for Info and SeekHead.
const HEAD_RESERVE: usize = 256;
const SEGMENT_ID: [u8; 4] = [0x18, 0x53, 0x80, 0x67];
const CLUSTER_ID: u32 = 0x1F43_B675;
const CUES_ID: u32 = 0x1C53_BB6B;
const TIMESTAMP_ID: u32 = 0xE7;
const SIMPLE_BLOCK_ID: u32 = 0xA3;
const VOID_ID: u8 = 0xEC;
/// An 8-byte EBML size of "unknown" (a Segment still being written).
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
/// Opus: the decoder's pre-roll after a seek (80 ms, as the WebM guidelines say).
const OPUS_SEEK_PRE_ROLL_NS: u64 = 80_000_000;
/// Opus: samples at 48 kHz the decoder drops at the start (libopus' look-ahead).
const OPUS_PRE_SKIP: u16 = 312;

/// The tracks a file declares; fixed once its header is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracks {
    /// VP8 picture size, if the live has video.
    pub video: Option<(u16, u16)>,
    pub audio: bool,
}

/// One coded frame placed on the recording's timeline.
#[derive(Debug, Clone)]
pub struct Block {
    pub track: u64,
    pub at_ms: u64,
    pub keyframe: bool,
    pub data: Vec<u8>,
}

/// A seek point: a cluster that starts with a video keyframe (every cluster when the
/// file has no video).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cue {
    pub at_ms: u64,
    /// Position of the cluster, relative to the Segment's data.
    pub cluster_position: u64,
    pub track: u64,
}

/// An open recording file.
pub struct WebmFile {
    file: File,
    /// Bytes known good (the file is cut back to this after a failed write).
    len: u64,
    segment_data_at: u64,
    cues: Vec<Cue>,
    last_ms: u64,
    has_video: bool,
}

fn encode(tags: &[MatroskaSpec]) -> io::Result<Vec<u8>> {
    let mut writer = WebmWriter::new(Vec::new());
    for tag in tags {
        writer.write(tag).map_err(io::Error::other)?;
    }
    writer.into_inner().map_err(io::Error::other)
}

/// Encodes elements that live inside the Segment: the writer checks every element's
/// place, so they are written after an open Segment whose bytes are then left out.
fn encode_in_segment(tags: &[MatroskaSpec]) -> io::Result<Vec<u8>> {
    let mut writer = WebmWriter::new(Vec::new());
    writer
        .write_advanced(
            &MatroskaSpec::Segment(Master::Start),
            WriteOptions::is_unknown_sized_element(),
        )
        .map_err(io::Error::other)?;
    for tag in tags {
        writer.write(tag).map_err(io::Error::other)?;
    }
    let bytes = writer.get_ref();
    let opening = match read_size(bytes, SEGMENT_ID.len()) {
        Some((_, size_len)) if bytes.starts_with(&SEGMENT_ID) => SEGMENT_ID.len() + size_len,
        _ => return Err(io::Error::other("unexpected WebM writer output")),
    };
    Ok(bytes[opening..].to_vec())
}

fn master(
    tag: fn(Master<MatroskaSpec>) -> MatroskaSpec,
    children: Vec<MatroskaSpec>,
) -> MatroskaSpec {
    tag(Master::Full(children))
}

/// An EBML Void element of exactly `total` bytes (at least 9), with an 8-byte size.
fn void(total: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(total);
    out.push(VOID_ID);
    out.extend_from_slice(&size_field(total as u64 - 9));
    out.resize(total, 0);
    out
}

/// An 8-byte EBML size field holding `size`.
fn size_field(size: u64) -> [u8; 8] {
    let mut field = size.to_be_bytes();
    field[0] = 0x01;
    field
}

fn ebml_header() -> io::Result<Vec<u8>> {
    encode(&[master(
        MatroskaSpec::Ebml,
        vec![
            MatroskaSpec::EbmlVersion(1),
            MatroskaSpec::EbmlReadVersion(1),
            MatroskaSpec::EbmlMaxIdLength(4),
            MatroskaSpec::EbmlMaxSizeLength(8),
            MatroskaSpec::DocType("webm".into()),
            MatroskaSpec::DocTypeVersion(4),
            MatroskaSpec::DocTypeReadVersion(2),
        ],
    )])
}

/// Info and SeekHead, padded to [`HEAD_RESERVE`]: without `closed` while recording, with
/// the duration and the Cues' position once closed.
fn head(closed: Option<(u64, u64)>) -> io::Result<Vec<u8>> {
    let mut info = vec![
        MatroskaSpec::TimestampScale(1_000_000),
        MatroskaSpec::MuxingApp("privatehub-media".into()),
        MatroskaSpec::WritingApp("privatehub-media".into()),
    ];
    let mut seeks = vec![(0x1654_AE6B_u32, HEAD_RESERVE as u64)];
    if let Some((duration_ms, cues_position)) = closed {
        info.push(MatroskaSpec::Duration(duration_ms as f64));
        seeks.push((CUES_ID, cues_position));
    }
    let mut out = encode_in_segment(&[master(MatroskaSpec::Info, info)])?;
    let seek_entries = seeks
        .into_iter()
        .map(|(id, position)| {
            master(
                MatroskaSpec::Seek,
                vec![
                    MatroskaSpec::SeekID(id.to_be_bytes().to_vec()),
                    MatroskaSpec::SeekPosition(position),
                ],
            )
        })
        .collect();
    out.extend(encode_in_segment(&[master(
        MatroskaSpec::SeekHead,
        seek_entries,
    )])?);
    if out.len() + 9 > HEAD_RESERVE {
        return Err(io::Error::other("the WebM head outgrew its reserved space"));
    }
    let filler = void(HEAD_RESERVE - out.len());
    out.extend(filler);
    Ok(out)
}

fn opus_head() -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.push(1); // version
    head.push(2); // channels (WebRTC's opus/48000/2)
    head.extend_from_slice(&OPUS_PRE_SKIP.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    head.push(0); // channel mapping family
    head
}

fn tracks_element(tracks: Tracks) -> io::Result<Vec<u8>> {
    let mut entries = Vec::new();
    if let Some((width, height)) = tracks.video {
        entries.push(master(
            MatroskaSpec::TrackEntry,
            vec![
                MatroskaSpec::TrackNumber(VIDEO_TRACK),
                MatroskaSpec::TrackUID(VIDEO_TRACK),
                MatroskaSpec::TrackType(1),
                MatroskaSpec::CodecID("V_VP8".into()),
                master(
                    MatroskaSpec::Video,
                    vec![
                        MatroskaSpec::PixelWidth(u64::from(width)),
                        MatroskaSpec::PixelHeight(u64::from(height)),
                    ],
                ),
            ],
        ));
    }
    if tracks.audio {
        entries.push(master(
            MatroskaSpec::TrackEntry,
            vec![
                MatroskaSpec::TrackNumber(AUDIO_TRACK),
                MatroskaSpec::TrackUID(AUDIO_TRACK),
                MatroskaSpec::TrackType(2),
                MatroskaSpec::CodecID("A_OPUS".into()),
                MatroskaSpec::CodecPrivate(opus_head()),
                MatroskaSpec::CodecDelay(u64::from(OPUS_PRE_SKIP) * 1_000_000_000 / 48_000),
                MatroskaSpec::SeekPreRoll(OPUS_SEEK_PRE_ROLL_NS),
                master(
                    MatroskaSpec::Audio,
                    vec![
                        MatroskaSpec::SamplingFrequency(48_000.0),
                        MatroskaSpec::Channels(2),
                    ],
                ),
            ],
        ));
    }
    encode_in_segment(&[master(MatroskaSpec::Tracks, entries)])
}

/// A Cluster of `blocks` (in time order, the first at or after `start_ms`, all within
/// 32 s of it).
fn cluster(start_ms: u64, blocks: &[Block]) -> io::Result<Vec<u8>> {
    let mut children = Vec::with_capacity(blocks.len() + 1);
    children.push(MatroskaSpec::Timestamp(start_ms));
    for block in blocks {
        let relative = i16::try_from(block.at_ms.saturating_sub(start_ms))
            .map_err(|_| io::Error::other("a block too far from its cluster's start"))?;
        let mut bytes = Vec::with_capacity(block.data.len() + 4);
        bytes.push(0x80 | block.track as u8); // track number as a 1-byte EBML integer
        bytes.extend_from_slice(&relative.to_be_bytes());
        bytes.push(if block.keyframe { 0x80 } else { 0 });
        bytes.extend_from_slice(&block.data);
        children.push(MatroskaSpec::SimpleBlock(bytes));
    }
    encode_in_segment(&[master(MatroskaSpec::Cluster, children)])
}

fn cues_element(cues: &[Cue]) -> io::Result<Vec<u8>> {
    let points = cues
        .iter()
        .map(|cue| {
            master(
                MatroskaSpec::CuePoint,
                vec![
                    MatroskaSpec::CueTime(cue.at_ms),
                    master(
                        MatroskaSpec::CueTrackPositions,
                        vec![
                            MatroskaSpec::CueTrack(cue.track),
                            MatroskaSpec::CueClusterPosition(cue.cluster_position),
                        ],
                    ),
                ],
            )
        })
        .collect();
    encode_in_segment(&[master(MatroskaSpec::Cues, points)])
}

impl WebmFile {
    /// Creates the file at `path` (which must not exist) and writes its header.
    pub fn create(path: &Path, tracks: Tracks) -> io::Result<WebmFile> {
        let mut bytes = ebml_header()?;
        bytes.extend_from_slice(&SEGMENT_ID);
        bytes.extend_from_slice(&UNKNOWN_SIZE);
        let segment_data_at = bytes.len() as u64;
        bytes.extend(head(None)?);
        bytes.extend(tracks_element(tracks)?);
        let mut file = File::options().write(true).create_new(true).open(path)?;
        file.write_all(&bytes)?;
        Ok(WebmFile {
            file,
            len: bytes.len() as u64,
            segment_data_at,
            cues: Vec::new(),
            last_ms: 0,
            has_video: tracks.video.is_some(),
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Media time written so far.
    pub fn duration_ms(&self) -> u64 {
        self.last_ms
    }

    /// Appends one cluster. On an error the file is cut back to its last whole cluster,
    /// so what was written still plays.
    pub fn append_cluster(&mut self, start_ms: u64, blocks: &[Block]) -> io::Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        let bytes = cluster(start_ms, blocks)?;
        if let Err(error) = self.file.write_all(&bytes) {
            let _ = self.file.set_len(self.len);
            let _ = self.file.seek(SeekFrom::Start(self.len));
            return Err(error);
        }
        let first = &blocks[0];
        let seekable = if self.has_video {
            first.track == VIDEO_TRACK && first.keyframe
        } else {
            true
        };
        if seekable {
            self.cues.push(Cue {
                at_ms: start_ms,
                cluster_position: self.len - self.segment_data_at,
                track: first.track,
            });
        }
        self.len += bytes.len() as u64;
        self.last_ms = blocks
            .iter()
            .map(|b| b.at_ms)
            .max()
            .unwrap_or(start_ms)
            .max(self.last_ms);
        Ok(())
    }

    /// Writes the Cues, the duration and the Segment's size, and syncs the file.
    pub fn close(mut self) -> io::Result<u64> {
        close_file(
            &mut self.file,
            self.len,
            self.segment_data_at,
            &self.cues,
            self.last_ms,
        )
    }
}

fn close_file(
    file: &mut File,
    len: u64,
    segment_data_at: u64,
    cues: &[Cue],
    duration_ms: u64,
) -> io::Result<u64> {
    let cues_bytes = cues_element(cues)?;
    file.write_all_at(&cues_bytes, len)?;
    let end = len + cues_bytes.len() as u64;
    file.set_len(end)?;
    file.write_all_at(
        &head(Some((duration_ms, len - segment_data_at)))?,
        segment_data_at,
    )?;
    file.write_all_at(&size_field(end - segment_data_at), segment_data_at - 8)?;
    file.sync_data()?;
    Ok(end)
}

/// What [`repair`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repaired {
    pub duration_ms: u64,
    pub bytes: u64,
    /// Bytes of a cut-off last cluster that were dropped.
    pub dropped_bytes: u64,
    /// The file was already closed (nothing written).
    pub was_closed: bool,
}

/// Closes a file left open by a server that was killed: drops a last cluster cut short,
/// and writes the Cues, duration and Segment size from the clusters that are whole.
pub fn repair(path: &Path) -> io::Result<Repaired> {
    let mut file = File::options().read(true).write(true).open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let scan = scan(&bytes).ok_or_else(|| io::Error::other("not a recording's WebM file"))?;
    if scan.closed {
        return Ok(Repaired {
            duration_ms: scan.last_ms,
            bytes: bytes.len() as u64,
            dropped_bytes: 0,
            was_closed: true,
        });
    }
    file.set_len(scan.whole_len)?;
    let end = close_file(
        &mut file,
        scan.whole_len,
        scan.segment_data_at,
        &scan.cues,
        scan.last_ms,
    )?;
    Ok(Repaired {
        duration_ms: scan.last_ms,
        bytes: end,
        dropped_bytes: bytes.len() as u64 - scan.whole_len,
        was_closed: false,
    })
}

/// Whether `bytes` read as a recording the repair could close (for the fuzz entry).
pub fn scans(bytes: &[u8]) -> bool {
    scan(bytes).is_some()
}

struct Scan {
    segment_data_at: u64,
    /// Length up to the end of the last whole cluster.
    whole_len: u64,
    cues: Vec<Cue>,
    last_ms: u64,
    closed: bool,
}

/// Reads an EBML element id (its length marker kept, as ids are written).
fn read_id(bytes: &[u8], at: usize) -> Option<(u32, usize)> {
    let first = *bytes.get(at)?;
    let len = first.leading_zeros() as usize + 1;
    if len > 4 {
        return None;
    }
    let raw = bytes.get(at..at + len)?;
    Some((raw.iter().fold(0u32, |id, b| id << 8 | u32::from(*b)), len))
}

/// Reads an EBML size; `None` inside for "unknown".
fn read_size(bytes: &[u8], at: usize) -> Option<(Option<u64>, usize)> {
    let first = *bytes.get(at)?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let raw = bytes.get(at..at + len)?;
    let mask = if len == 8 { 0 } else { 0xFFu8 >> len };
    let mut value = u64::from(first & mask);
    let mut all_ones = first & mask == mask;
    for b in &raw[1..] {
        value = value << 8 | u64::from(*b);
        all_ones &= *b == 0xFF;
    }
    Some((if all_ones { None } else { Some(value) }, len))
}

fn scan(bytes: &[u8]) -> Option<Scan> {
    // EBML header, then the Segment.
    let (ebml_id, id_len) = read_id(bytes, 0)?;
    if ebml_id != 0x1A45_DFA3 {
        return None;
    }
    let (ebml_size, size_len) = read_size(bytes, id_len)?;
    let mut at = (id_len + size_len).checked_add(usize::try_from(ebml_size?).ok()?)?;
    let (segment_id, id_len) = read_id(bytes, at)?;
    if segment_id != u32::from_be_bytes(SEGMENT_ID) {
        return None;
    }
    let (_, size_len) = read_size(bytes, at + id_len)?;
    at += id_len + size_len;
    let segment_data_at = at;
    let mut scan = Scan {
        segment_data_at: segment_data_at as u64,
        whole_len: at as u64,
        cues: Vec::new(),
        last_ms: 0,
        closed: false,
    };
    let mut has_video = false;
    while at < bytes.len() {
        let Some((id, id_len)) = read_id(bytes, at) else {
            break;
        };
        let Some((Some(size), size_len)) = read_size(bytes, at + id_len) else {
            break;
        };
        let body = at + id_len + size_len;
        let end = body.saturating_add(usize::try_from(size).unwrap_or(usize::MAX));
        if end > bytes.len() {
            break;
        }
        match id {
            CLUSTER_ID => {
                let blocks = cluster_blocks(&bytes[body..end])?;
                if let Some((start_ms, first_track, first_key, last_ms)) = blocks {
                    has_video |= first_track == VIDEO_TRACK;
                    if (first_track == VIDEO_TRACK && first_key)
                        || (!has_video && first_track == AUDIO_TRACK)
                    {
                        scan.cues.push(Cue {
                            at_ms: start_ms,
                            cluster_position: (at - segment_data_at) as u64,
                            track: first_track,
                        });
                    }
                    scan.last_ms = scan.last_ms.max(last_ms);
                }
            }
            CUES_ID => scan.closed = true,
            _ => {}
        }
        at = end;
        scan.whole_len = at as u64;
    }
    Some(scan)
}

/// A cluster's start, its first block's track and keyframe flag, and its last block's
/// time; `Some(None)` for a cluster without blocks; `None` for one that does not parse.
fn cluster_blocks(body: &[u8]) -> Option<Option<(u64, u64, bool, u64)>> {
    let mut at = 0;
    let mut start_ms = None;
    let mut first = None;
    let mut last_ms = 0;
    while at < body.len() {
        let (id, id_len) = read_id(body, at)?;
        let (size, size_len) = read_size(body, at + id_len)?;
        let data = at + id_len + size_len;
        let end = data.checked_add(usize::try_from(size?).ok()?)?;
        let value = body.get(data..end)?;
        match id {
            TIMESTAMP_ID => {
                start_ms = Some(value.iter().fold(0u64, |v, b| v << 8 | u64::from(*b)));
            }
            SIMPLE_BLOCK_ID if value.len() >= 4 => {
                let track = u64::from(value[0] & 0x7F);
                let relative = i16::from_be_bytes([value[1], value[2]]);
                let keyframe = value[3] & 0x80 != 0;
                let at_ms = start_ms?.saturating_add_signed(i64::from(relative));
                first.get_or_insert((track, keyframe));
                last_ms = last_ms.max(at_ms);
            }
            _ => {}
        }
        at = end;
    }
    Some(first.map(|(track, keyframe)| (start_ms.unwrap_or(0), track, keyframe, last_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(from_ms: u64) -> Vec<Block> {
        vec![
            Block {
                track: VIDEO_TRACK,
                at_ms: from_ms,
                keyframe: true,
                data: vec![1; 500],
            },
            Block {
                track: AUDIO_TRACK,
                at_ms: from_ms + 10,
                keyframe: true,
                data: vec![2; 80],
            },
            Block {
                track: VIDEO_TRACK,
                at_ms: from_ms + 33,
                keyframe: false,
                data: vec![3; 200],
            },
        ]
    }

    #[test]
    fn a_cut_file_is_repaired_to_its_last_whole_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.webm");
        let tracks = Tracks {
            video: Some((640, 360)),
            audio: true,
        };
        let mut file = WebmFile::create(&path, tracks).unwrap();
        file.append_cluster(0, &blocks(0)).unwrap();
        file.append_cluster(1000, &blocks(1000)).unwrap();
        let whole = file.len();
        drop(file);
        // A third cluster cut off halfway, as a kill -9 mid-write leaves it.
        let third = cluster(2000, &blocks(2000)).unwrap();
        let mut raw = File::options().append(true).open(&path).unwrap();
        raw.write_all(&third[..third.len() / 2]).unwrap();
        drop(raw);
        let repaired = repair(&path).unwrap();
        assert_eq!(repaired.duration_ms, 1033);
        assert_eq!(repaired.dropped_bytes, third.len() as u64 / 2);
        assert!(!repaired.was_closed);
        let bytes = std::fs::read(&path).unwrap();
        let scan = scan(&bytes).unwrap();
        assert!(scan.closed);
        assert_eq!(scan.cues.len(), 2);
        assert_eq!(scan.cues[1].at_ms, 1000);
        assert!(scan.whole_len > whole);
        // A second repair finds it closed and leaves it alone.
        assert!(repair(&path).unwrap().was_closed);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_closed_file_declares_its_size_and_seeks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.webm");
        let mut file = WebmFile::create(
            &path,
            Tracks {
                video: None,
                audio: true,
            },
        )
        .unwrap();
        let audio = |at_ms| Block {
            track: AUDIO_TRACK,
            at_ms,
            keyframe: true,
            data: vec![0; 60],
        };
        file.append_cluster(0, &[audio(0), audio(20)]).unwrap();
        file.append_cluster(40, &[audio(40)]).unwrap();
        let end = file.close().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, end);
        let scan = scan(&bytes).unwrap();
        assert_eq!(
            scan.cues.len(),
            2,
            "audio-only: every cluster is a seek point"
        );
        assert_eq!(scan.last_ms, 40);
        let (size, _) = read_size(&bytes, scan.segment_data_at as usize - 8).unwrap();
        assert_eq!(size, Some(end - scan.segment_data_at));
    }

    #[test]
    fn garbage_is_not_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.webm");
        std::fs::write(&path, b"not a webm file at all").unwrap();
        assert!(repair(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"not a webm file at all");
    }
}
