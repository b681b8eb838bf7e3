//! Prometheus's duration syntax, parsed once for the whole workspace: the
//! query API's `step`/`timeout`, the config's `10s`/`2h`, promqltest's
//! `load 5m`. Each caller adds what its context allows (a bare float of
//! seconds, a sign, an upper bound).

/// Milliseconds of `1h30m`, `10s53ms`, `2d`, `1w`, `1y` (units `ms s m h d w
/// y`, each a run of ASCII digits then a unit, largest first or not);
/// `None` when it is not one or overflows `i64`.
pub fn parse_units_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    let mut i = 0;
    let mut total: i64 = 0;
    while i < b.len() {
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if st == i {
            return None;
        }
        let n: i64 = s[st..i].parse().ok()?;
        let us = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let mult: i64 = match &s[us..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return None,
        };
        total = n.checked_mul(mult).and_then(|x| total.checked_add(x))?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_sum_and_bad_input_is_none() {
        assert_eq!(parse_units_ms("1h30m"), Some(5_400_000));
        assert_eq!(parse_units_ms("10s53ms"), Some(10_053));
        assert_eq!(
            parse_units_ms("1y1w1d"),
            Some(31_536_000_000 + 604_800_000 + 86_400_000)
        );
        for bad in [
            "",
            "5x",
            "m",
            "1.5s",
            "-1s",
            "99999999999999999999y",
            "300000000y",
        ] {
            assert_eq!(parse_units_ms(bad), None, "{bad}");
        }
    }
}
