//! Topology hiding, the core's side (`super::hide` has the seals and the rules): which
//! destinations are hidden from, what a request looks like as it goes to one, the Call-IDs
//! sealed and opened, the Request-URIs that name a sealed Contact.

use super::*;

impl Core {
    /// Whether what goes to `ip` is hidden from (`[proxy] topology_hiding = "outside"` and
    /// `ip` not allow-listed: see `super::hide`).
    pub(super) fn hides_toward(&self, ip: IpAddr) -> bool {
        self.settings.topology_hiding == TopologyHiding::Outside
            && !in_any(&self.settings.allow, ip)
    }

    /// The request `b` (our Via on top) as it goes to `dest` at `now`: as it is, or as the
    /// outside sees it (`super::hide`: our Via and entry only, inner Contacts sealed; a
    /// REGISTER's inner Contacts sealed as bindings, its inner Path entries sealed in ours).
    /// Our Path entry in a REGISTER names our side toward `dest` (`route::flow::path_toward`).
    pub(super) fn outward(&self, b: &SipMsg, dest: Destination, now: Instant) -> Vec<u8> {
        let hidden = self.hides_toward(dest.addr.ip());
        let register = b.start.starts_with("REGISTER ");
        if !hidden && !register {
            return b.to_bytes();
        }
        let mut out = if hidden {
            hide::request_outward(b, self.record_routed(b))
        } else {
            b.clone()
        };
        if register {
            // The registrar reaches us over UDP (`relay_register`).
            let side = self
                .local
                .hostport_toward(Transport::Datagram, dest.addr.ip());
            route::flow::path_toward(&mut out, &side);
            if hidden {
                hide::path::hide_path(&mut out, &self.keys.path);
                let unix = self.unix_secs(now);
                hide::binding::hide_bindings(&mut out, &self.keys.contact, &side, unix, |u| {
                    self.names_inside(u)
                });
            }
        } else {
            let side = self.local.hostport_toward(dest.transport, dest.addr.ip());
            hide::hide_contacts(&mut out, &self.keys.contact, &side);
        }
        out.to_bytes()
    }

    /// Whether a Contact URI names a host inside: an allow-listed address, or a name (which
    /// may resolve inside; sealing an outside one costs the outside nothing).
    fn names_inside(&self, contact: &str) -> bool {
        match uri::parse(contact) {
            Ok(Uri::Sip(u)) => u.host.ip().is_none_or(|ip| !self.hides_toward(ip)),
            _ => true,
        }
    }

    /// The Request-URI of an in-dialog request, given back the inner Contact when it is one
    /// we sealed for the outside (`super::hide`).
    pub(super) fn reveal_target(&self, msg: &mut SipMsg) {
        let inner = msg
            .request_uri()
            .and_then(|u| self.keys.contact.reveal(u, &self.local));
        if let Some(u) = inner {
            msg.set_request_uri(&u);
        }
    }

    /// `m` with the inner Call-ID back when its Call-ID is one we sealed for the outside
    /// (`super::hide`), and the text it came with; None for any other Call-ID.
    pub(super) fn open_call_id<'a>(&self, m: &Message<'a>) -> Option<(Message<'a>, String)> {
        let i = m
            .headers
            .iter()
            .position(|h| h.name == HeaderName::CallId)?;
        let wire = m.headers.get(i)?.value.as_ref();
        let inner = self.keys.call_id.open(wire)?;
        let wire = wire.to_string();
        let mut opened = m.clone();
        if let Some(h) = opened.headers.get_mut(i) {
            h.value = Cow::Owned(inner);
        }
        Some((opened, wire))
    }

    /// The Call-ID of `msg`, a request from `from` going to `dest`, sealed when `dest` is
    /// hidden from and `seal` names the ring secret to seal under (the dialog was made
    /// inside, or the Call-ID came sealed: see `super::hide`), and remembered so that
    /// requests naming the dialog (Replaces, Join, Target-Dialog, Refer-To) name it sealed
    /// too (`hide::dialog_refs`). One that cannot be sealed is not shown: the request goes
    /// with a Call-ID of our seal's failure, which nothing matches.
    pub(super) fn hide_call_id(
        &mut self,
        msg: &mut SipMsg,
        dest: Destination,
        seal: Option<usize>,
        (from, now): (IpAddr, Instant),
    ) {
        if self.settings.topology_hiding != TopologyHiding::Outside {
            return;
        }
        let hidden = self.hides_toward(dest.addr.ip());
        if let Some(secret) = seal.filter(|_| hidden)
            && let Some(inner) = msg.get(HeaderName::CallId).map(str::to_string)
        {
            let kept = self
                .sealed_dialogs
                .lock()
                .remember(&inner, secret, from, now);
            if kept != hide::dialog_refs::Remembered::Kept {
                debug!(source = %from, event = kept.label(), "sealed Call-ID table at a bound");
                self.metrics
                    .hidden_dialogs
                    .with_label_values(&[kept.label()])
                    .inc();
            }
            let sealed = self.keys.call_id.seal(&inner, secret).unwrap_or_else(|| {
                debug!("a Call-ID could not be sealed");
                "sfwth-unsealed".into()
            });
            msg.replace_all(HeaderName::CallId, vec![sealed]);
        }
        let sealed = self.sealed_dialogs.lock();
        hide::dialog_refs::map_refs(msg, hidden, &self.keys.call_id, &sealed);
    }

    /// Whether a dialog whose caller is `caller` was made inside (its Call-ID is sealed
    /// toward the outside: `super::hide`).
    pub(super) fn made_inside(&self, caller: IpAddr) -> bool {
        in_any(&self.settings.allow, caller)
    }
}
