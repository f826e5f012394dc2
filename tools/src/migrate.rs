//! `vhca migrate`: a live migration over vhost-user as QEMU drives it, end to end and on this
//! machine. Starts a source `vhca serve` (two VFs, a connected RC pair attached through guest
//! drivers) and a destination `vhca serve`; runs traffic; migrates both VFs with pre-copy
//! rounds driven by the dirty log while the traffic runs (`vhca_guest::migrate`); checks that
//! the same QPs carry on, byte for byte; prints each VF's timeline.

use std::time::Duration;
use vhca_device::{Mtu, Psn};
use vhca_guest::migrate::Migration;
use vhca_guest::programs::{rc_every_opcode, rc_pair, rc_pingpong};
use vhca_guest::serve::ServeProcess;
use vhca_guest::{DriverConfig, GuestContext};

pub struct Options {
    pub rounds: u32,
    pub msg_size: u32,
}

fn e(what: &str) -> impl Fn(String) -> String + '_ {
    move |x| format!("{what}: {x}")
}

/// Runs the whole scenario; returns the report to print.
pub fn run(o: &Options) -> Result<String, String> {
    if std::env::var_os("VHCA_BIN").is_none() {
        if let Ok(me) = std::env::current_exe() {
            std::env::set_var("VHCA_BIN", me);
        }
    }
    let ready = Duration::from_secs(60);
    let cfg = DriverConfig::small();
    let src = ServeProcess::start(2, ready).map_err(|x| e("source vhca serve")(x.to_string()))?;
    let dst =
        ServeProcess::start(2, ready).map_err(|x| e("destination vhca serve")(x.to_string()))?;
    let mut a =
        GuestContext::connect(src.socket(0), &cfg).map_err(|x| e("guest on vf0")(x.to_string()))?;
    let mut b =
        GuestContext::connect(src.socket(1), &cfg).map_err(|x| e("guest on vf1")(x.to_string()))?;
    let (ea, eb) = rc_pair(
        &mut a,
        &mut b,
        1 << 16,
        16,
        (Psn(0x123), Psn(0xfffffe)),
        Mtu::Mtu1024,
    )
    .map_err(|x| x.to_string())?;
    let size = o.msg_size.min(1 << 15);
    rc_pingpong(&mut a, &ea, &mut b, &eb, size, 20)
        .map_err(|x| e("traffic before")(x.to_string()))?;
    let mut ma = Migration::begin(a.driver_mut(), dst.socket(0))
        .map_err(|x| e("begin vf0")(x.to_string()))?;
    let mut mb = Migration::begin(b.driver_mut(), dst.socket(1))
        .map_err(|x| e("begin vf1")(x.to_string()))?;
    for _ in 0..o.rounds {
        rc_pingpong(&mut a, &ea, &mut b, &eb, size, 20)
            .map_err(|x| e("traffic during pre-copy")(x.to_string()))?;
        ma.round(a.driver())
            .map_err(|x| e("round vf0")(x.to_string()))?;
        mb.round(b.driver())
            .map_err(|x| e("round vf1")(x.to_string()))?;
    }
    let ta = ma
        .finish(a.driver_mut())
        .map_err(|x| e("finish vf0")(x.to_string()))?;
    let tb = mb
        .finish(b.driver_mut())
        .map_err(|x| e("finish vf1")(x.to_string()))?;
    // The same QPs, now in the destination process, carry on; every opcode is checked.
    rc_pingpong(&mut a, &ea, &mut b, &eb, size, 20)
        .map_err(|x| e("traffic after")(x.to_string()))?;
    for s in [0, 1, size] {
        rc_every_opcode(&mut a, &ea, &mut b, &eb, s)
            .map_err(|x| e("every opcode after")(x.to_string()))?;
    }
    drop(src);
    Ok(format!(
        "vf0 ({} -> {}):\n{ta}\nvf1:\n{tb}\nafter: the same QPs (0x{:06x} <-> 0x{:06x}) carried ping-pong and every RC opcode, data checked\n",
        "source", "destination", ea.qpn.0, eb.qpn.0
    ))
}
