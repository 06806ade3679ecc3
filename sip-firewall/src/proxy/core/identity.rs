//! Who is asking: digest authentication (RFC 3261 22, RFC 8760) and the identities our
//! users may assert (RFC 3325).

use super::*;

impl Core {
    /// Digest authentication. Ok: the user; Err: the challenge or refusal to answer with.
    /// `proxy`: as a proxy (407), else as the registrar (401). A success marks `r` proved.
    pub(super) fn authenticate(
        &mut self,
        r: &mut Req<'_>,
        ruri: &str,
        realm: &str,
        must_be: &[&str],
        proxy: bool,
    ) -> Result<String, LocalReply> {
        let (m, ctx, method) = (r.m, r.ctx, r.method);
        let cred_header = if proxy {
            "Proxy-Authorization"
        } else {
            "Authorization"
        };
        let values: Vec<&str> = m
            .headers
            .iter()
            .filter(
                |h| matches!(h.name, HeaderName::Other(n) if n.eq_ignore_ascii_case(cred_header)),
            )
            .map(|h| h.value.as_ref())
            .collect();
        let secs = self.unix_secs(r.now);
        let local = &self.local;
        let names_us = |u: &str| matches!(uri::parse(u), Ok(Uri::Sip(s)) if local.is_us(&s));
        let req = auth::Request {
            method,
            uri: ruri,
            uri_also_ok: &names_us,
            realm,
            must_be,
            client: ctx.source.ip(),
        };
        let verdict = self.auth.lock().verify(&values, &req, secs);
        match verdict {
            Outcome::Authenticated { user } => {
                r.proved = true;
                // A login from a network this account has not used lately.
                self.fraud
                    .lock()
                    .login(&format!("{user}@{realm}"), ctx.source.ip(), secs);
                self.metrics.auth.with_label_values(&["success"]).inc();
                self.observer.authenticated(ctx.source, &user);
                Ok(user)
            }
            Outcome::Challenge { failure: None } => {
                self.metrics.auth.with_label_values(&["challenge"]).inc();
                Err(self.challenge(proxy, realm, false, secs, ctx.source.ip()))
            }
            Outcome::Challenge {
                failure: Some(reason),
            } => {
                self.auth_failed(ctx.source, must_be, reason);
                Err(self.challenge(proxy, realm, false, secs, ctx.source.ip()))
            }
            // A nonce not good here (expired, another client, boot or node): a fresh
            // challenge with stale=true, counted by why, and never an authentication
            // failure: the ban learner does not hear of it.
            Outcome::Stale { reason } => {
                debug!(source = %ctx.source, reason, "nonce not good here: stale=true");
                self.metrics.auth.with_label_values(&[reason]).inc();
                Err(self.challenge(proxy, realm, true, secs, ctx.source.ip()))
            }
            // The digest does not cover this request (RFC 7616 3.4.6: 400). After a nonce
            // issued to this source, so a failure of its own.
            Outcome::BadRequest { reason } => {
                self.auth_failed(ctx.source, must_be, reason);
                Err(answer(
                    400,
                    "Bad Request (digest uri is not the Request-URI)",
                ))
            }
            Outcome::Forbidden { reason } => {
                self.auth_failed(ctx.source, must_be, reason);
                Err(answer(403, "Forbidden"))
            }
        }
    }

    /// Credentials refused for `reason`: counted, and reported to the observer (the ban
    /// learner) as an authentication failure of `source`.
    fn auth_failed(&self, source: SocketAddr, must_be: &[&str], reason: &'static str) {
        debug!(%source, reason, "authentication failed");
        self.metrics.auth.with_label_values(&[reason]).inc();
        self.observer
            .auth_failure(source, must_be.first().copied(), reason);
    }

    /// The challenge to answer with: 407 with Proxy-Authenticate as a proxy, 401 with
    /// WWW-Authenticate as the registrar (RFC 3261 22.2, 22.3).
    fn challenge(
        &self,
        proxy: bool,
        realm: &str,
        stale: bool,
        secs: u64,
        client: IpAddr,
    ) -> LocalReply {
        let chal_header = if proxy {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        LocalReply {
            code: if proxy { 407 } else { 401 },
            phrase: if proxy {
                "Proxy Authentication Required"
            } else {
                "Unauthorized"
            },
            extra: self
                .auth
                .lock()
                .challenges(realm, stale, secs, client)
                .into_iter()
                .map(|c| format!("{chal_header}: {c}"))
                .collect(),
        }
    }

    /// This node's name in a cluster, carried by its nonces (set at start, before the first
    /// challenge).
    pub fn set_node(&mut self, node: &str) {
        self.auth.lock().set_node(node);
    }

    /// The identities a user may assert, replaced (admin API).
    pub fn set_identities(&mut self, user: &str, domain: &str, ids: &[String]) {
        let k = (user.to_string(), domain.to_ascii_lowercase());
        if ids.is_empty() {
            self.identities.lock().remove(&k);
        } else {
            self.identities.lock().insert(k, ids.to_vec());
        }
    }

    /// The identities a user may assert besides their own URI.
    pub fn identities_of(&self, user: &str, domain: &str) -> Vec<String> {
        self.identities
            .lock()
            .get(&(user.to_string(), domain.to_ascii_lowercase()))
            .cloned()
            .unwrap_or_default()
    }

    /// Remove the identity headers (`[proxy] identity_headers`) of a request from outside
    /// the trust domain (RFC 3325 5: they are asserted only between trusted elements).
    pub(super) fn strip_identity(&self, msg: &mut SipMsg) {
        for h in &self.settings.identity_headers {
            msg.remove(HeaderName::Other(h));
        }
    }

    /// The P-Asserted-Identity of an authenticated user (RFC 3325 9.1): the identity their
    /// P-Preferred-Identity names when they may assert it, else `sip:user@realm`.
    pub(super) fn asserted_identity(&self, m: &Message<'_>, user: &str, realm: &str) -> String {
        let own = format!("sip:{user}@{realm}");
        let allowed = self.identities_of(user, realm);
        let preferred = m
            .headers
            .iter()
            .filter(|h| {
                matches!(h.name, HeaderName::Other(n) if n.eq_ignore_ascii_case("P-Preferred-Identity"))
            })
            .flat_map(|h| h.value.split(','))
            .filter_map(|v| {
                let v = v.trim();
                let uri = match (v.find('<'), v.rfind('>')) {
                    (Some(a), Some(b)) if a < b => v.get(a + 1..b)?,
                    _ => v,
                };
                Some(uri.trim().to_string())
            })
            .find(|u| u.eq_ignore_ascii_case(&own) || allowed.iter().any(|a| a.eq_ignore_ascii_case(u)));
        format!("<{}>", preferred.unwrap_or(own))
    }
}
