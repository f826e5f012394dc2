//! postcard: the serde data model with varints and no field names. Small and fast, and what
//! migration sends; it cannot be read without the structs (it is positional).

use super::Format;

pub(super) struct Postcard;
pub(super) static CODEC: Postcard = Postcard;

impl Format for Postcard {
    const ID: u8 = 0;
    const NAME: &'static str = "binary";
    const ABOUT: &'static str = "postcard: varints, positional, no field names (migration)";

    fn to_bytes<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
        postcard::to_stdvec(value).map_err(|e| e.to_string())
    }

    fn from_bytes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        match postcard::take_from_bytes(bytes) {
            Ok((v, [])) => Ok(v),
            Ok((_, rest)) => Err(format!("{} bytes after the value", rest.len())),
            Err(e) => Err(e.to_string()),
        }
    }
}
