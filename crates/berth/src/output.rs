//! Docker-style output: human sizes and ages, aligned tables, and `--format`
//! (`table`, `json`, or a `{{.Field}}` template).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Bytes as Docker prints them: decimal units, three significant digits.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        return format!("{bytes}B");
    }
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{}", UNITS[u])
}

/// Parses RFC 3339 (`2024-01-02T03:04:05.123Z`, offsets allowed) to Unix seconds.
pub fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut t = days * 86_400 + h * 3600 + mi * 60 + se;
    // Timezone offset, if any, after optional fractional seconds.
    let rest = &s[19..];
    let rest = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    if let Some(sign) = rest.chars().next().filter(|c| *c == '+' || *c == '-') {
        let oh: i64 = rest.get(1..3)?.parse().ok()?;
        let om: i64 = rest.get(4..6)?.parse().ok()?;
        let off = oh * 3600 + om * 60;
        t -= if sign == '+' { off } else { -off };
    }
    Some(t)
}

/// "2 weeks ago", as Docker's CREATED column.
pub fn ago(rfc3339: Option<&str>) -> String {
    let Some(t) = rfc3339.and_then(parse_time) else {
        return "N/A".into();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let s = (now - t).max(0);
    let (n, unit) = match s {
        s if s < 1 => return "Less than a second ago".into(),
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 * 2 => (s / 3600, "hour"),
        s if s < 86_400 * 7 * 2 => (s / 86_400, "day"),
        s if s < 86_400 * 30 * 2 => (s / (86_400 * 7), "week"),
        s if s < 86_400 * 365 * 2 => (s / (86_400 * 30), "month"),
        s => (s / (86_400 * 365), "year"),
    };
    match (n, unit) {
        (1, "hour") => "About an hour ago".into(),
        (1, u) => format!("1 {u} ago"),
        (n, u) => format!("{n} {u}s ago"),
    }
}

/// How to print a list of rows.
pub enum Format {
    /// Aligned columns with a header.
    Table,
    /// One JSON object per line.
    Json,
    /// A Go-style template per row (`{{.ID}}\t{{.Repository}}`).
    Template(String),
}

impl Format {
    /// From a `--format` value.
    pub fn parse(s: Option<&str>) -> Format {
        match s {
            None | Some("table") | Some("") => Format::Table,
            Some("json") | Some("{{json .}}") => Format::Json,
            Some(t) => Format::Template(t.strip_prefix("table ").unwrap_or(t).to_string()),
        }
    }
}

/// Expands a Go-style `--format` template against a JSON row (see
/// [`crate::template`]).
pub fn template(t: &str, row: &Value) -> String {
    crate::template::render(t, row)
}

/// Prints rows: a table with the given (header, field) columns, JSON lines, or a template.
pub fn print_rows(format: &Format, columns: &[(&str, &str)], rows: &[Value]) {
    match format {
        Format::Json => {
            for r in rows {
                println!("{r}");
            }
        }
        Format::Template(t) => {
            for r in rows {
                println!("{}", template(t, r));
            }
        }
        Format::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    columns
                        .iter()
                        .map(|(_, f)| match r.get(*f) {
                            Some(Value::String(s)) => s.clone(),
                            Some(v) => v.to_string(),
                            None => String::new(),
                        })
                        .collect()
                })
                .collect();
            let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.len()).collect();
            for row in &cells {
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |vals: Vec<&str>| {
                let mut s = String::new();
                for (i, v) in vals.iter().enumerate() {
                    if i + 1 == vals.len() {
                        s.push_str(v);
                    } else {
                        s.push_str(&format!("{v:<w$}   ", w = widths[i]));
                    }
                }
                println!("{}", s.trim_end());
            };
            line(columns.iter().map(|(h, _)| *h).collect());
            for row in &cells {
                line(row.iter().map(String::as_str).collect());
            }
        }
    }
}

/// A JSON object from string pairs, in order (serde_json sorts keys anyway).
pub fn row(pairs: &[(&str, String)]) -> Value {
    let m: BTreeMap<&str, Value> = pairs
        .iter()
        .map(|(k, v)| (*k, Value::String(v.clone())))
        .collect();
    serde_json::to_value(m).expect("json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(999), "999B");
        assert_eq!(size(4_261_000), "4.26MB");
        assert_eq!(size(117_000_000), "117MB");
        assert_eq!(size(12_340_000), "12.3MB");
        assert_eq!(size(1_000_000_000), "1GB");
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("2023-11-14T22:13:20.5Z"), Some(1_700_000_000));
        assert_eq!(parse_time("2023-11-14T23:13:20+01:00"), Some(1_700_000_000));
        assert_eq!(parse_time("junk"), None);
    }
}
