//! Relay mode (`[registrar] mode = "relay"`, `crate::registrar::relay`): the operator's
//! registrar behind the edge keeps bindings and credentials. REGISTER goes to `relay_to`
//! with our Path entry and its flow token (RFC 3327, RFC 5626), credentials untouched; the
//! requests of our domains go there too (or to the call server `[proxy] inbound` when one is
//! set), and the registrar (or call server) challenges them. Their answers
//! come back through the response context as any peer's; from them the edge learns the
//! registered flows (200) and the authentication failures of a source (401/403/407 to
//! credentials). Requests from the registrar or the call server whose top Route is our Path
//! entry go down the flow its token names.

use super::*;
use crate::registrar::{config::Mode, relay};
use route::flow;

/// What the response context needs of a relayed request's answer, taken from its client
/// transaction before the answer moves on.
pub(super) struct Sent {
    method: String,
    /// The flow token of our Path entry (a relayed REGISTER).
    token: Option<String>,
    /// Its Contact values (a relayed REGISTER).
    contacts: Vec<String>,
    /// The address of record (To URI) of a relayed REGISTER.
    aor: String,
    /// The user name of the credentials it carried, if any.
    user: Option<String>,
}

impl Core {
    /// Whether the operator's registrar keeps the bindings.
    pub(super) fn relay_mode(&self) -> bool {
        self.settings.registrar.mode == Mode::Relay
    }

    /// Forward `msg` inward to `hop` (`[registrar] relay_to` or `[proxy] inbound`; by name:
    /// RFC 3263, with failover); `record_route`: as [`Req::onward`].
    fn forward_inward(
        &mut self,
        r: &Req<'_>,
        msg: SipMsg,
        record_route: Option<Transport>,
        hop: Option<NextHop>,
    ) -> Result<(), LocalReply> {
        match hop {
            Some(NextHop::Addr(addr)) => self.forward(
                &r.onward(record_route),
                msg,
                vec![(
                    None,
                    Destination {
                        addr,
                        transport: Transport::Datagram,
                    },
                )],
            ),
            Some(NextHop::Name(name)) => self.resolve_later(&r.onward(record_route), msg, name),
            // Validation requires relay_to in relay mode.
            None => Err(answer(500, "No Registrar")),
        }
    }

    /// A REGISTER for one of our domains, relayed: our Path entry on top (RFC 3327 4.3: a
    /// proxy adds its entry above those already there) with the token of the flow it came
    /// on, `Supported: path` (so that a registrar that checks the UA's support keeps the
    /// Path), the credentials untouched. The registrar's answers are relayed back.
    pub(super) fn relay_register(
        &mut self,
        r: &Req<'_>,
        mut msg: SipMsg,
    ) -> Result<(), LocalReply> {
        let flow = Destination {
            addr: r.ctx.source,
            transport: r.ctx.transport,
        };
        let token = self.keys.flow.seal(self.unix_secs(r.now), flow);
        // The registrar reaches us over UDP; the entry names our side toward it once the
        // registrar's address is known (`Core::outward`).
        let entry = flow::path_entry(&self.local.hostport_for(Transport::Datagram), &token);
        msg.push_front(HeaderName::Other("Path"), entry);
        if !msg
            .all(HeaderName::Supported)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("path"))
        {
            msg.push(HeaderName::Supported, "path".into());
        }
        let registrar = self.settings.registrar.relay_to.clone();
        self.forward_inward(r, msg, None, registrar)
    }

    /// An initial request, not a REGISTER, in relay mode: toward our domains (from anyone),
    /// and from phones that claim to be our subscribers (their From names our domain) toward
    /// anywhere, it goes to the call server (`[proxy] inbound`, else the registrar),
    /// record-routed, with its credentials: that server authenticates and routes it (None: forwarded); an INVITE's credentials pass
    /// the fraud guard's checks that count nothing first (`relay_fraud`). A trusted peer's request to
    /// a foreign domain, and any request in local mode, takes the usual way (the message
    /// back); an outsider's to a foreign domain is refused (no open relay).
    pub(super) fn relay_initial(
        &mut self,
        r: &Req<'_>,
        mut msg: SipMsg,
        local_target: bool,
        trusted: bool,
    ) -> Result<Option<SipMsg>, LocalReply> {
        if !self.relay_mode() {
            return Ok(Some(msg));
        }
        let from_ours = r
            .m
            .get(HeaderName::From)
            .and_then(|f| name_addr::parse_single(f).ok())
            .is_some_and(|a| matches!(a.uri, Uri::Sip(u) if self.local.domain_of(&u).is_some()));
        if !local_target && trusted {
            return Ok(Some(msg));
        }
        if !local_target && !from_ours {
            crate::logging::security_event("relay_refused", r.source().ip(), "open relay", 1);
            return Err(answer(403, "Relaying Forbidden"));
        }
        if !trusted {
            // RFC 3325: identities pass only within the trust domain.
            self.strip_identity(&mut msg);
        }
        if r.method == "INVITE" {
            self.relay_fraud_precheck(&msg)?;
        }
        let rr = forward::creates_dialog(r.method).then_some(r.ctx.transport);
        let inbound = self.settings.inbound.clone();
        let hop = inbound.or_else(|| self.settings.registrar.relay_to.clone());
        self.forward_inward(r, msg, rr, hop).map(|()| None)
    }

    /// A request whose top Route is our Path entry `entry` with flow token `token` (RFC
    /// 5626 5.3):
    /// from the registrar (`relay_to`), the call server (`[proxy] inbound`) or an
    /// allow-listed host only (anyone else writing our
    /// Path into a Route is refused: no open relay), to the flow the token names while a
    /// registration of it lasts. A token that does not open gets 403, one of a flow that is
    /// no longer registered 430 (RFC 5626 5.3). The inner Path entries the entry carries
    /// sealed (`super::hide::path`) become the Route set down the flow; a seal that does
    /// not open under the token gets 403. A Request-URI that is a binding we sealed goes
    /// down the flow as the inner contact.
    pub(super) fn flow_hop(
        &mut self,
        r: &Req<'_>,
        mut msg: SipMsg,
        entry: &str,
        token: &str,
    ) -> Result<(), LocalReply> {
        let (ctx, now) = (r.ctx, r.now);
        let from_registrar = [&self.settings.registrar.relay_to, &self.settings.inbound]
            .into_iter()
            .filter_map(|hop| hop.as_ref().and_then(NextHop::addr))
            .any(|a| a.ip().to_canonical() == ctx.source.ip().to_canonical());
        if !self.relay_mode() || !(from_registrar || self.is_trusted(ctx)) {
            self.refused(Some(ctx.source), "flow_outsider");
            return Err(answer(403, "Forbidden"));
        }
        let Some(opened) = self.keys.flow.open(token) else {
            self.refused(Some(ctx.source), "bad_flow_token");
            return Err(answer(403, "Forbidden"));
        };
        if self.relayed.lock().get(&opened.flow, now).is_none() {
            self.refused(Some(ctx.source), "flow_failed");
            return Err(answer(430, "Flow Failed"));
        }
        let Ok(inner) = self.keys.path.reveal(entry, token) else {
            self.refused(Some(ctx.source), "bad_hidden_path");
            return Err(answer(403, "Forbidden"));
        };
        // The registrar calls the binding it was given (`super::hide::binding`): the phone
        // down the flow gets its own contact.
        if let Some(inner) = self.sealed_target(&msg, ctx.source, now)? {
            msg.set_request_uri(&inner);
        }
        self.down_the_flow(r, msg, opened.flow, inner, "flow")
    }
}

impl Sent {
    /// What an answer to `req` (as we sent it) needs later, when `wanted` (a final answer
    /// in relay mode).
    pub(super) fn of(req: &SipMsg, wanted: bool) -> Option<Sent> {
        if !wanted {
            return None;
        }
        let method = req
            .get(HeaderName::CSeq)
            .and_then(scalar::cseq)?
            .1
            .to_string();
        let user = ["Authorization", "Proxy-Authorization"]
            .into_iter()
            .find_map(|h| req.get(HeaderName::Other(h)))
            .map(|v| credentials_user(v).unwrap_or_default());
        let register = method == "REGISTER";
        Some(Sent {
            token: register
                .then(|| {
                    req.get(HeaderName::Other("Path"))
                        .and_then(flow::flow_token_of)
                })
                .flatten(),
            contacts: if register {
                req.all(HeaderName::Contact).map(str::to_string).collect()
            } else {
                Vec::new()
            },
            aor: req
                .get(HeaderName::To)
                .and_then(|t| name_addr::parse_single(t).ok())
                .map(|a| a.uri_text.to_ascii_lowercase())
                .unwrap_or_default(),
            method,
            user,
        })
    }
}

impl Core {
    /// The registrar's final answer `m` (`code`) to a request we relayed (`sent`, of the
    /// server transaction `skey`, whose source asked): a 2xx
    /// to a REGISTER registers its flow (the source is known good); a refusal of
    /// credentials (401, 407 without `stale=true`, 403) is an authentication failure of the
    /// source, toward the same ban as local ones. The registrar's nonce is not bound to the
    /// source as ours are, so the failure is unproven: it never bans a known source.
    pub(super) fn relayed_answer(
        &mut self,
        sent: Option<&Sent>,
        skey: &ServerKey,
        code: u16,
        m: &Message<'_>,
        now: Instant,
    ) {
        let (Some(sent), Some(source)) = (sent, self.servers.get(skey).map(|s| s.source)) else {
            return;
        };
        if sent.method == "REGISTER" && (200..300).contains(&code) {
            self.learn_flow(sent, m, now);
            return;
        }
        let Some(user) = &sent.user else { return };
        let stale = m
            .headers
            .iter()
            .filter(|h| {
                matches!(h.name, HeaderName::Other(n)
                    if n.eq_ignore_ascii_case("WWW-Authenticate")
                        || n.eq_ignore_ascii_case("Proxy-Authenticate"))
            })
            .any(|h| {
                h.value
                    .to_ascii_lowercase()
                    .replace(' ', "")
                    .contains("stale=true")
            });
        if matches!(code, 401 | 403 | 407) && !stale {
            self.observer
                .auth_failure(source, Some(user), "registrar_refused");
        }
    }

    /// A 200 to a relayed REGISTER: the flow its token names is registered for what the
    /// registrar granted its contacts (zero: unregistered).
    fn learn_flow(&mut self, sent: &Sent, m: &Message<'_>, now: Instant) {
        let Some(opened) = sent.token.as_deref().and_then(|t| self.keys.flow.open(t)) else {
            return;
        };
        let expires = relay::granted(sent.contacts.iter().map(String::as_str), m);
        let flow = opened.flow;
        let learnt =
            self.relayed
                .lock()
                .learn(&self.settings.registrar, flow, &sent.aor, expires, now);
        match learnt {
            Ok(()) => {
                if !expires.is_zero() {
                    let user = sent.user.as_deref().unwrap_or("");
                    self.observer.authenticated(flow.addr, user);
                    self.keep_relayed_alive(flow, &sent.aor, &sent.contacts, now);
                }
            }
            Err(full) => {
                crate::logging::security_event(
                    "relayed_table_full",
                    flow.addr.ip(),
                    full.label(),
                    1,
                );
                self.metrics
                    .relayed
                    .full
                    .with_label_values(&[full.label()])
                    .inc();
            }
        }
        self.metrics
            .relayed
            .flows
            .set(self.relayed.lock().len() as i64);
    }

    /// Drop the relayed flows that expired.
    pub(super) fn expire_relayed(&mut self, now: Instant) {
        self.relayed.lock().expire(now);
        self.metrics
            .relayed
            .flows
            .set(self.relayed.lock().len() as i64);
    }

    /// Registered flows of relay mode (for `status`).
    pub fn relayed_flows(&self) -> usize {
        self.relayed.lock().len()
    }
}

/// The `username` of Digest credentials.
fn credentials_user(value: &str) -> Option<String> {
    crate::auth::digest::Credentials::parse(value)
        .ok()
        .map(|c| c.username)
}
