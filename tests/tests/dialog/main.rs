//! Dialog integrity at the edge: attacks from a namespace against the real daemon, one
//! module per topic; each line: attack — what the edge does — test fn.
//!
//! - An outsider's Record-Route stamp replayed from a third address toward an arbitrary
//!   host — 403, counted in `sipfw_dialog_refused_total{reason="not_a_party"}`, nothing
//!   reaches the host — `stamp_replay::replayed_stamp_relays_nothing`
//! - The same stamp used by the caller itself toward a third address — relayed to the
//!   callee only — `stamp_replay::replayed_stamp_relays_nothing`
//! - An outsider's P-Asserted-Identity / Remote-Party-ID — removed —
//!   `stamp_replay::replayed_stamp_relays_nothing`
//! - Forged 603s from another address for the open branch of a ringing call and for the
//!   next counter values — dropped as strays (`sipfw_proxy_reply_wrong_source_total`), the
//!   call answered — `forged_replies::forged_603_for_an_open_branch_fails_no_call`
//! - INVITEs to an unknown user and to an unregistered subscriber — 480 for both —
//!   `enumeration::unknown_and_unregistered_users_look_the_same`
//! - A call under way while `[auth] secret` is rolled (the edge restarted with the new
//!   secret and the old one in `previous_secrets`) — its BYE still relays, counted in
//!   `sipfw_auth_previous_key_total{what="stamp"}`; with the old secret dropped its
//!   in-dialog requests get 404 —
//!   `rotation::a_call_survives_a_secret_rollover_and_ends_with_the_old_secret`

mod call;
mod enumeration;
mod forged_replies;
mod rotation;
mod stamp_replay;
