use which::which;

/// Building this crate needs `bpf-linker` on PATH; rebuild when it changes (a new LLVM may
/// produce different code).
fn main() {
    let bpf_linker = which("bpf-linker").expect(
        "bpf-linker not found on PATH: run `cargo xtask setup` (or `cargo install bpf-linker@0.10.4 --locked`)",
    );
    println!(
        "cargo:rerun-if-changed={}",
        bpf_linker.to_str().expect("bpf-linker path is UTF-8")
    );
}
