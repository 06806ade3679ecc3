//! Prints what the verifier says about the XDP program, its capture tap and the UDP
//! listeners' steering program (`SO_REUSEPORT`): instructions processed, JIT size.
//! `cargo run -p sip-firewall-tests --example verifier_stats` (as root).

fn main() -> anyhow::Result<()> {
    let fp = sip_firewall::xdp::FastPath::load()?;
    let info = fp.program().info()?;
    println!(
        "verified instructions: {:?}, jited size: {} bytes",
        info.verified_instruction_count(),
        info.size_jitted()
    );
    if let Some(tap) = fp.tap_program() {
        let info = tap.info()?;
        println!(
            "capture tap (tail-called while a capture runs): verified instructions: {:?}, jited size: {} bytes",
            info.verified_instruction_count(),
            info.size_jitted()
        );
    }
    let steer = sip_firewall::server::steer::Steering::load()?;
    let info = steer.program()?.info()?;
    println!(
        "UDP steering (SO_REUSEPORT, by Call-ID): verified instructions: {:?}, jited size: {} bytes",
        info.verified_instruction_count(),
        info.size_jitted()
    );
    Ok(())
}
