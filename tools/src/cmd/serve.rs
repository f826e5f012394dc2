//! `vhca serve`.

use super::CmdResult;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use vhca_vhost::serve::{Network, ServeConfig};

#[derive(clap::Args)]
pub struct Args {
    /// How many VFs (1..=256).
    #[arg(long, default_value_t = 1)]
    vfs: u16,
    /// Where the VF sockets (vf0.sock, vf1.sock, ...) are created.
    #[arg(long, value_name = "DIR")]
    socket_dir: PathBuf,
    /// The PF's index: part of every VF's MAC and GID.
    #[arg(long, default_value_t = 0)]
    pf_index: u8,
    /// The control socket (default: DIR/ctl.sock).
    #[arg(long, value_name = "PATH")]
    ctl: Option<PathBuf>,
    /// Speak RoCEv2 over kernel UDP sockets: VF i at IP+i, port 4791 (the address must
    /// be on a local interface). Without it the VFs reach only each other, in-process.
    #[arg(long, value_name = "IP", conflicts_with = "tap")]
    udp_ip: Option<Ipv4Addr>,
    /// Carry the VFs' RoCEv2 through TAP devices, one per VF (comma-separated names; bring
    /// them up and bridge them with `ip link`). Needs --tap-ip.
    #[arg(long, value_name = "NAMES", value_delimiter = ',', requires = "tap_ip")]
    tap: Vec<String>,
    /// The first VF's IPv4 address on the TAP fabric (VF i: IP+i); the VF answers ARP.
    #[arg(long, value_name = "IP", requires = "tap")]
    tap_ip: Option<Ipv4Addr>,
    /// Microseconds a VF thread keeps polling its doorbell queue after a doorbell before
    /// it sleeps (0: never poll). Like QEMU's poll-max-ns: a guest that posts again soon
    /// is served without a wake-up.
    #[arg(long, value_name = "US", default_value_t = 32)]
    busy_poll_us: u64,
    /// Migration destination: a loaded VF may bring an identity no other VF here has
    ///
    /// A loaded device state may bring its own identity (GID/address, MAC, GUIDs) instead
    /// of the slot's, as long as no other VF of this process has any of it, and the slot
    /// keeps it until that VF migrates away again. Without it a state must name the slot's
    /// own identity. Either way its limits may not exceed this PF's, and a slot's next
    /// frontend gets the PF's limits (docs/migration.md, "Identity policy").
    #[arg(long)]
    accept_identity: bool,
    /// Milliseconds a device-state transfer may wait on the frontend's pipe before it fails
    ///
    /// From SET_DEVICE_STATE_FD until CHECK_DEVICE_STATE: a load pipe that never closes or a
    /// save pipe nobody reads fails the transfer after this long, and the slot recovers.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    state_transfer_timeout_ms: u64,
}

impl Args {
    pub fn run(self) -> CmdResult {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
        let cfg = ServeConfig {
            vfs: self.vfs,
            socket_dir: self.socket_dir,
            pf_index: self.pf_index,
            ctl: self.ctl,
            network: match (self.udp_ip, self.tap_ip) {
                (Some(ip), _) => Network::Udp(ip),
                (None, Some(ip)) => Network::Tap { taps: self.tap, ip },
                (None, None) => Network::Switch,
            },
            busy_poll: std::time::Duration::from_micros(self.busy_poll_us),
            accept_identity: self.accept_identity,
            state_transfer_timeout: std::time::Duration::from_millis(
                self.state_transfer_timeout_ms,
            ),
        };
        vhca_vhost::serve::run(&cfg)?;
        Ok(())
    }
}
