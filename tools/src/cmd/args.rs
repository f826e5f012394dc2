//! Value parsers shared by several commands, so each option is checked in one place with one
//! message (clap reports a failure as a usage error, exit 2).

use std::net::Ipv4Addr;
use std::ops::Range;
use vhca_device::checkpoint::{codec, Codec};
use vhca_device::{Mac, Mtu};

/// `--mtu`: a path MTU in bytes.
pub fn mtu(s: &str) -> Result<Mtu, String> {
    s.parse::<u32>()
        .ok()
        .and_then(Mtu::from_bytes)
        .ok_or_else(|| format!("{s:?} is not an MTU: use 256, 512, 1024, 2048 or 4096"))
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac(s: &str) -> Result<Mac, String> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{s}: {e}"))?;
    Ok(Mac(bytes
        .try_into()
        .map_err(|_| format!("{s}: a MAC has six bytes"))?))
}

/// `A..B` (B excluded) or `N`.
pub fn seeds(s: &str) -> Result<Range<u64>, String> {
    let bad = || format!("{s:?}: use A..B (B > A) or N");
    match s.split_once("..") {
        Some((a, b)) => {
            let a: u64 = a.trim().parse().map_err(|_| bad())?;
            let b: u64 = b.trim().parse().map_err(|_| bad())?;
            if b <= a {
                return Err(bad());
            }
            Ok(a..b)
        }
        None => {
            let a: u64 = s.trim().parse().map_err(|_| bad())?;
            a.checked_add(1).map(|b| a..b).ok_or_else(bad)
        }
    }
}

/// `A,B`: two IPv4 addresses.
pub fn ipv4_pair(s: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let bad = || format!("{s:?}: use A,B (two IPv4 addresses)");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

/// `X,Y`: two names.
pub fn name_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once(',') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.into(), b.into())),
        _ => Err(format!("{s:?}: use NSA,NSB (two names)")),
    }
}

/// A checkpoint codec on the command line, by name: any codec this build has
/// (`checkpoint::codec::all()`; "bin" is kept as an alias of "binary").
pub fn codec(s: &str) -> Result<&'static dyn Codec, String> {
    let name = if s == "bin" { "binary" } else { s };
    codec::by_name(name).ok_or_else(|| {
        let names: Vec<&str> = codec::all().iter().map(|c| c.name()).collect();
        format!("{s:?}: the codecs are {}", names.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_or_say_why() {
        assert_eq!(mtu("4096"), Ok(Mtu::Mtu4096));
        assert!(mtu("1500")
            .unwrap_err()
            .contains("256, 512, 1024, 2048 or 4096"));
        assert_eq!(seeds("3..7"), Ok(3..7));
        assert_eq!(seeds("5"), Ok(5..6));
        assert!(seeds("7..3").is_err());
        assert!(seeds(&u64::MAX.to_string()).is_err());
        assert_eq!(
            mac("02:00:00:00:00:01").map(|m| m.0),
            Ok([2, 0, 0, 0, 0, 1])
        );
        assert!(mac("02:00").is_err());
        assert!(ipv4_pair("10.0.0.1, 10.0.0.2").is_ok());
        assert!(ipv4_pair("10.0.0.1").is_err());
        assert!(name_pair("a,").is_err());
    }
}
