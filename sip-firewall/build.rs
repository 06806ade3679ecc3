//! Builds the XDP program (`sip-firewall-ebpf`) with aya-build, so that `cargo build` of the
//! daemon embeds a program built from the same tree. Needs the nightly toolchain with
//! rust-src and bpf-linker: `cargo xtask setup` installs both.

fn main() -> anyhow::Result<()> {
    let ebpf = aya_build::Package {
        name: "sip-firewall-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../sip-firewall-ebpf"),
        ..Default::default()
    };
    // The program also compiles the shared types: rebuild when they change.
    println!(
        "cargo:rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../sip-firewall-common/src")
    );
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::default())
}
