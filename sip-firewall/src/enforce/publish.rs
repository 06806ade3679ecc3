//! Where the enforcer hands the changes made on this node for the other nodes of a cluster
//! (`[cluster]`): the cluster unit's outbox implements [`Publish`], so that this unit never
//! names the cluster (which applies the other nodes' changes through the [`super::Enforcer`]).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::state::{BanRecord, List};

/// A change of the bans or the lists made on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalChange {
    Ban(BanRecord),
    Unban(IpAddr),
    ListAdd { list: List, net: IpNet },
    ListDel { list: List, net: IpNet },
}

/// Takes the changes made on this node; never blocks (the implementation bounds its queue).
pub trait Publish: Send + Sync {
    fn publish(&self, change: LocalChange);
}
