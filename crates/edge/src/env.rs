//! Reading settings values the same way in both services; each service names the
//! variable in its own error.

/// `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`, any case, surrounding space ignored.
pub fn parse_bool(raw: &str) -> Result<bool, &'static str> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false"),
    }
}

/// A whole number from `min` to `max`; the error says the range.
pub fn parse_ranged(raw: &str, min: u64, max: u64) -> Result<u64, String> {
    match raw.trim().parse::<u64>() {
        Ok(value) if (min..=max).contains(&value) => Ok(value),
        _ => Err(format!("expected a whole number from {min} to {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_and_ranges() {
        assert_eq!(parse_bool(" Yes "), Ok(true));
        assert_eq!(parse_bool("off"), Ok(false));
        assert!(parse_bool("maybe").is_err());
        assert_eq!(parse_ranged(" 20 ", 1, 100), Ok(20));
        assert_eq!(
            parse_ranged("0", 1, 100),
            Err("expected a whole number from 1 to 100".to_owned())
        );
        assert!(parse_ranged("-3", 0, 10).is_err());
    }
}
