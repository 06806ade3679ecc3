//! `[cluster]`: edges in their own namespaces share bans, lists, subscribers and
//! registrations through a real `redis-server` the test starts on a Unix socket in its own
//! temp dir (no network at all; a Unix socket reaches every namespace), or, for Sentinel,
//! on TCP in a backbone namespace of the test's own (a primary, a replica and a Sentinel).
//! Installed by `cargo xtask setup` (Debian `redis-server`). One module per topic; each
//! line: attack or behaviour — what the edges do — test fn.
//!
//! - `ban add` on one edge, `ban del` on another — the others list it within a second and
//!   drop the source in XDP; the delete lifts it everywhere and in Redis; `status` lists
//!   the nodes — `bans::bans_propagate_between_nodes`
//! - `svmap` against edge A — A learns a scanner ban; B drops the same source's scan in XDP
//!   without having seen it —
//!   `bans::a_scanner_banned_on_one_edge_is_dropped_by_xdp_on_another`
//! - `svcrack` against bob on edge A — banned on A for its wrong passwords, listed by B and
//!   C within a second and dropped by their XDP; `ban del` on C lifts it —
//!   `bans::svcrack_banned_on_a_is_dropped_by_xdp_on_b_and_c`
//! - `user add` on A, `deny add` on B — the subscriber registers through B, A drops the
//!   denied source; deleting on the other node undoes both; only digest hashes reach Redis
//!   — `lists_and_users::subscribers_and_lists_apply_on_every_node`
//! - bob registers through A, alice calls him through B — the call completes via A (a
//!   cluster hop over bob's flow); after bob moves to C, A sees nothing of the next call —
//!   `registrations::a_call_through_b_reaches_bob_registered_through_a`
//! - an outsider writes A's Path Route with a forged, foreign or missing cluster-hop seal —
//!   403, nothing relayed to bob, counted —
//!   `registrations::an_outsider_forging_the_cluster_hop_route_is_refused_by_the_daemon`
//! - a binding refreshed, removed with `expires=0` and with `*` through any node, also
//!   while the nodes are cut off from Redis — every node's cache and Redis follow —
//!   `registrations::bindings_are_refreshed_and_removed_through_any_node`
//! - Redis stopped — the nodes enforce what they had (also after a restart); bans made
//!   meanwhile reach the others when it is back —
//!   `outages::bans_made_during_a_redis_outage_reach_the_others_after_it`
//! - a ban deleted while one node was cut off from Redis — lifted on that node when it
//!   returns; its own ban of the outage stays and propagates —
//!   `outages::a_ban_deleted_while_a_node_was_cut_off_is_lifted_when_it_returns`
//! - a node restarted during an outage — its queued ban and registration reach the cluster
//!   — `outages::changes_queued_during_an_outage_survive_a_restart`
//! - a node cut off from Redis — `SipFirewallClusterCutOff` fires for it alone —
//!   `outages::the_cut_off_alert_fires_for_a_node_without_redis`
//! - the nodes given only a Sentinel, then `SENTINEL FAILOVER` — they find the primary,
//!   follow the failover, keep and share bans —
//!   `sentinel::nodes_find_the_primary_through_sentinel_and_follow_a_failover`
//! - one HTTPS threat feed, two nodes — exactly one fetches it (the feed server's GETs),
//!   both drop the attackers it names; the fetcher killed, the other takes the fetching over
//!   within the lease and a refresh, its entries kept meanwhile; a node stopped gives its
//!   lease up; Redis gone, a node keeps its feed entries and then fetches for itself —
//!   `feeds::one_node_fetches_a_feed_and_the_others_receive_it`
//! - a feed's load written into Redis without a MAC (record and event), and one sealed with
//!   junk and `0.0.0.0/0` in it — the first refused and counted, the outsider it names still
//!   answered; the second's junk counted invalid, `0.0.0.0/0` refused as too wide —
//!   `feeds::a_feed_load_forged_in_redis_is_refused_and_a_sealed_one_is_vetted`
//! - a node with another `[auth] secret`, or none — refuses to start, takes nothing from
//!   Redis; a node joining later enforces the cluster's bans before it answers —
//!   `secret::a_node_with_another_secret_refuses_to_join`

mod bans;
mod feeds;
mod lists_and_users;
mod outages;
mod registrations;
mod secret;
mod sentinel;
mod setup;
