//! Request parameters as Prometheus reads them (`r.ParseForm`): from a form-encoded body (first)
//! and the URL query string, on GET and POST alike, with repeated keys (`match[]`) kept in order;
//! times as float seconds or RFC 3339, durations as float seconds or Prometheus durations.

/// Every parameter of a request, body values before URL values (Go's `r.Form` order, so
/// [`Params::get`] prefers the body as Prometheus does).
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses a form body (when `form_body` is set) and a URL query string.
    pub fn parse(query: Option<&str>, body: Option<&[u8]>) -> Params {
        let mut v = Vec::new();
        if let Some(b) = body {
            v.extend(form_urlencoded::parse(b).map(|(k, v)| (k.into_owned(), v.into_owned())));
        }
        if let Some(q) = query {
            v.extend(form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())));
        }
        Params(v)
    }

    /// The first value of `key`, if present and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }
}

/// Earliest and latest times the API accepts (Prometheus' `MinTime`/`MaxTime` are ±2^63/1000 ms
/// around the epoch; ours keep room for offsets and lookback without overflow).
pub const MIN_TIME_MS: i64 = i64::MIN / 4;
/// See [`MIN_TIME_MS`].
pub const MAX_TIME_MS: i64 = i64::MAX / 4;

/// Prometheus' formatting of its minimum and maximum times, accepted as such.
const MIN_TIME_FORMATTED: &str = "-292273086-05-16T16:47:06Z";
const MAX_TIME_FORMATTED: &str = "292277025-08-18T07:12:54.999999999Z";

/// Parses a time: float seconds (rounded to ms) or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let err = || format!("cannot parse {s:?} to a valid timestamp");
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(err());
        }
        let ms = (f * 1000.0).round();
        return Ok(ms.clamp(MIN_TIME_MS as f64, MAX_TIME_MS as f64) as i64);
    }
    if let Some(t) = parse_rfc3339(s) {
        return Ok(t.clamp(MIN_TIME_MS, MAX_TIME_MS));
    }
    match s {
        MIN_TIME_FORMATTED => Ok(MIN_TIME_MS),
        MAX_TIME_FORMATTED => Ok(MAX_TIME_MS),
        _ => Err(err()),
    }
}

/// Parses a time leniently for endpoints Grafana calls with milliseconds (`query_exemplars`):
/// numbers beyond the year 5000 in seconds are taken as milliseconds.
pub fn parse_time_lenient(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>()
        && f.is_finite()
        && f.abs() >= 1e11
    {
        return Ok(f.round().clamp(MIN_TIME_MS as f64, MAX_TIME_MS as f64) as i64);
    }
    parse_time(s)
}

/// Parses a duration in milliseconds: float seconds or a Prometheus duration (`1h30m`, `5m`, `1d`,
/// `100ms`, `2w`, `1y`).
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        let ms = f * 1000.0;
        if !ms.is_finite() || ms.abs() >= 9.2e15 {
            return Err(format!("cannot parse {s:?} to a valid duration. It overflows int64"));
        }
        return Ok(ms.round() as i64);
    }
    prom_duration_ms(s).ok_or_else(|| format!("cannot parse {s:?} to a valid duration"))
}

/// A Prometheus duration string: units in decreasing order, each at most once, integers only.
pub fn prom_duration_ms(s: &str) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(0);
    }
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let mut rest = s;
    let mut total: i64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // "ms" must be tried before "m".
        let (idx, len) = if rest.starts_with("ms") {
            (6, 2)
        } else {
            let u = UNITS.iter().position(|(u, _)| u.len() == 1 && rest.starts_with(u))?;
            (u, 1)
        };
        if idx < next_unit {
            return None;
        }
        next_unit = idx + 1;
        total = total.checked_add(n.checked_mul(UNITS[idx].1)?)?;
        rest = &rest[len..];
    }
    Some(total)
}

/// RFC 3339 (`2023-11-14T22:13:20Z`, `2023-11-14T22:13:20.123+02:00`) to ms since the epoch.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let p = s.get(r)?;
        if !p.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if end == start {
            return None;
        }
        let frac = &s[start..end];
        let padded: String = frac.chars().chain(std::iter::repeat('0')).take(3).collect();
        ms = padded.parse().ok()?;
        i = end;
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let v = oh * 60 + om;
            if *sign == b'-' { -v } else { v }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("4").unwrap(), 4000);
        assert_eq!(parse_time("1700000000.123").unwrap(), 1_700_000_000_123);
        assert_eq!(parse_time("1700000000.1234").unwrap(), 1_700_000_000_123);
        assert_eq!(parse_time("2023-11-14T22:13:20Z").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("2023-11-14T22:13:20.5Z").unwrap(), 1_700_000_000_500);
        assert_eq!(parse_time("2023-11-15T00:13:20+02:00").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        assert!(parse_time("abc").is_err());
        assert!(parse_time("").is_err());
        assert!(parse_time("NaN").is_err());
        assert_eq!(parse_time_lenient("1.7e12").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time_lenient("1700000000").unwrap(), 1_700_000_000_000);
        assert!(parse_time("1e300").is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("15").unwrap(), 15_000);
        assert_eq!(parse_duration_ms("0.5").unwrap(), 500);
        assert_eq!(parse_duration_ms("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration_ms("100ms").unwrap(), 100);
        assert_eq!(parse_duration_ms("1d").unwrap(), 86_400_000);
        assert_eq!(parse_duration_ms("1m30s500ms").unwrap(), 90_500);
        assert!(parse_duration_ms("30s1m").is_err());
        assert!(parse_duration_ms("1.5m").is_err());
        assert!(parse_duration_ms("").is_err());
        assert!(parse_duration_ms("1e300").is_err());
    }

    #[test]
    fn body_values_come_first() {
        let p = Params::parse(Some("query=url&match[]=a"), Some(b"query=body&match[]=b&time=4"));
        assert_eq!(p.get("query"), Some("body"));
        assert_eq!(p.all("match[]"), vec!["b", "a"]);
        assert_eq!(p.get("time"), Some("4"));
    }
}
