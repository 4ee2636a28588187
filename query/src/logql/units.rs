//! Go-compatible parsing of durations (`time.ParseDuration`, plus Prometheus' `d`/`w`/`y`) and of
//! humanized byte sizes (`go-humanize`'s `ParseBytes`), with the error texts Loki shows in
//! `__error_details__`.

/// Parses a Go duration (`1h30m`, `1.5s`, `-250ms`) into nanoseconds. With `ext`, `d`, `w` and `y`
/// are accepted too (query ranges). Errors are Go's messages.
pub(crate) fn parse_duration(s: &str, ext: bool) -> Result<f64, String> {
    let err = || format!("time: invalid duration \"{s}\"");
    let mut rest = s;
    let mut neg = false;
    if let Some(r) = rest.strip_prefix('-') {
        neg = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(0.0);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        if num_len == 0 {
            return Err(err());
        }
        let num = &rest[..num_len];
        if num == "." {
            return Err(err());
        }
        let v: f64 = num.parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len =
            rest.char_indices().find(|(_, c)| c.is_ascii_digit() || *c == '.').map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mult: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" if ext => 86400e9,
            "w" if ext => 7.0 * 86400e9,
            "y" if ext => 365.0 * 86400e9,
            "" => return Err(format!("time: missing unit in duration \"{s}\"")),
            u => return Err(format!("time: unknown unit \"{u}\" in duration \"{s}\"")),
        };
        total += v * mult;
    }
    Ok(if neg { -total } else { total })
}

/// Parses a humanized byte size (`40KB`, `1KiB`, `12.5 MB`, `42`) as go-humanize does.
pub(crate) fn parse_bytes(s: &str) -> Result<f64, String> {
    let digits =
        s.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',').map(char::len_utf8).sum::<usize>();
    let num: String = s[..digits].chars().filter(|c| *c != ',').collect();
    let f: f64 = num.parse().map_err(|_| format!("strconv.ParseFloat: parsing \"{num}\": invalid syntax"))?;
    let unit = s[digits..].trim().to_ascii_lowercase();
    let m: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024f64.powi(2),
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024f64.powi(3),
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024f64.powi(4),
        "p" | "pb" => 1e15,
        "pi" | "pib" => 1024f64.powi(5),
        "e" | "eb" => 1e18,
        "ei" | "eib" => 1024f64.powi(6),
        _ => return Err(format!("unhandled size name: {unit}")),
    };
    let v = f * m;
    if v >= 18446744073709551615.0 {
        return Err(format!("too large: {s}"));
    }
    Ok(v.trunc())
}

/// Go's `strconv.ParseFloat(s, 64)` for label values (decimal forms, `Inf`, `NaN`); errors are
/// Go's message.
pub(crate) fn parse_float(s: &str) -> Result<f64, String> {
    let special = matches!(s.to_ascii_lowercase().trim_start_matches(['+', '-']), "inf" | "infinity" | "nan");
    let decimal =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    let parsed = if special || decimal { s.parse::<f64>().ok() } else { None };
    parsed.ok_or_else(|| format!("strconv.ParseFloat: parsing {}: invalid syntax", go_quote(s)))
}

/// Go's `%q` / `strconv.Quote` for the ASCII cases that matter in messages.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Formats a float as Go's `strconv.FormatFloat(v, 'f', -1, 64)`... which Loki uses for label
/// values it computes; Prometheus' API formats sample values the same way for ordinary numbers.
pub(crate) fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m", false), Ok(5400e9));
        assert_eq!(parse_duration("1.5s", false), Ok(1.5e9));
        assert_eq!(parse_duration("250ms", false), Ok(250e6));
        assert!(parse_duration("1d", false).is_err());
        assert_eq!(parse_duration("1d", true), Ok(86400e9));
        assert_eq!(parse_duration("abc", false), Err("time: invalid duration \"abc\"".into()));
        assert_eq!(parse_duration("12", false), Err("time: missing unit in duration \"12\"".into()));
    }

    #[test]
    fn bytes() {
        assert_eq!(parse_bytes("40KB"), Ok(40e3));
        assert_eq!(parse_bytes("1KiB"), Ok(1024.0));
        assert_eq!(parse_bytes("12.5MB"), Ok(12.5e6));
        assert_eq!(parse_bytes("42"), Ok(42.0));
        assert!(parse_bytes("4x").is_err());
    }
}
