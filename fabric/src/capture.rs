//! `--pcap FILE` for every fabric: a pcap file that tshark decodes as RoCEv2.
//!
//! * TAP bridge: the frames as they cross the TAP device, ARP included ([`Capture::frame`]).
//! * UDP bridge: each datagram inside synthesized Ethernet/IPv4/UDP headers
//!   ([`Capture::udp`], see [`vhca_wire::pcap`] for what is made up).
//! * In-process [`crate::World`]: every packet a VF transmits, as the frame
//!   [`vhca_wire::emit_frame`] makes of it, stamped with the virtual clock ([`world_tap`]).
//!
//! A capture that cannot be written is not worth failing the traffic for: the first error is
//! kept ([`Capture::error`]) and later records are skipped.

use crate::world::Tap;
use std::fs::File;
use std::io::{self, BufWriter};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vhca_device::{Nanos, Packet};
use vhca_wire::pcap::{synth_mac, PcapWriter};
use vhca_wire::roce::{self, FrameParams, Ipv4Ident};

/// A pcap file being written.
pub struct Capture {
    w: PcapWriter<BufWriter<File>>,
    records: u64,
    error: Option<io::Error>,
}

fn wall() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Capture {
    /// Creates (truncates) `path` and writes the pcap header.
    pub fn create(path: &Path) -> io::Result<Capture> {
        let f = File::create(path)?;
        Ok(Capture {
            w: PcapWriter::new(BufWriter::with_capacity(1 << 16, f))?,
            records: 0,
            error: None,
        })
    }

    fn record(&mut self, r: io::Result<()>) {
        match r {
            Ok(()) => self.records += 1,
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(e);
                }
            }
        }
    }

    /// Records an Ethernet frame, stamped with the wall clock.
    pub fn frame(&mut self, frame: &[u8]) {
        if self.error.is_none() {
            let r = self.w.write_frame(wall(), frame);
            self.record(r);
        }
    }

    /// Records a RoCEv2 UDP payload from `src` to `dst` in synthesized headers (`v4`: the IPv4
    /// ID and DF to show).
    pub fn udp(&mut self, src: SocketAddr, dst: SocketAddr, v4: Ipv4Ident, payload: &[u8]) {
        if self.error.is_none() {
            let r = self.w.write_udp_payload(wall(), src, dst, v4, payload);
            self.record(r);
        }
    }

    /// Records a device packet as the frame `emit_frame` makes of it, stamped `ts`.
    pub fn packet(&mut self, ts: Duration, pkt: &Packet) {
        if self.error.is_none() {
            let Ok((s, d)) = roce::packet_ips(pkt) else {
                return;
            };
            let params = FrameParams::new(synth_mac(s), synth_mac(d));
            let r = self.w.write_packet(ts, pkt, &params);
            self.record(r);
        }
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The first write error, if any.
    pub fn error(&self) -> Option<&io::Error> {
        self.error.as_ref()
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.w.flush();
    }
}

/// A [`World::tap`](crate::World) that records every transmitted packet in `path`, stamped
/// with the virtual clock (from the Unix epoch, so a run starts on 1 January 1970).
pub fn world_tap(path: &Path) -> io::Result<Tap> {
    let mut c = Capture::create(path)?;
    Ok(Box::new(move |now: Nanos, p: &Packet| {
        c.packet(Duration::from_nanos(now.0), p)
    }))
}
