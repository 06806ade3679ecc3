//! No open relay: who may send a request where.

/// Who sent the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// A prefix of `policy.allow` (trunk, PBX).
    Trusted,
    /// One of our users, authenticated by digest.
    LocalUser,
    /// Anybody else.
    Outsider,
}

/// Where the request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A user of one of our domains (or the proxy itself).
    Local,
    /// Another domain.
    Foreign,
}

/// Whether a new (out-of-dialog) request may go on. Requests to our users are accepted from
/// anyone (that is what a registrar is for); requests to other domains only from trusted
/// peers and our authenticated users. Everything else would make us an open relay.
pub fn may_relay(sender: Sender, target: Target) -> bool {
    match target {
        Target::Local => true,
        Target::Foreign => matches!(sender, Sender::Trusted | Sender::LocalUser),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert!(may_relay(Sender::Outsider, Target::Local));
        assert!(!may_relay(Sender::Outsider, Target::Foreign));
        assert!(may_relay(Sender::LocalUser, Target::Foreign));
        assert!(may_relay(Sender::Trusted, Target::Foreign));
    }
}
