//! The guard's configuration and time windows.

use super::*;

fn check(text: &str) -> Result<crate::config::Config, String> {
    crate::config::Config::from_toml(text, std::path::Path::new("t.toml"))
        .map_err(|e| e.to_string())
}

#[test]
fn config_errors_name_the_key() {
    let e = check("[fraud]\ndeny_prefixes = [\"+1900x\"]\n").unwrap_err();
    assert!(e.contains("fraud.deny_prefixes"), "{e}");
    let e = check("[[fraud.rules]]\nprefix = \"00\"\nhours = \"25-3\"\n").unwrap_err();
    assert!(e.contains("fraud.rules"), "{e}");
    let e = check("[[fraud.rules]]\nprefix = \"00\"\ndays = [\"someday\"]\n").unwrap_err();
    assert!(e.contains("fraud.rules"), "{e}");
    let e = check("[fraud]\non_critical = \"shout\"\n").unwrap_err();
    assert!(e.contains("on_critical") || e.contains("shout"), "{e}");
    let c = check(
        "[fraud]\non_critical = \"block-and-hangup\"\nmax_call_duration = \"30m\"\n\
         [[fraud.rules]]\nprefix = \"00\"\nhours = \"22-6\"\ndays = [\"sat\", \"sun\"]\n\
         concurrent = { warn = 1, critical = 2 }\nduration = { warn = \"10m\", critical = \"1h\" }\n",
    )
    .expect("valid");
    assert_eq!(c.fraud.on_critical, OnCritical::BlockAndHangup);
    assert_eq!(c.fraud.rules.len(), 1);
}

#[test]
fn rules_apply_in_their_hours_and_days() {
    let c = check("[[fraud.rules]]\nprefix = \"00\"\nhours = \"22-6\"\ndays = [\"sat\"]\n")
        .expect("valid");
    let f = Fraud::new(&c.fraud, FraudMetrics::new(None));
    let r = &f.rules[0];
    // 1970-01-03 was a Saturday.
    let sat = 2 * 86_400;
    assert!(r.applies(sat + 23 * 3600));
    assert!(r.applies(sat + 3600));
    assert!(!r.applies(sat + 12 * 3600));
    assert!(!r.applies(sat + 86_400 + 23 * 3600), "Sunday");
}

/// A new call of `account` to `ruri`, Call-ID `id`.
fn attempt<'a>(account: &'a str, ruri: &'a str, id: &str) -> Attempt<'a> {
    Attempt {
        account,
        peer: None,
        ruri,
        foreign: true,
        source: IpAddr::from([192, 0, 2, 1]),
        key: (id.into(), "t".into()),
        txn: format!("z9hG4bK{id}|192.0.2.1:5060"),
        from: "<sip:alice@example.com>;tag=t".into(),
        contact: None,
        cseq: 1,
    }
}

#[test]
fn presence_tells_calls_tracked_and_writes_queued_without_the_lock() {
    let c = check("[[fraud.rules]]\nprefix = \"+49\"\nconcurrent = { warn = 1, critical = 1 }\n")
        .expect("valid");
    let mut f = Fraud::new(&c.fraud, FraudMetrics::new(None));
    let seen = f.presence();
    let (now, unix) = (Instant::now(), 1_000_000);
    assert!(!seen.tracks_calls() && !seen.ops_queued());
    let ruri = "sip:+4930123@example.net";
    assert!(
        f.check(&attempt("alice@example.com", ruri, "a"), now, unix)
            .is_ok()
    );
    assert!(seen.tracks_calls(), "the allowed call is tracked");
    assert!(!seen.ops_queued());
    // A second call at once passes the critical value: refused, the account suspended.
    assert!(
        f.check(&attempt("alice@example.com", ruri, "b"), now, unix)
            .is_err()
    );
    assert!(seen.ops_queued(), "the suspension waits to be written");
    assert!(!f.take_store_ops().is_empty());
    assert!(!seen.ops_queued(), "taken");
    f.failed(&("a".into(), "t".into()), "z9hG4bKa|192.0.2.1:5060");
    assert!(!seen.tracks_calls(), "the failed call is forgotten");
}
