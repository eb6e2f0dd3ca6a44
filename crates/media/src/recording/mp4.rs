//! The fragmented MP4 file of an H.264 + Opus recording: an init part (ftyp, moov) and
//! space reserved for the seek index, then one fragment (moof + mdat) per cluster of
//! blocks, each written whole, so a file cut short plays up to its last fragment. Closing
//! (or `repair` of a cut file) writes the durations into moov and a `sidx` into the
//! reserved space, which players (Chrome's among them) seek with. Boxes are encoded by
//! `mp4-atom`; this module decides what goes in them.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use mp4_atom::{
    Audio, Avc1, Avcc, Decode, Dinf, Dops, Dref, Encode, Free, Ftyp, Hdlr, Mdhd, Mdia, Mehd, Mfhd,
    Minf, Moof, Moov, Mvex, Mvhd, Opus, RgbColor, SegmentReference, Sidx, Smhd, Stbl, Stco, Stsd,
    Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd, Zeroed,
};

use super::webm::{AUDIO_TRACK, Block, Repaired, VIDEO_TRACK};

const VIDEO_TIMESCALE: u32 = 90_000;
const AUDIO_TIMESCALE: u32 = 48_000;
/// Bytes kept after moov for the seek index (a `free` box until the file is closed):
/// room for about 5,000 seek points; a longer live gets coarser ones.
const INDEX_RESERVE: usize = 64 * 1024;
const SIDX_HEADER_BYTES: usize = 32;
const SIDX_ENTRY_BYTES: usize = 12;
const FREE_HEADER_BYTES: usize = 8;
/// A sample that others depend on (a keyframe, every audio packet) / one that depends
/// on earlier samples and is not a sync sample (ISO/IEC 14496-12 section 8.8.3.1).
const SYNC_SAMPLE: u32 = 0x0200_0000;
const DEPENDENT_SAMPLE: u32 = 0x0101_0000;
const OPUS_PRE_SKIP: u16 = 312;

/// The H.264 track of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H264Track {
    pub width: u16,
    pub height: u16,
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
}

/// One fragment, for the seek index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fragment {
    offset: u64,
    size: u64,
    start_ms: u64,
    keyframe: bool,
}

pub struct Mp4File {
    file: File,
    len: u64,
    /// Where the reserved index space starts.
    index_at: u64,
    moov: Moov,
    fragments: Vec<Fragment>,
    sequence: u32,
    last_ms: u64,
    has_video: bool,
}

fn encoded(atom: &impl Encode) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    atom.encode(&mut bytes).map_err(io::Error::other)?;
    Ok(bytes)
}

fn track_header(track_id: u32, size: Option<(u16, u16)>) -> Tkhd {
    let (width, height) = size.unwrap_or((0, 0));
    Tkhd {
        track_id,
        enabled: true,
        in_movie: true,
        volume: if size.is_none() { 1.into() } else { 0.into() },
        width: width.into(),
        height: height.into(),
        ..Default::default()
    }
}

fn media(timescale: u32, handler: &[u8; 4], name: &str, minf: Minf) -> Mdia {
    Mdia {
        mdhd: Mdhd {
            timescale,
            language: "und".into(),
            ..Default::default()
        },
        hdlr: Hdlr {
            handler: handler.into(),
            name: name.into(),
        },
        minf,
    }
}

fn sample_table(codec: mp4_atom::Codec) -> Stbl {
    Stbl {
        stsd: Stsd {
            codecs: vec![codec],
        },
        stco: Some(Stco::default()),
        ..Default::default()
    }
}

fn data_information() -> Dinf {
    Dinf {
        dref: Dref {
            entries: vec![Url::default().into()],
        },
    }
}

fn movie(video: Option<&H264Track>, audio: bool, duration_ms: u64) -> Moov {
    let mut trak = Vec::new();
    let mut trex = Vec::new();
    if let Some(video) = video {
        let sps = &video.sps;
        let avc1 = Avc1 {
            visual: Visual {
                data_reference_index: 1,
                width: video.width,
                height: video.height,
                horizresolution: 72.into(),
                vertresolution: 72.into(),
                frame_count: 1,
                compressor: "".into(),
                depth: 24,
            },
            avcc: Avcc {
                configuration_version: 1,
                avc_profile_indication: sps.get(1).copied().unwrap_or(66),
                profile_compatibility: sps.get(2).copied().unwrap_or(0),
                avc_level_indication: sps.get(3).copied().unwrap_or(31),
                length_size: 4,
                sequence_parameter_sets: vec![video.sps.clone()],
                picture_parameter_sets: vec![video.pps.clone()],
                ext: None,
            },
            ..Default::default()
        };
        trak.push(Trak {
            tkhd: track_header(VIDEO_TRACK as u32, Some((video.width, video.height))),
            mdia: media(
                VIDEO_TIMESCALE,
                b"vide",
                "Video",
                Minf {
                    vmhd: Some(Vmhd {
                        graphics_mode: 0,
                        op_color: RgbColor {
                            red: 0,
                            green: 0,
                            blue: 0,
                        },
                    }),
                    dinf: data_information(),
                    stbl: sample_table(avc1.into()),
                    ..Default::default()
                },
            ),
            ..Default::default()
        });
        trex.push(Trex {
            track_id: VIDEO_TRACK as u32,
            default_sample_description_index: 1,
            ..Default::default()
        });
    }
    if audio {
        let opus = Opus {
            audio: Audio {
                data_reference_index: 1,
                channel_count: 2,
                sample_size: 16,
                sample_rate: 48_000u16.into(),
            },
            dops: Dops {
                output_channel_count: 2,
                pre_skip: OPUS_PRE_SKIP,
                input_sample_rate: 48_000,
                output_gain: 0,
                channel_mapping: None,
            },
            btrt: None,
        };
        trak.push(Trak {
            tkhd: track_header(AUDIO_TRACK as u32, None),
            mdia: media(
                AUDIO_TIMESCALE,
                b"soun",
                "Audio",
                Minf {
                    smhd: Some(Smhd::default()),
                    dinf: data_information(),
                    stbl: sample_table(opus.into()),
                    ..Default::default()
                },
            ),
            ..Default::default()
        });
        trex.push(Trex {
            track_id: AUDIO_TRACK as u32,
            default_sample_description_index: 1,
            ..Default::default()
        });
    }
    Moov {
        mvhd: Mvhd {
            timescale: 1000,
            duration: duration_ms,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: 3,
            ..Default::default()
        },
        mvex: Some(Mvex {
            mehd: Some(Mehd {
                fragment_duration: duration_ms,
            }),
            trex,
        }),
        trak,
        ..Default::default()
    }
}

fn timescale(track: u64) -> u64 {
    if track == VIDEO_TRACK {
        u64::from(VIDEO_TIMESCALE)
    } else {
        u64::from(AUDIO_TIMESCALE)
    }
}

/// One fragment's bytes: a moof with a run per track, then the mdat.
fn fragment(sequence: u32, blocks: &[Block]) -> io::Result<(Vec<u8>, bool)> {
    let mut tracks: Vec<u64> = blocks.iter().map(|b| b.track).collect();
    tracks.sort_unstable();
    tracks.dedup();
    let mut runs = Vec::new();
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for &track in &tracks {
        let samples: Vec<&Block> = blocks.iter().filter(|b| b.track == track).collect();
        let scale = timescale(track);
        let mut entries = Vec::with_capacity(samples.len());
        for (index, sample) in samples.iter().enumerate() {
            let next_ms = samples.get(index + 1).map(|n| n.at_ms);
            let previous_ms = index.checked_sub(1).map(|p| samples[p].at_ms);
            // The last sample lasts as long as the one before it (the next fragment's
            // decode time puts the track back on time).
            let duration_ms = match (next_ms, previous_ms) {
                (Some(next), _) => next - sample.at_ms,
                (None, Some(previous)) => sample.at_ms - previous,
                (None, None) => 20,
            };
            let sync = track == AUDIO_TRACK || sample.keyframe;
            entries.push(TrunEntry {
                duration: Some((duration_ms * scale / 1000) as u32),
                size: Some(sample.data.len() as u32),
                flags: Some(if sync { SYNC_SAMPLE } else { DEPENDENT_SAMPLE }),
                cts: None,
            });
        }
        offsets.push(data.len());
        for sample in &samples {
            data.extend_from_slice(&sample.data);
        }
        runs.push((track, samples[0].at_ms * scale / 1000, entries));
    }
    let build = |data_offsets: &[i32]| Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf: runs
            .iter()
            .zip(data_offsets)
            .map(|((track, decode_time, entries), offset)| Traf {
                tfhd: Tfhd {
                    track_id: *track as u32,
                    default_base_is_moof: true,
                    ..Default::default()
                },
                tfdt: Some(Tfdt {
                    base_media_decode_time: *decode_time,
                }),
                trun: vec![Trun {
                    data_offset: Some(*offset),
                    samples: TrunSamples::Explicit(entries.clone()),
                }],
                ..Default::default()
            })
            .collect(),
    };
    let moof_len = encoded(&build(&vec![0; runs.len()]))?.len();
    let mdat_header = 8;
    let data_offsets: Vec<i32> = offsets
        .iter()
        .map(|offset| (moof_len + mdat_header + offset) as i32)
        .collect();
    let mut bytes = encoded(&build(&data_offsets))?;
    bytes.extend_from_slice(&((data.len() + mdat_header) as u32).to_be_bytes());
    bytes.extend_from_slice(b"mdat");
    bytes.extend_from_slice(&data);
    let first = &blocks[0];
    let keyframe =
        tracks.first() == Some(&VIDEO_TRACK) && first.track == VIDEO_TRACK && first.keyframe;
    Ok((bytes, keyframe))
}

impl Mp4File {
    pub fn create(path: &Path, video: Option<&H264Track>, audio: bool) -> io::Result<Mp4File> {
        let ftyp = Ftyp {
            major_brand: b"isom".into(),
            minor_version: 512,
            compatible_brands: vec![
                b"isom".into(),
                b"iso6".into(),
                b"avc1".into(),
                b"mp41".into(),
            ],
        };
        let moov = movie(video, audio, 0);
        let mut bytes = encoded(&ftyp)?;
        bytes.extend(encoded(&moov)?);
        let index_at = bytes.len() as u64;
        bytes.extend(encoded(&Free {
            zeroed: Zeroed::new(INDEX_RESERVE - FREE_HEADER_BYTES),
        })?);
        let mut file = File::options().write(true).create_new(true).open(path)?;
        file.write_all(&bytes)?;
        Ok(Mp4File {
            file,
            len: bytes.len() as u64,
            index_at,
            moov,
            fragments: Vec::new(),
            sequence: 1,
            last_ms: 0,
            has_video: video.is_some(),
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn duration_ms(&self) -> u64 {
        self.last_ms
    }

    /// Appends one fragment; on an error the file is cut back to its last whole one.
    pub fn append_cluster(&mut self, start_ms: u64, blocks: &[Block]) -> io::Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        let (bytes, keyframe) = fragment(self.sequence, blocks)?;
        if let Err(error) = self.file.write_all(&bytes) {
            let _ = self.file.set_len(self.len);
            return Err(error);
        }
        self.fragments.push(Fragment {
            offset: self.len,
            size: bytes.len() as u64,
            start_ms,
            keyframe: keyframe || !self.has_video,
        });
        self.sequence += 1;
        self.len += bytes.len() as u64;
        self.last_ms = self
            .last_ms
            .max(blocks.iter().map(|b| b.at_ms).max().unwrap_or(0));
        Ok(())
    }

    pub fn close(mut self) -> io::Result<u64> {
        let index = SeekIndex {
            index_at: self.index_at,
            moov_at: self.index_at - encoded(&self.moov)?.len() as u64,
            has_video: self.has_video,
        };
        index.write(&mut self.file, &self.moov, &self.fragments, self.last_ms)?;
        self.file.sync_data()?;
        Ok(self.len)
    }
}

struct SeekIndex {
    moov_at: u64,
    index_at: u64,
    has_video: bool,
}

impl SeekIndex {
    /// Writes the durations into moov and the seek index into the reserved space.
    fn write(
        &self,
        file: &mut File,
        moov: &Moov,
        fragments: &[Fragment],
        duration_ms: u64,
    ) -> io::Result<()> {
        let mut with_duration = moov.clone();
        with_duration.mvhd.duration = duration_ms;
        if let Some(mvex) = with_duration.mvex.as_mut() {
            mvex.mehd = Some(Mehd {
                fragment_duration: duration_ms,
            });
        }
        let old = encoded(moov)?;
        let new = encoded(&with_duration)?;
        if new.len() == old.len() {
            file.write_all_at(&new, self.moov_at)?;
        }
        let (track, scale) = if self.has_video {
            (VIDEO_TRACK, u64::from(VIDEO_TIMESCALE))
        } else {
            (AUDIO_TRACK, u64::from(AUDIO_TIMESCALE))
        };
        let points = seek_points(
            fragments,
            (INDEX_RESERVE - SIDX_HEADER_BYTES - FREE_HEADER_BYTES) / SIDX_ENTRY_BYTES,
        );
        let Some(first) = fragments.first() else {
            return Ok(());
        };
        let end_ms = duration_ms.max(first.start_ms);
        let references = points
            .iter()
            .enumerate()
            .map(|(index, &(offset, start_ms))| {
                let (next_offset, next_ms) = points.get(index + 1).copied().unwrap_or((
                    fragments.last().map_or(offset, |f| f.offset + f.size),
                    end_ms,
                ));
                SegmentReference {
                    reference_type: false,
                    referenced_size: (next_offset - offset) as u32,
                    subsegment_duration: ((next_ms.saturating_sub(start_ms)) * scale / 1000) as u32,
                    starts_with_sap: true,
                    sap_type: 1,
                    sap_delta_time: 0,
                }
            })
            .collect::<Vec<_>>();
        let sidx_len = SIDX_HEADER_BYTES + SIDX_ENTRY_BYTES * references.len();
        let filler = INDEX_RESERVE - sidx_len;
        let sidx = Sidx {
            reference_id: track as u32,
            timescale: scale as u32,
            earliest_presentation_time: points.first().map_or(0, |p| p.1) * scale / 1000,
            first_offset: filler as u64
                + (points.first().map_or(first.offset, |p| p.0)
                    - (self.index_at + INDEX_RESERVE as u64)),
            references,
        };
        let mut bytes = encoded(&sidx)?;
        bytes.extend(encoded(&Free {
            zeroed: Zeroed::new(filler - FREE_HEADER_BYTES),
        })?);
        if bytes.len() != INDEX_RESERVE {
            return Err(io::Error::other(
                "the seek index does not fit its reserved space",
            ));
        }
        file.write_all_at(&bytes, self.index_at)
    }
}

/// The fragments a seek may start at (those opening with a keyframe), at most `most`:
/// beyond it, every other one is dropped until they fit. (offset, start).
fn seek_points(fragments: &[Fragment], most: usize) -> Vec<(u64, u64)> {
    let mut points: Vec<(u64, u64)> = fragments
        .iter()
        .enumerate()
        .filter(|(index, f)| f.keyframe || *index == 0)
        .map(|(_, f)| (f.offset, f.start_ms))
        .collect();
    while points.len() > most.max(1) {
        points = points
            .iter()
            .enumerate()
            .filter(|(index, _)| index % 2 == 0)
            .map(|(_, p)| *p)
            .collect();
    }
    points
}

/// Box size and kind at `at`, if whole in `bytes`.
fn box_at(bytes: &[u8], at: usize) -> Option<(usize, [u8; 4])> {
    let header = bytes.get(at..at.checked_add(8)?)?;
    let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let kind = [header[4], header[5], header[6], header[7]];
    (size >= 8 && at.checked_add(size)? <= bytes.len()).then_some((size, kind))
}

/// What a scan of an MP4 recording found.
struct Scan {
    moov: Moov,
    moov_at: usize,
    index_at: usize,
    closed: bool,
    fragments: Vec<Fragment>,
    /// Length up to the end of the last whole fragment.
    whole_len: usize,
    last_ms: u64,
}

/// Reads a recording's boxes: its movie header, whether it was closed, its whole
/// fragments. `None` for what is not one of our files.
fn scan(bytes: &[u8]) -> Option<Scan> {
    let mut at = 0;
    let mut moov: Option<(Moov, usize)> = None;
    let mut index_at = None;
    let mut closed = false;
    let mut fragments = Vec::new();
    let mut whole_len = 0;
    let mut last_ms = 0;
    while let Some((size, kind)) = box_at(bytes, at) {
        match &kind {
            b"moov" => moov = Some((Moov::decode(&mut &bytes[at..at + size]).ok()?, at)),
            b"free" if index_at.is_none() && moov.is_some() => index_at = Some(at),
            b"sidx" => {
                index_at.get_or_insert(at);
                closed = true;
            }
            b"moof" => {
                let Some((mdat_size, mdat)) = box_at(bytes, at + size) else {
                    break;
                };
                if &mdat != b"mdat" {
                    break;
                }
                let Ok(moof) = Moof::decode(&mut &bytes[at..at + size]) else {
                    break;
                };
                let has_video = moov.as_ref().is_some_and(|(m, _)| {
                    m.trak
                        .iter()
                        .any(|t| u64::from(t.tkhd.track_id) == VIDEO_TRACK)
                });
                let mut start_ms = u64::MAX;
                let mut keyframe = false;
                for traf in &moof.traf {
                    let track = u64::from(traf.tfhd.track_id);
                    let scale = timescale(track);
                    let base = traf.tfdt.as_ref().map_or(0, |t| t.base_media_decode_time);
                    let mut time = base;
                    for (index, entry) in
                        traf.trun.iter().flat_map(|r| r.samples.iter()).enumerate()
                    {
                        if index == 0 && track == VIDEO_TRACK {
                            keyframe = entry.flags == Some(SYNC_SAMPLE);
                        }
                        time = time.saturating_add(u64::from(entry.duration.unwrap_or(0)));
                    }
                    start_ms = start_ms.min(base.saturating_mul(1000) / scale);
                    last_ms = last_ms.max(time.saturating_mul(1000) / scale);
                }
                fragments.push(Fragment {
                    offset: at as u64,
                    size: (size + mdat_size) as u64,
                    start_ms: if start_ms == u64::MAX { 0 } else { start_ms },
                    keyframe: keyframe || !has_video,
                });
                at += size + mdat_size;
                whole_len = at;
                continue;
            }
            _ => {}
        }
        at += size;
        whole_len = at;
    }
    let (moov, moov_at) = moov?;
    Some(Scan {
        moov,
        moov_at,
        index_at: index_at?,
        closed,
        fragments,
        whole_len,
        last_ms,
    })
}

/// Whether `bytes` read as a recording the repair could close (for the fuzz entry).
pub fn scans(bytes: &[u8]) -> bool {
    scan(bytes).is_some()
}

/// Closes an MP4 recording left open by a killed server: cuts a last fragment cut short,
/// and writes the durations and seek index from the fragments that are whole.
pub fn repair(path: &Path) -> io::Result<Repaired> {
    let mut file = File::options().read(true).write(true).open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let scan = scan(&bytes).ok_or_else(|| io::Error::other("not a recording's MP4 file"))?;
    if scan.closed {
        return Ok(Repaired {
            duration_ms: scan.moov.mvhd.duration,
            bytes: bytes.len() as u64,
            dropped_bytes: 0,
            was_closed: true,
        });
    }
    file.set_len(scan.whole_len as u64)?;
    let has_video = scan
        .moov
        .trak
        .iter()
        .any(|t| u64::from(t.tkhd.track_id) == VIDEO_TRACK);
    let index = SeekIndex {
        moov_at: scan.moov_at as u64,
        index_at: scan.index_at as u64,
        has_video,
    };
    index.write(&mut file, &scan.moov, &scan.fragments, scan.last_ms)?;
    file.sync_data()?;
    Ok(Repaired {
        duration_ms: scan.last_ms,
        bytes: scan.whole_len as u64,
        dropped_bytes: (bytes.len() - scan.whole_len) as u64,
        was_closed: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn test_track() -> H264Track {
        H264Track {
            width: 640,
            height: 360,
            sps: vec![
                103, 66, 192, 30, 217, 0, 160, 47, 249, 112, 17, 0, 0, 3, 0, 1, 0, 0, 3, 0, 60, 15,
                22, 46, 72,
            ],
            pps: vec![104, 203, 131, 203, 32],
        }
    }

    fn blocks(from_ms: u64) -> Vec<Block> {
        let mut out = vec![Block {
            track: VIDEO_TRACK,
            at_ms: from_ms,
            keyframe: true,
            data: vec![0, 0, 0, 2, 0x65, 1],
        }];
        for i in 1..30 {
            out.push(Block {
                track: AUDIO_TRACK,
                at_ms: from_ms + i * 20,
                keyframe: true,
                data: vec![0xFC; 40],
            });
            out.push(Block {
                track: VIDEO_TRACK,
                at_ms: from_ms + i * 33,
                keyframe: false,
                data: vec![0, 0, 0, 2, 0x41, 1],
            });
        }
        out.sort_by_key(|b| b.at_ms);
        out
    }

    #[test]
    fn a_closed_file_has_its_duration_and_an_index_a_cut_one_is_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mp4");
        let mut file = Mp4File::create(&path, Some(&test_track()), true).unwrap();
        file.append_cluster(0, &blocks(0)).unwrap();
        file.append_cluster(1000, &blocks(1000)).unwrap();
        let whole = std::fs::read(&path).unwrap();
        // A third fragment cut short, as a kill leaves it.
        let (third, _) = fragment(3, &blocks(2000)).unwrap();
        let mut raw = File::options().append(true).open(&path).unwrap();
        raw.write_all(&third[..third.len() / 2]).unwrap();
        drop(raw);
        drop(file);
        let repaired = repair(&path).unwrap();
        assert!(!repaired.was_closed);
        assert_eq!(repaired.dropped_bytes, third.len() as u64 / 2);
        assert_eq!(repaired.bytes, whole.len() as u64);
        assert!(
            (1_950..=2_000).contains(&repaired.duration_ms),
            "{}",
            repaired.duration_ms
        );
        let again = repair(&path).unwrap();
        assert!(again.was_closed);
        assert_eq!(again.duration_ms, repaired.duration_ms);
        let bytes = std::fs::read(&path).unwrap();
        let (_, kind) = box_at(&bytes, 0).unwrap();
        assert_eq!(&kind, b"ftyp");
    }

    #[test]
    fn seek_points_are_thinned_to_fit() {
        let fragments: Vec<Fragment> = (0..10)
            .map(|i| Fragment {
                offset: i * 100,
                size: 100,
                start_ms: i * 1000,
                keyframe: i % 2 == 0,
            })
            .collect();
        assert_eq!(seek_points(&fragments, 10).len(), 5);
        assert_eq!(seek_points(&fragments, 2), vec![(0, 0), (800, 8000)]);
    }

    /// H.264 from x264 (Debian's ffmpeg, as the test script installs), written as the
    /// recorder writes it: ffmpeg must read, decode and seek the result.
    #[test]
    fn ffmpeg_decodes_and_seeks_what_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.h264");
        let made = std::process::Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=30:duration=4",
            ])
            .args([
                "-pix_fmt",
                "yuv420p",
                "-c:v",
                "libx264",
                "-profile:v",
                "baseline",
                "-g",
                "30",
            ])
            .args(["-bsf:v", "h264_mp4toannexb", "-f", "h264"])
            .arg(&source)
            .status()
            .expect("ffmpeg runs (scripts/test installs Debian's ffmpeg)");
        assert!(made.success());
        let stream = std::fs::read(&source).unwrap();
        // Annex B to access units of length-prefixed NAL units, as the assembler makes.
        let mut units: Vec<&[u8]> = Vec::new();
        let starts: Vec<usize> = (0..stream.len().saturating_sub(3))
            .filter(|&i| stream[i..i + 3] == [0, 0, 1])
            .collect();
        for (n, &start) in starts.iter().enumerate() {
            let end = starts.get(n + 1).map_or(stream.len(), |&next| {
                if next > 0 && stream[next - 1] == 0 {
                    next - 1
                } else {
                    next
                }
            });
            units.push(&stream[start + 3..end]);
        }
        let (mut sps, mut pps) = (None, None);
        let mut frames: Vec<(bool, Vec<u8>)> = Vec::new();
        let mut current: Vec<u8> = Vec::new();
        let mut key = false;
        for unit in units {
            match unit[0] & 0x1F {
                7 => sps = Some(unit.to_vec()),
                8 => pps = Some(unit.to_vec()),
                _ => {}
            }
            current.extend_from_slice(&(unit.len() as u32).to_be_bytes());
            current.extend_from_slice(unit);
            if unit[0] & 0x1F == 5 {
                key = true;
            }
            if matches!(unit[0] & 0x1F, 1 | 5) {
                frames.push((key, std::mem::take(&mut current)));
                key = false;
            }
        }
        let sps = sps.unwrap();
        let track = H264Track {
            width: 320,
            height: 240,
            pps: pps.unwrap(),
            sps,
        };
        assert_eq!(
            crate::recording::h264::picture_size(&track.sps),
            Some((320, 240))
        );
        let path = dir.path().join("out.mp4");
        let mut file = Mp4File::create(&path, Some(&track), false).unwrap();
        let mut cluster: Vec<Block> = Vec::new();
        for (index, (keyframe, data)) in frames.into_iter().enumerate() {
            let at_ms = index as u64 * 1000 / 30;
            if keyframe && !cluster.is_empty() {
                file.append_cluster(cluster[0].at_ms, &cluster).unwrap();
                cluster.clear();
            }
            cluster.push(Block {
                track: VIDEO_TRACK,
                at_ms,
                keyframe,
                data,
            });
        }
        file.append_cluster(cluster[0].at_ms, &cluster).unwrap();
        file.close().unwrap();
        let probe = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,width,height:format=duration",
            ])
            .args(["-of", "csv=p=0"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&probe.stdout).to_string();
        assert!(text.contains("h264,320,240"), "{text}");
        let duration: f64 = text.lines().last().unwrap().trim().parse().unwrap();
        assert!((duration - 4.0).abs() < 0.1, "{text}");
        for seek in ["0", "2.5"] {
            let decoded = std::process::Command::new("ffmpeg")
                .args(["-v", "error", "-xerror", "-ss", seek, "-i"])
                .arg(&path)
                .args(["-f", "null", "-"])
                .output()
                .unwrap();
            assert!(
                decoded.status.success() && decoded.stderr.is_empty(),
                "seek {seek}: {}",
                String::from_utf8_lossy(&decoded.stderr)
            );
        }
    }
}
