//! The picture size from an H.264 sequence parameter set (ITU-T H.264 section 7.3.2.1.1),
//! for the MP4 track header. Only what leads to the size is read.

/// An RBSP bit reader (emulation prevention bytes removed first).
struct Bits {
    bytes: Vec<u8>,
    at: usize,
}

impl Bits {
    fn new(nal_unit: &[u8]) -> Bits {
        let mut bytes = Vec::with_capacity(nal_unit.len());
        let mut zeros = 0;
        for &b in nal_unit {
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            bytes.push(b);
        }
        Bits { bytes, at: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.bytes.get(self.at / 8)?;
        let bit = (byte >> (7 - self.at % 8)) & 1;
        self.at += 1;
        Some(u32::from(bit))
    }

    fn bits(&mut self, count: u32) -> Option<u32> {
        (0..count).try_fold(0u32, |value, _| Some(value << 1 | self.bit()?))
    }

    /// Exp-Golomb, unsigned.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Option<i32> {
        let value = self.ue()?;
        Some(if value % 2 == 1 {
            value.div_ceil(2) as i32
        } else {
            -((value / 2) as i32)
        })
    }
}

fn skip_scaling_list(bits: &mut Bits, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            next = (last + bits.se()? + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// Width and height of the pictures a sequence parameter set describes (its NAL
/// header included), after cropping.
pub fn picture_size(sps: &[u8]) -> Option<(u16, u16)> {
    let mut bits = Bits::new(sps.get(1..)?);
    let profile = bits.bits(8)?;
    bits.bits(16)?; // constraint flags, level
    bits.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = bits.ue()?;
        if chroma_format == 3 {
            bits.bit()?; // separate_colour_plane_flag
        }
        bits.ue()?; // bit_depth_luma
        bits.ue()?; // bit_depth_chroma
        bits.bit()?; // qpprime_y_zero_transform_bypass
        if bits.bit()? == 1 {
            for list in 0..if chroma_format == 3 { 12 } else { 8 } {
                if bits.bit()? == 1 {
                    skip_scaling_list(&mut bits, if list < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    bits.ue()?; // log2_max_frame_num_minus4
    match bits.ue()? {
        0 => {
            bits.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            bits.bit()?;
            bits.se()?;
            bits.se()?;
            for _ in 0..bits.ue()?.min(255) {
                bits.se()?;
            }
        }
        _ => {}
    }
    bits.ue()?; // max_num_ref_frames
    bits.bit()?; // gaps_in_frame_num_value_allowed
    let width_in_mbs = bits.ue()? + 1;
    let height_in_map_units = bits.ue()? + 1;
    let frame_mbs_only = bits.bit()?;
    if frame_mbs_only == 0 {
        bits.bit()?; // mb_adaptive_frame_field
    }
    bits.bit()?; // direct_8x8_inference
    let (mut crop_x, mut crop_y) = (0, 0);
    if bits.bit()? == 1 {
        let (left, right, top, bottom) = (bits.ue()?, bits.ue()?, bits.ue()?, bits.ue()?);
        let (unit_x, unit_y) = match chroma_format {
            1 => (2, 2 * (2 - frame_mbs_only)),
            2 => (2, 2 - frame_mbs_only),
            _ => (1, 2 - frame_mbs_only),
        };
        crop_x = unit_x * (left + right);
        crop_y = unit_y * (top + bottom);
    }
    let width = (width_in_mbs * 16).checked_sub(crop_x)?;
    let height = ((2 - frame_mbs_only) * height_in_map_units * 16).checked_sub(crop_y)?;
    Some((u16::try_from(width).ok()?, u16::try_from(height).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_of_real_parameter_sets() {
        // High profile 1920x1080 (1088 coded, cropped by 8), from a camera.
        let full_hd = [
            103, 100, 0, 40, 172, 217, 64, 120, 2, 39, 229, 132, 0, 0, 3, 0, 4, 0, 0, 3, 0, 240,
            60, 96, 198, 88,
        ];
        assert_eq!(picture_size(&full_hd), Some((1920, 1080)));
        // Constrained baseline 640x360 (368 coded, cropped), from x264.
        let baseline = [
            103, 66, 192, 30, 217, 0, 160, 47, 249, 112, 17, 0, 0, 3, 0, 1, 0, 0, 3, 0, 60, 15, 22,
            46, 72,
        ];
        assert_eq!(picture_size(&baseline), Some((640, 360)));
        assert_eq!(picture_size(&[0x67]), None);
        assert_eq!(picture_size(&[]), None);
    }
}
