//! The outbox as the enforcer's [`Publish`]: its local changes, as cluster events.

use super::{outbox::Outbox, schema::Op};
use crate::enforce::publish::{LocalChange, Publish};

impl Publish for Outbox {
    fn publish(&self, change: LocalChange) {
        self.send(match change {
            LocalChange::Ban(ban) => Op::Ban { ban },
            LocalChange::Unban(ip) => Op::Unban { ip },
            // Taken here with `--force`: the other nodes refuse a prefix that wide
            // (`super::trust`), so it stays on this node.
            LocalChange::ListAdd { net, .. } if crate::enforce::lists::check(&net).is_err() => {
                return;
            }
            LocalChange::ListAdd { list, net } => Op::ListAdd { list, net },
            LocalChange::ListDel { list, net } => Op::ListDel { list, net },
        });
    }
}
