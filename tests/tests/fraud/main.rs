//! Toll fraud, against the real daemon from a namespace: our subscriber's phone
//! and the trunk (`[proxy] outbound`) are UDP sockets in namespace a (`client.rs`); each
//! line: attack — what the edge does — test fn.
//!
//! - A stolen account calls premium-rate numbers (+1 900 in its `00`, `+` and `011` forms,
//!   +881 satellite) — 403 "Destination Denied", counted in
//!   `sipfw_fraud_refused_total{reason="denied_prefix"}`, nothing reaches the trunk —
//!   `destinations::denied_prefix_never_reaches_the_trunk`
//! - Many simultaneous international calls (rule `00`, concurrent critical 2) — two
//!   connect, the third gets 403 and the account is suspended (a national call too), across
//!   a restart, until `fraud unblock` —
//!   `suspension::concurrent_calls_suspend_until_unblocked`
//! - A loop of short calls (calls_per_minute critical 4, sequential critical 3) — refused
//!   at the count, not before — `limits::call_rate_and_sequence_trip_at_the_count`
//! - A call left up for ever — BYE to both parties at `max_call_duration` —
//!   `limits::max_call_duration_ends_the_call_both_ways`
//! - Hanging up on paper only: a BYE with the dialog's Call-ID, From-tag and our stamp but
//!   a made-up To-tag, which the trunk answers 481 while the call goes on — the call counts
//!   until a 2xx to a BYE of its dialog: a third international call under concurrent
//!   critical 2 still gets 403; the real hang-up (200) frees the slot at once —
//!   `hangup::only_an_answered_bye_frees_the_call`

mod client;
mod destinations;
mod hangup;
mod limits;
mod suspension;
