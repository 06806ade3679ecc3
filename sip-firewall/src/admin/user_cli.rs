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
    /// Remove a subscriber from the running daemon (and its state).
    Del {
        user: String,
        #[arg(long)]
        domain: String,
    },
    /// List the running daemon's subscribers.
    List,
}

/// Run a `user` subcommand.
pub fn run(cmd: UserCmd, common: &super::commands::Common) -> ExitCode {
    use super::{commands, protocol::Request};
    match cmd {
        UserCmd::Del { user, domain } => {
            return commands::ask_user(common, Request::UserDel { user, domain }, false);
        }
        UserCmd::List => return commands::ask_user(common, Request::UserList, false),
        UserCmd::Add { .. } => {}
    }
    match cmd {
        UserCmd::Del { .. } | UserCmd::List => ExitCode::SUCCESS,
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
                crate::auth::users::config_line(
                    &user,
                    &domain,
                    password.as_deref(),
                    ha1.as_deref()
                )
            );
            // The running daemon takes it at once (hashes only travel and are stored).
            let mut entry = crate::auth::config::UserEntry {
                user: user.clone(),
                domain: domain.clone(),
                password: None,
                ha1: None,
                ha1_sha256: None,
                identities: Vec::new(),
            };
            let d = domain.to_ascii_lowercase();
            match (&password, &ha1) {
                (Some(p), _) => {
                    entry.ha1 = Some(crate::auth::digest::Algorithm::Md5.ha1(&user, &d, p));
                    entry.ha1_sha256 =
                        Some(crate::auth::digest::Algorithm::Sha256.ha1(&user, &d, p));
                }
                (None, Some(h)) if h.len() == 32 => entry.ha1 = Some(h.to_ascii_lowercase()),
                (None, Some(h)) => entry.ha1_sha256 = Some(h.to_ascii_lowercase()),
                (None, None) => {}
            }
            commands::ask_user(common, Request::UserAdd { user: entry }, true)
        }
    }
}
