//! Memory sizes as people write them in profiles and flags: `512M`, `2G`, `2.5G`.

use crate::error::PolicyError;

const UNITS: &[(char, u64)] = &[
    ('K', 1 << 10),
    ('M', 1 << 20),
    ('G', 1 << 30),
    ('T', 1 << 40),
];

/// Parses a byte count with an optional binary suffix (K, M, G, T; `B`/`iB` accepted after
/// it, case-insensitive). Fractions are allowed with a suffix: `2.5G`.
pub fn parse_size(text: &str) -> Result<u64, PolicyError> {
    let bad = || PolicyError::Size(text.to_string());
    let upper = text.trim().to_ascii_uppercase();
    let number = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, multiplier) = match number.chars().last() {
        Some(last) if last.is_ascii_alphabetic() => {
            let &(_, m) = UNITS.iter().find(|(u, _)| *u == last).ok_or_else(bad)?;
            (&number[..number.len() - 1], m)
        }
        _ => (number, 1),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let value: f64 = digits.parse().map_err(|_| bad())?;
    let bytes = value * multiplier as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Formats a byte count the way [`parse_size`] reads it, exactly when it can (`2560M`).
pub fn format_size(bytes: u64) -> String {
    for &(unit, multiplier) in UNITS.iter().rev() {
        if bytes >= multiplier && bytes.is_multiple_of(multiplier) {
            return format!("{}{unit}", bytes / multiplier);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_people_write_them() {
        for (text, bytes) in [
            ("2G", 2 << 30),
            ("2.5G", 5 << 29),
            ("512M", 512 << 20),
            ("512mb", 512 << 20),
            ("1GiB", 1 << 30),
            ("4096", 4096),
        ] {
            assert_eq!(parse_size(text).unwrap(), bytes, "{text}");
        }
    }

    #[test]
    fn nonsense_sizes_are_refused() {
        for text in ["", "G", "-1G", "2X", "two", "0", "1e3G", "99999999999T"] {
            assert!(parse_size(text).is_err(), "{text}");
        }
    }

    #[test]
    fn formatted_sizes_read_back() {
        for bytes in [1u64 << 30, 5 << 29, 4097, 3 << 20] {
            assert_eq!(parse_size(&format_size(bytes)).unwrap(), bytes);
        }
    }
}
