//! Scanner detection by User-Agent, as Kamailio's default config does: requests from known
//! attack tools are dropped without an answer, so the scanner learns nothing.

/// The default list (Kamailio's kamailio.cfg, route[REQINIT]).
pub const DEFAULT: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "VaxSIPUserAgent",
    "pplsip",
];

/// Case-insensitive substring matcher over a list of User-Agent fragments.
#[derive(Clone, Debug)]
pub struct Scanners {
    lower: Vec<String>,
}

impl Scanners {
    /// From the config (`None`: the default list).
    pub fn new(list: Option<&[String]>) -> Scanners {
        let lower: Vec<String> = match list {
            Some(l) => l.iter().map(|s| s.to_ascii_lowercase()).collect(),
            None => DEFAULT.iter().map(|s| s.to_ascii_lowercase()).collect(),
        };
        Scanners {
            lower: lower
                .into_iter()
                .filter(|s: &String| !s.is_empty())
                .collect(),
        }
    }

    /// The list entry a User-Agent value matches, if any.
    pub fn matches(&self, user_agent: &str) -> Option<&str> {
        let ua = user_agent.to_ascii_lowercase();
        self.lower
            .iter()
            .find(|s| ua.contains(s.as_str()))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_list() {
        let s = Scanners::new(None);
        assert_eq!(s.matches("friendly-scanner"), Some("friendly-scanner"));
        assert_eq!(s.matches("SIPVicious 0.3"), Some("sipvicious"));
        assert_eq!(s.matches("VaxSIPUserAgent/3.1"), Some("vaxsipuseragent"));
        assert_eq!(s.matches("Linphone/5.0"), None);
        let custom = Scanners::new(Some(&["evil".to_string(), String::new()]));
        assert_eq!(custom.matches("friendly-scanner"), None);
        assert_eq!(custom.matches("EvilBot"), Some("evil"));
    }
}
