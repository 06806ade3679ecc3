//! Called numbers in one form: international numbers as `+` and digits (`00`, `011` and `+`
//! forms are the same number), national ones as dialled digits.

/// The called number of a Request-URI: the user part of a `sip:`/`sips:` URI or the number
/// of a `tel:` URI, with every character that is not a digit dropped (visual separators,
/// and junk a trunk might ignore too: the policy must see what the trunk dials), a leading
/// `+` (or `%2B`) kept, then the international prefixes written as `+`. None: no digits at
/// all (not a number).
pub fn called(ruri: &str, intl: &[String]) -> Option<String> {
    let lower = ruri
        .get(..5)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let rest = if lower.starts_with("tel:") {
        ruri.get(4..)?.split(';').next()?
    } else if lower.starts_with("sip:") || lower.starts_with("sips:") {
        let after = ruri.split_once(':')?.1;
        // No user part: no number.
        after.split_once('@')?.0.split(';').next()?
    } else {
        return None;
    };
    normalise(rest, intl)
}

/// A dialled string in normal form (see [`called`]).
pub fn normalise(raw: &str, intl: &[String]) -> Option<String> {
    let t = raw.trim();
    let (plus, body) = if let Some(b) = t.strip_prefix('+') {
        (true, b)
    } else if t.len() >= 3 && t.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("%2b")) {
        (true, t.get(3..)?)
    } else {
        (false, t)
    };
    let digits: String = body.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() && !plus {
        return None;
    }
    if plus {
        return Some(format!("+{digits}"));
    }
    // The longest international prefix first (011 before 01...).
    let mut by_len: Vec<&String> = intl.iter().collect();
    by_len.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in by_len {
        if let Some(r) = digits.strip_prefix(p.as_str()) {
            return Some(format!("+{r}"));
        }
    }
    Some(digits)
}

/// A configured prefix in normal form: digits (with separators) after an optional `+`.
pub fn prefix(p: &str, intl: &[String]) -> Option<String> {
    let t = p.trim();
    let body = t.strip_prefix('+').unwrap_or(t);
    if !body
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'.' | b' ' | b'(' | b')'))
    {
        return None;
    }
    normalise(t, intl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intl() -> Vec<String> {
        vec!["00".into(), "011".into()]
    }

    #[test]
    fn international_forms_are_one() {
        let i = intl();
        for u in [
            "sip:0019005551234@trunk.example",
            "sip:+19005551234@trunk.example;user=phone",
            "sip:01119005551234@10.0.0.1",
            "sip:%2B1-900-555-1234@trunk.example",
            "tel:+1-900-555-1234;phone-context=x",
            "sips:+1(900)5551234;isub=1@t.example",
        ] {
            assert_eq!(called(u, &i).as_deref(), Some("+19005551234"), "{u}");
        }
        assert_eq!(
            called("sip:0301234567@t", &i).as_deref(),
            Some("0301234567")
        );
        assert_eq!(called("sip:bob@example.com", &i), None);
        assert_eq!(called("sip:example.com", &i), None);
        assert_eq!(called("http://x", &i), None);
        assert_eq!(prefix("00", &i).as_deref(), Some("+"));
        assert_eq!(prefix("011", &i).as_deref(), Some("+"));
        assert_eq!(prefix("+1 900", &i).as_deref(), Some("+1900"));
        assert_eq!(prefix("0", &i).as_deref(), Some("0"));
        assert_eq!(prefix("abc", &i), None);
        // Junk between the digits does not hide a number from the policy.
        assert_eq!(
            called("sip:00x1900y5551234@t", &i).as_deref(),
            Some("+19005551234")
        );
    }
}
