//! postcard inside an LZ4 frame: what a fast compressor saves on device state (GIDs, attribute
//! blocks and capacities repeat from QP to QP) and what it costs in encode and decode time.

use super::{Codec, Visit, MAX_SECTION_LEN};
use std::io::{Read, Write};

pub(super) struct Lz4;
pub(super) static CODEC: Lz4 = Lz4;

impl Codec for Lz4 {
    fn id(&self) -> u8 {
        3
    }
    fn name(&self) -> &'static str {
        "lz4"
    }
    fn about(&self) -> &'static str {
        "postcard compressed with LZ4 (frame format)"
    }
    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, String> {
        let plain = postcard::to_stdvec(value).map_err(|e| e.to_string())?;
        let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
        enc.write_all(&plain).map_err(|e| e.to_string())?;
        enc.finish().map_err(|e| e.to_string())
    }
    fn decode(&self, bytes: &[u8], visit: &mut Visit<'_>) -> Result<(), String> {
        // The output grows with what actually decompresses, and stops one byte past the cap.
        let mut plain = Vec::new();
        lz4_flex::frame::FrameDecoder::new(bytes)
            .take(MAX_SECTION_LEN as u64 + 1)
            .read_to_end(&mut plain)
            .map_err(|e| e.to_string())?;
        if plain.len() > MAX_SECTION_LEN {
            return Err("decompresses beyond the section limit".into());
        }
        let mut de = postcard::Deserializer::from_bytes(&plain);
        visit(&mut <dyn erased_serde::Deserializer>::erase(&mut de)).map_err(|e| e.to_string())?;
        match de.finalize() {
            Ok([]) => Ok(()),
            Ok(rest) => Err(format!("{} bytes after the value", rest.len())),
            Err(e) => Err(e.to_string()),
        }
    }
}
