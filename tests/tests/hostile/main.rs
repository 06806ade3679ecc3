//! Hostile input: each attack tried from a namespace as an outsider would, against the real
//! daemon, and what the edge does. One module per topic; one line per attack:
//! attack — what the edge does — test fn.
//!
//! - one UDP packet with `Digest username="\é"` — parsed as a quoted-pair, no panic, the
//!   daemon keeps answering —
//!   `crash::backslash_before_multibyte_character_does_not_stop_the_daemon`
//! - copies of a request from other source ports (reflection of the stored answer) —
//!   dropped and counted, 0 bytes sent — `amplification::amplification_factors`
//! - Timer G resends toward an unverified UDP source; fat first answers — no resend; first
//!   answer to a minimal request at most 2x its size —
//!   `amplification::amplification_factors`
//! - scanner User-Agent spoofed from a registered subscriber's address — refused (counted
//!   in `sipfw_ban_refused_total`), the subscriber stays reachable; an unknown scanner is
//!   still banned — `aimed_bans::unproven_evidence_does_not_ban_a_subscriber`
//! - forged Authorization (bad nonce) five times from a subscriber's address — not counted
//!   toward an auth-failure ban — `aimed_bans::unproven_evidence_does_not_ban_a_subscriber`
//! - OPTIONS ping to the edge's own address, no `[sip] domains` — 200 from the edge to
//!   both, nothing forwarded — `own_addresses::options_ping_to_the_edge_ip`
//! - NAT storm: 300 phones behind one registered address re-register at 150/s — all
//!   register, nothing banned (known tier, throttled not banned) —
//!   `nat_storm::nat_storm_registers_every_phone`
//! - one source opening 200 TCP connections and holding them with CRLF pings — 32 kept
//!   (`[sip] max_tcp_per_source`), 168 closed at accept and counted, pings pass the gate,
//!   another host still served — `tcp_slots::one_source_cannot_hold_every_tcp_slot`
//! - ban map exhaustion: 280,000 frames from rotating addresses of one /64 and 200 spoofed
//!   IPv4 floods — one learned ban per prefix in an LRU map, `ban add` and an auth-failure
//!   ban still work, `sipfw_map_entries` shows the fill —
//!   `ban_exhaustion::ban_map_cannot_be_exhausted`
//! - a connection flood to the WebSocket (or TLS) port from one source — each SYN counted
//!   as `connection` and spending the source's flood budget; past the burst banned in XDP —
//!   `syn_flood::a_connection_flood_to_the_websocket_port_is_banned_in_xdp`
//! - junk to 5060 behind IPv6 Hop-by-Hop/Destination Options headers — the chain is walked
//!   (6 headers, 512 bytes at most) and the junk dropped as malformed; a longer chain or an
//!   unwalked header (AH, Mobility, HIP, Shim6) is malformed too — frames
//!   `xdp_verdicts::ipv6_extension_headers_are_walked`
//! - a forged reply for an open branch from another address or port — dropped in XDP as
//!   `stray_reply` (the key binds the peer) — frames
//!   `xdp_verdicts::stray_replies_must_come_from_the_peer`
//! - a panic while handling one message — caught at the message boundary, counted in
//!   `sipfw_internal_errors_total{kind}`, logged once per source a minute, the listener
//!   goes on — unit `server::tests::a_panic_costs_one_message_not_the_listener`; fuzz
//!   target `pipeline`
//! - a source filling the transaction table — 503 + Retry-After beyond `[sip]
//!   max_transactions[_per_source]`, counted — unit
//!   `proxy::core::tests::calls::transactions_bounded_per_source_and_in_total`
//! - a subscriber filling the nonce-count table (then valid logins failed as replays) — the
//!   oldest counts forgotten, their nonces stale, no valid client fails — unit
//!   `auth::nonce::tests::full_table_fails_no_valid_client`
//! - REGISTER from a spoofed source with someone else's nonce — new challenge with
//!   stale=true, nothing bound — unit
//!   `proxy::core::tests::calls::register_from_a_spoofed_source_with_someone_elses_nonce`
//! - a CANCEL copied from someone's INVITE, sent from elsewhere — 481, the call rings on —
//!   unit `proxy::core::tests::calls::cancel_from_another_source_cancels_nothing`
//! - a REGISTER's Authorization captured and replayed after a restart with the same `[auth]
//!   secret`, and to a second daemon sharing it — 401 with stale=true (the nonce names
//!   another boot), counted in `sipfw_auth_total{result="other_boot"}`, no ban —
//!   `replayed_credentials::a_captured_register_is_refused_after_a_restart`,
//!   `replayed_credentials::a_captured_register_is_refused_on_another_node`
//! - an INVITE whose digest `uri` is the edge's own URI and whose Request-URI is a trunk
//!   number — 400, nothing reaches the trunk, counted in
//!   `sipfw_auth_total{result="uri_mismatch"}` —
//!   `replayed_credentials::invite_credentials_over_the_edges_own_uri_do_not_reach_the_trunk`

mod aimed_bans;
mod amplification;
mod ban_exhaustion;
mod crash;
mod nat_storm;
mod own_addresses;
mod replayed_credentials;
mod syn_flood;
mod tcp_slots;
