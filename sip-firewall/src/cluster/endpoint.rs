//! Where the cluster's Redis is: one server, or a primary that Redis Sentinels manage.
//!
//! - `redis://[user:password@]host:port/db`, `rediss://...` (TLS: rustls, the system's roots),
//!   `redis+unix:///path`: that server;
//! - `redis+sentinel://[user:password@]host:port[,host:port...]/<master name>[/<db>]`, or
//!   `rediss+sentinel://...` (TLS to the Sentinels and to the primary): the Sentinels (port
//!   26379 by default) are asked for the primary they monitor under `<master name>`; user,
//!   password and db are the primary's (the Sentinels are asked without credentials).
//!
//! The Sentinel lookup is the redis crate's (`sentinel` feature): `SENTINEL MASTERS` on the
//! first Sentinel that answers, a primary flagged down (`s_down`, `o_down`) skipped, and the
//! one named checked with `ROLE` before it is used, so a demoted primary is never written to.
//! The primary is looked up again at every (re)connect, and at every heartbeat the Sentinels
//! are asked whether it moved (a `SENTINEL FAILOVER`, or a failure they agreed on): if they
//! name another one, the session ends and the node reconnects there (loading the full set
//! again, so nothing published meanwhile is missed). A failed lookup at a heartbeat keeps the
//! current primary: Sentinels that are unreachable do not cut a node off from a working Redis.

use std::time::Duration;

use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};

/// How long a Sentinel lookup may take (every Sentinel tried, and the primary's `ROLE`).
const LOOKUP: Duration = Duration::from_secs(5);
const SENTINEL_PORT: u16 = 26379;

/// The configured Redis.
pub enum Endpoint {
    /// One server.
    Direct(redis::Client),
    /// A primary found through Sentinels.
    Sentinel {
        client: tokio::sync::Mutex<SentinelClient>,
        master: String,
    },
}

/// A `redis+sentinel://` URL, parsed.
#[derive(Debug, PartialEq, Eq)]
struct SentinelUrl {
    tls: bool,
    sentinels: Vec<(String, u16)>,
    master: String,
    db: i64,
    user: Option<String>,
    password: Option<String>,
}

fn invalid(url: &str, why: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "invalid Sentinel URL",
        format!(
            "{why} (expected redis+sentinel://[user:password@]host:port[,host:port]/master[/db]; got {} characters)",
            url.len()
        ),
    ))
}

/// `%XX` escapes of the user information (RFC 3986 section 2.1).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `host:port`, `host` (port 26379), `[v6]:port` or `[v6]`.
fn host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => SENTINEL_PORT,
    };
    Some((host.to_string(), port))
}

/// None: not a Sentinel URL.
fn parse_sentinel(url: &str) -> Result<Option<SentinelUrl>, redis::RedisError> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("redis+sentinel://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("rediss+sentinel://") {
        (true, r)
    } else {
        return Ok(None);
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pass) = match u.split_once(':') {
                Some((user, pass)) => (user, Some(pass)),
                None => ("", Some(u)),
            };
            let dec = |s: &str| percent_decode(s).ok_or_else(|| invalid(url, "bad % escape"));
            let user = (!user.is_empty()).then(|| dec(user)).transpose()?;
            (user, pass.map(dec).transpose()?)
        }
    };
    let sentinels = hosts
        .split(',')
        .map(|h| host_port(h).ok_or_else(|| invalid(url, "bad Sentinel host:port")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut segments = path.split('/');
    let master = segments.next().unwrap_or_default();
    if master.is_empty() {
        return Err(invalid(url, "no master name"));
    }
    let db = match segments.next() {
        None | Some("") => 0,
        Some(d) => d.parse().map_err(|_| invalid(url, "bad db number"))?,
    };
    if segments.next().is_some() {
        return Err(invalid(url, "too many path segments"));
    }
    Ok(Some(SentinelUrl {
        tls,
        sentinels,
        master: master.to_string(),
        db,
        user,
        password,
    }))
}

impl Endpoint {
    /// Check the URL; nothing is connected yet.
    pub fn open(url: &str) -> redis::RedisResult<Endpoint> {
        let Some(s) = parse_sentinel(url)? else {
            return Ok(Endpoint::Direct(redis::Client::open(url)?));
        };
        let scheme = if s.tls { "rediss" } else { "redis" };
        let nodes: Vec<String> = s
            .sentinels
            .iter()
            .map(|(h, p)| {
                if h.contains(':') {
                    format!("{scheme}://[{h}]:{p}")
                } else {
                    format!("{scheme}://{h}:{p}")
                }
            })
            .collect();
        let mut info = redis::RedisConnectionInfo::default().set_db(s.db);
        if let Some(u) = &s.user {
            info = info.set_username(u);
        }
        if let Some(p) = &s.password {
            info = info.set_password(p);
        }
        let mut node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
        if s.tls {
            node = node.set_tls_mode(redis::TlsMode::Secure);
        }
        let client = SentinelClient::build(
            nodes,
            s.master.as_str(),
            Some(node),
            SentinelServerType::Master,
        )?;
        Ok(Endpoint::Sentinel {
            client: tokio::sync::Mutex::new(client),
            master: s.master,
        })
    }

    /// A client of the primary as of now (for one server: that server).
    pub async fn primary(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Endpoint::Direct(c) => Ok(c.clone()),
            Endpoint::Sentinel { client, master } => {
                let lookup = async { client.lock().await.async_get_client().await };
                match tokio::time::timeout(LOOKUP, lookup).await {
                    Ok(r) => r,
                    Err(_) => Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "no Sentinel named a primary in time",
                        format!("master {master}, {LOOKUP:?}"),
                    ))),
                }
            }
        }
    }

    /// At a heartbeat: Some(address) when the Sentinels now name another primary than
    /// `current`. One server, or a lookup that failed: None (keep what works).
    pub async fn moved(&self, current: &redis::Client) -> Option<String> {
        if matches!(self, Endpoint::Direct(_)) {
            return None;
        }
        match self.primary().await {
            Ok(now) if now.get_connection_info().addr() != current.get_connection_info().addr() => {
                Some(address(&now))
            }
            Ok(_) => None,
            Err(e) => {
                super::metrics::warn_limited(&format!(
                    "cluster: Sentinels unreachable ({e}); staying on the current primary"
                ));
                None
            }
        }
    }
}

/// A client's address as `status` shows it (host:port or socket path, never credentials).
pub fn address(c: &redis::Client) -> String {
    c.get_connection_info().addr().to_string()
}

/// A Redis URL without its password, for errors and logs.
pub fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) if at > scheme.len() + 3 => {
            let userinfo = url.get(scheme.len() + 3..at).unwrap_or_default();
            let host = url.get(at..).unwrap_or_default();
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***{host}"),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://u:secret@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(
            redact("redis+sentinel://:secret@a:1,b:2/m"),
            "redis+sentinel://:***@a:1,b:2/m"
        );
        assert_eq!(redact("redis://u@h/0"), "redis://u@h/0");
        assert_eq!(redact("redis://h:6379/0"), "redis://h:6379/0");
    }

    #[test]
    fn sentinel_urls_parse() {
        let s = parse_sentinel("redis+sentinel://u:p%40ss@10.0.0.1:26380,[fd00::2],h3/mymaster/2")
            .unwrap()
            .unwrap();
        assert_eq!(
            s,
            SentinelUrl {
                tls: false,
                sentinels: vec![
                    ("10.0.0.1".into(), 26380),
                    ("fd00::2".into(), 26379),
                    ("h3".into(), 26379)
                ],
                master: "mymaster".into(),
                db: 2,
                user: Some("u".into()),
                password: Some("p@ss".into()),
            }
        );
        let s = parse_sentinel("rediss+sentinel://:pw@h:1/m")
            .unwrap()
            .unwrap();
        assert!(s.tls && s.user.is_none() && s.password.as_deref() == Some("pw") && s.db == 0);
        assert!(parse_sentinel("redis://h:6379/0").unwrap().is_none());
        for bad in [
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h:x/m",
            "redis+sentinel://h:1/m/x",
            "redis+sentinel://h:1/m/0/extra",
            "redis+sentinel://h:1,/m",
            "redis+sentinel://%zz@h:1/m",
        ] {
            assert!(parse_sentinel(bad).is_err(), "{bad}");
        }
        assert!(Endpoint::open("redis+sentinel://a:1,b:2/m/0").is_ok());
        assert!(Endpoint::open("rediss+sentinel://a:1/m").is_ok());
    }
}
