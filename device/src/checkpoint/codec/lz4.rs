//! postcard inside an LZ4 frame: what a fast compressor saves on device state (GIDs, attribute
//! blocks and capacities repeat from QP to QP) and what it costs in encode and decode time.

use super::{Format, MAX_SECTION_LEN};
use std::io::{Read, Write};

pub(super) struct Lz4;
pub(super) static CODEC: Lz4 = Lz4;

impl Format for Lz4 {
    const ID: u8 = 3;
    const NAME: &'static str = "lz4";
    const ABOUT: &'static str = "postcard compressed with LZ4 (frame format)";

    fn to_bytes<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
        let plain = postcard::to_stdvec(value).map_err(|e| e.to_string())?;
        let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
        enc.write_all(&plain).map_err(|e| e.to_string())?;
        enc.finish().map_err(|e| e.to_string())
    }

    fn from_bytes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        // The output grows with what actually decompresses, and stops one byte past the cap.
        let mut plain = Vec::new();
        lz4_flex::frame::FrameDecoder::new(bytes)
            .take(MAX_SECTION_LEN as u64 + 1)
            .read_to_end(&mut plain)
            .map_err(|e| e.to_string())?;
        if plain.len() > MAX_SECTION_LEN {
            return Err("decompresses beyond the section limit".into());
        }
        match postcard::take_from_bytes(&plain) {
            Ok((v, [])) => Ok(v),
            Ok((_, rest)) => Err(format!("{} bytes after the value", rest.len())),
            Err(e) => Err(e.to_string()),
        }
    }
}
