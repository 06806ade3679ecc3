//! How the benchmark's frames reach `veth-a`.
//!
//! The NIC-like way is `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`: an injector
//! program redirects each frame into `veth-a`, so `veth-b` receives `xdp_frame`s and runs
//! its XDP program in native mode before any socket buffer exists. Some kernels refuse
//! live-frame runs (EPERM even as root: a lockdown or security module, or a kernel built
//! without it); then trafgen on one CPU sends the same frames through an AF_PACKET socket.
//! Those reach `veth-b` as skbs: XDP runs on the skb path and pays a copy, as nftables and
//! the socket pay theirs, so the three still compare on the same frames, but the figures
//! are not a NIC's and the report says so.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::{
    EbpfLoader,
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
};
use sip_firewall::xdp::program::BENCH_OBJECT;
use sip_firewall_tests::netns::{Pair, in_ns};

/// Frames per live-frame batch.
pub const BATCH: u32 = 64;
/// Frames per `BPF_PROG_TEST_RUN` call, and per trafgen start.
const PER_CALL: u32 = 200_000;

/// The way frames are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injector {
    /// `BPF_PROG_TEST_RUN` live frames redirected into `veth-a` (NIC-like: `xdp_frame`s).
    LiveFrames,
    /// trafgen on one CPU (AF_PACKET: skbs).
    Trafgen,
}

impl Injector {
    /// What the report says of the sender.
    pub fn describe(self) -> String {
        match self {
            Injector::LiveFrames => format!(
                "sender = BPF_PROG_TEST_RUN live frames (batch {BATCH}) redirected into veth-a, \
                 so veth-b gets xdp_frames as from a NIC driver (native XDP)"
            ),
            Injector::Trafgen => "sender = trafgen on 1 CPU into veth-a (fallback: this kernel \
                 refuses live-frame test runs); veth-b gets skbs, so XDP runs on the skb path \
                 and pays a copy: not a NIC's figures, but the three methods see the same frames"
                .to_string(),
        }
    }

    /// Which way works here: one live-frame run on a throw-away pair; on EPERM, trafgen
    /// (when installed), with the errno and what it means printed.
    pub fn probe(frame: &[u8]) -> anyhow::Result<Injector> {
        let pair = Pair::new("bi")?;
        let Err(e) = live_frames(&pair, frame, Some(1)) else {
            return Ok(Injector::LiveFrames);
        };
        let errno = e
            .chain()
            .find_map(|c| c.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error);
        if errno != Some(libc::EPERM) {
            return Err(e.context(format!(
                "BPF_PROG_TEST_RUN with live frames failed (errno {errno:?})"
            )));
        }
        eprintln!(
            "bench xdp: BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES answered EPERM \
             (errno {}): this kernel refuses live-frame test runs even as root (kernel \
             lockdown, a security module, or a build without them); falling back to trafgen",
            libc::EPERM
        );
        let found = Command::new("sh")
            .args(["-c", "command -v trafgen"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            bail!(
                "live frames refused (EPERM) and no trafgen to fall back on: \
                 run `cargo xtask setup` (Debian package netsniff-ng)"
            );
        }
        Ok(Injector::Trafgen)
    }

    /// Send `frame` into `veth-a` of `pair` for `run_for`; how many frames left.
    pub fn inject(self, pair: &Pair, frame: &[u8], run_for: Duration) -> anyhow::Result<u64> {
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < run_for {
            sent += match self {
                Injector::LiveFrames => live_frames(pair, frame, None)?,
                Injector::Trafgen => trafgen(pair, frame)?,
            };
        }
        Ok(sent)
    }
}

fn ifindex(ns: &str, name: &'static str) -> anyhow::Result<u32> {
    in_ns(ns, move || {
        let c = std::ffi::CString::new(name)?;
        // SAFETY: a valid C string.
        let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if i == 0 {
            bail!("no interface {name}");
        }
        Ok(i)
    })
}

/// One `BPF_PROG_TEST_RUN` call of the injector (`repeat` frames, default PER_CALL).
fn live_frames(pair: &Pair, frame: &[u8], repeat: Option<u32>) -> anyhow::Result<u64> {
    let target = ifindex(&pair.ns_a, pair.if_a)?;
    let frame = frame.to_vec();
    let repeat = repeat.unwrap_or(PER_CALL);
    in_ns(&pair.ns_a, move || {
        let mut ebpf = EbpfLoader::new()
            .override_global("TARGET_IFINDEX", &target, true)
            .load(BENCH_OBJECT)?;
        let prog: &mut Xdp = ebpf
            .program_mut("bench_redirect")
            .context("injector")?
            .try_into()?;
        prog.load()?;
        prog.test_run(TestRunOptions {
            data_in: Some(&frame),
            repeat,
            attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
            ..Default::default()
        })?;
        Ok(u64::from(repeat))
    })
}

/// One trafgen start of PER_CALL frames on veth-a; what veth-a transmitted meanwhile.
/// trafgen stops at its first failed send (a full veth ring answers EAGAIN when the
/// receiver is slower than the sender): the caller starts it again.
fn trafgen(pair: &Pair, frame: &[u8]) -> anyhow::Result<u64> {
    let conf = std::env::temp_dir().join(format!("sfwbench-{}.trafgen", std::process::id()));
    let bytes: Vec<String> = frame.iter().map(|b| format!("0x{b:02x}")).collect();
    std::fs::write(&conf, format!("{{ {} }}\n", bytes.join(", ")))?;
    let before = tx_packets(pair)?;
    let out = Command::new("ip")
        .args(["netns", "exec", &pair.ns_a, "trafgen", "--dev", pair.if_a])
        .args(["--cpus", "1", "--no-sock-mem", "--notouch-irq"])
        .arg("--conf")
        .arg(&conf)
        .args(["--num", &PER_CALL.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("starting trafgen");
    let _ = std::fs::remove_file(PathBuf::from(&conf));
    let out = out?;
    let sent = tx_packets(pair)? - before;
    // A stop on a full ring after some frames is expected (the caller starts it again); a
    // trafgen that sent nothing failed, and figures over no frames would be noise.
    if sent == 0 && !out.status.success() {
        bail!(
            "trafgen sent nothing ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(sent)
}

/// Frames veth-a has transmitted, from `ip -s -j link`.
fn tx_packets(pair: &Pair) -> anyhow::Result<u64> {
    let out = Command::new("ip")
        .args([
            "-n", &pair.ns_a, "-s", "-j", "link", "show", "dev", pair.if_a,
        ])
        .output()
        .context("ip link")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("ip -j link")?;
    v[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .context("no tx packets in `ip -s -j link`")
}
