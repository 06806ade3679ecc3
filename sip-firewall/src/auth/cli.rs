//! `sip-firewall user add`: print the `[auth]` line for a new subscriber.

use std::process::ExitCode;

use clap::Subcommand;

/// Subscriber management.
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Print the `[auth] users` line for a subscriber: HA1 hashes for MD5 and SHA-256,
    /// never the password itself.
    Add {
        /// The user part (alice in sip:alice@example.com).
        user: String,
        /// The domain (one of `sip.domains`); it is the digest realm.
        #[arg(long)]
        domain: String,
        /// The password, hashed into ha1 and ha1_sha256.
        #[arg(long, conflicts_with = "ha1", required_unless_present = "ha1")]
        password: Option<String>,
        /// An HA1 hash computed elsewhere (32 hex digits: MD5, 64: SHA-256).
        #[arg(long)]
        ha1: Option<String>,
    },
}

/// Run a `user` subcommand.
pub fn run(cmd: UserCmd) -> ExitCode {
    match cmd {
        UserCmd::Add {
            user,
            domain,
            password,
            ha1,
        } => {
            if user.is_empty() || user.contains([':', '@', ' ', '"']) {
                eprintln!("sip-firewall: bad user name {user:?}");
                return ExitCode::from(2);
            }
            if domain.is_empty() || domain.contains([' ', '"', '@']) {
                eprintln!("sip-firewall: bad domain {domain:?}");
                return ExitCode::from(2);
            }
            if let Some(h) = &ha1
                && (!matches!(h.len(), 32 | 64) || !h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                eprintln!("sip-firewall: --ha1 must be 32 (MD5) or 64 (SHA-256) hex digits");
                return ExitCode::from(2);
            }
            println!("# add to [auth] (or merge into its users list):");
            println!(
                "{}",
                super::users::config_line(&user, &domain, password.as_deref(), ha1.as_deref())
            );
            ExitCode::SUCCESS
        }
    }
}
