//! Loop detection (RFC 3261 16.3 step 4, 16.6 step 8): our branches carry a keyed tag of
//! the request, which a request coming back through us unchanged repeats.

use subtle::ConstantTimeEq as _;

use super::*;

/// The most of our own Vias a request may carry before it is taken for a loop (RFC 3261
/// 16.3 step 4): a spiral through us a few times is normal, eight passes are not.
pub(super) const MAX_OUR_VIAS: usize = 8;

#[cfg(test)]
thread_local! {
    /// Loop tags computed to judge requests, for the tests that bound them.
    pub(super) static LOOP_TAGS_COMPUTED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Core {
    /// A branch for a request we forward: 96 bits from the OS CSPRNG, so that nobody who
    /// saw our earlier branches can name an open transaction (a counter let a subscriber
    /// forge final responses to other people's calls), then `.` and the request's loop tag
    /// (RFC 3261 16.6 step 8), which [`Core::looped`] recognises when it comes back.
    pub(super) fn new_branch(&mut self, loop_tag: &str) -> String {
        let mut r = [0u8; 12];
        if getrandom::getrandom(&mut r).is_err() {
            // No randomness left (never seen on Linux): a keyed hash of a counter, still
            // unpredictable without the key.
            let seq = self.shared.next_seq();
            let h = route::mac(&self.keys.loop_tag, &[b"branch", &seq.to_le_bytes()]);
            r.copy_from_slice(&h[..12]);
        }
        format!("{BRANCH_PREFIX}{}.{loop_tag}", crate::auth::digest::hex(&r))
    }

    /// The loop-detection tag of a request (RFC 3261 16.6 step 8): a keyed hash of its
    /// Request-URI, Call-ID, From and To tags, CSeq number, the Via below ours and `routes`
    /// (its Route entries below ours, as it leaves us), so that the same request coming back
    /// is a loop, and one whose Request-URI changed or whose Route set a hop in between
    /// consumed (an in-dialog request through us, a record-routing registrar and us again)
    /// a spiral.
    pub(super) fn loop_tag(
        &self,
        ruri: &str,
        get: &dyn Fn(HeaderName<'static>) -> Option<String>,
        below: Option<&via::Via<'_>>,
        routes: &str,
    ) -> String {
        let tag = |h| {
            get(h)
                .and_then(|v| {
                    name_addr::parse_single(&v)
                        .ok()
                        .and_then(|a| a.tag.map(str::to_string))
                })
                .unwrap_or_default()
        };
        let cseq = get(HeaderName::CSeq)
            .and_then(|c| scalar::cseq(&c).map(|c| c.0))
            .unwrap_or(0);
        let (vb, vh, vp) = match below {
            Some(v) => (
                v.branch.unwrap_or(""),
                match v.host {
                    Host::Domain(d) => d.to_ascii_lowercase(),
                    h => h.ip().map(|i| i.to_string()).unwrap_or_default(),
                },
                v.port.unwrap_or(0),
            ),
            None => ("", String::new(), 0),
        };
        // Salted per process: cluster nodes share `loop_key` (one `[auth] secret`), and a
        // request relayed from one node to another unchanged (an in-dialog BYE through the
        // node holding the callee's flow) is no loop through the second.
        let h = route::mac(
            &self.keys.loop_tag,
            &[
                b"loop",
                &self.salt.to_le_bytes(),
                ruri.as_bytes(),
                get(HeaderName::CallId).unwrap_or_default().as_bytes(),
                tag(HeaderName::From).as_bytes(),
                tag(HeaderName::To).as_bytes(),
                &cseq.to_le_bytes(),
                vb.as_bytes(),
                vh.as_bytes(),
                &vp.to_le_bytes(),
                routes.as_bytes(),
            ],
        );
        crate::auth::digest::hex(&h[..8])
    }

    /// RFC 3261 16.3 step 4: whether the request already went through us unchanged (one
    /// of its Vias is ours and carries the loop tag this request would get now). A
    /// request whose Request-URI or remaining Route set (`routes`: what is left below our
    /// entries, [`route::routes`] joined by commas) changed since (a spiral) is not a loop.
    pub(super) fn looped(&self, m: &Message<'_>, routes: &str) -> bool {
        let vias: Vec<via::Via<'_>> = m
            .all(HeaderName::Via)
            .flat_map(via::parse_list)
            .map_while(Result::ok)
            .take(MAX_VIAS_CHECKED)
            .collect();
        let ruri = match m.start {
            StartLine::Request { uri, .. } => uri,
            _ => return false,
        };
        let get = |h: HeaderName<'static>| m.get(h).map(str::to_string);
        let ours = vias.iter().enumerate().filter_map(|(i, v)| {
            let (_, tag) = v.branch?.strip_prefix(BRANCH_PREFIX)?.rsplit_once('.')?;
            Some((i, tag))
        });
        let mut checked = 0;
        for (i, tag) in ours {
            // Each of our Vias costs a keyed hash, before the request is authenticated: a
            // request that went through us more than MAX_OUR_VIAS times is a loop whatever
            // its Request-URI says, and costs no more than that many.
            checked += 1;
            if checked > MAX_OUR_VIAS {
                return true;
            }
            #[cfg(test)]
            LOOP_TAGS_COMPUTED.with(|n| n.set(n.get() + 1));
            let want = self.loop_tag(ruri, &get, vias.get(i + 1), routes);
            if bool::from(tag.as_bytes().ct_eq(want.as_bytes())) {
                return true;
            }
        }
        false
    }
}
