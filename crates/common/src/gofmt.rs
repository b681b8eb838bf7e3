//! Floats written as Go writes them, for the answers that must match
//! Prometheus byte for byte: the query API's JSON sample values and the
//! label values PromQL builds from numbers (`count_values`, `le`/`quantile`
//! strings). Go and Rust both print the shortest digits that round-trip, but
//! where two shortest forms are equally near (84418043664819.125) Go rounds
//! to even and Rust's `Display` does not; Ryū's digits match Go's.

/// Appends `v` as Prometheus's `jsonutil.MarshalValue` writes it: Go's
/// `strconv.FormatFloat(v, 'f', -1, 64)`, switching to `'e'` (`2.025e+22`,
/// `1e-07`) when `|v| < 1e-6` or `|v| >= 1e21`; `NaN`, `+Inf`, `-Inf`.
pub fn write_json_float(out: &mut String, v: f64) {
    write(out, v, true);
}

/// `v` as Go's `strconv.FormatFloat(v, 'f', -1, 64)` writes it (never an
/// exponent); `NaN`, `+Inf`, `-Inf`.
pub fn format_f(v: f64) -> String {
    let mut s = String::new();
    write(&mut s, v, false);
    s
}

/// Go's shortest round-trip digits laid out as `'f'`, or with `json` as
/// Prometheus's JSON does (`'e'` outside `[1e-6, 1e21)`).
fn write(out: &mut String, v: f64, json: bool) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
        return;
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
        return;
    } else if v == 0.0 {
        out.push_str(if v.is_sign_negative() { "-0" } else { "0" });
        return;
    }
    // Ryū gives the shortest round-trip digits (the digits Go picks), in
    // its own layout ("1.0", "0.3", "1.2e-7"): take the digits and the
    // decimal exponent from it and lay them out as Go does.
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(v);
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (mant, exp) = match s.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (s, 0),
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    // value = 0.DIGITS × 10^point
    let mut digits = [0u8; 40];
    let mut n = 0;
    let mut point = int.len() as i32 + exp;
    for &b in int.as_bytes().iter().chain(frac.as_bytes()) {
        if n == 0 && b == b'0' {
            point -= 1;
            continue;
        }
        if n < digits.len() {
            digits[n] = b;
            n += 1;
        }
    }
    while n > 1 && digits[n - 1] == b'0' {
        n -= 1;
    }
    let digits = &digits[..n];
    fn text(d: &[u8]) -> &str {
        // ASCII digits only, so this cannot fail.
        std::str::from_utf8(d).unwrap_or("")
    }
    if neg {
        out.push('-');
    }
    let a = v.abs();
    if !json || (1e-6..1e21).contains(&a) {
        let len = digits.len() as i32;
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-point) as usize));
            out.push_str(text(digits));
        } else if point >= len {
            out.push_str(text(digits));
            out.extend(std::iter::repeat_n('0', (point - len) as usize));
        } else {
            out.push_str(text(&digits[..point as usize]));
            out.push('.');
            out.push_str(text(&digits[point as usize..]));
        }
    } else {
        // Go's 'e': d[.ddd]e±XX, the exponent with at least two digits.
        out.push_str(text(&digits[..1]));
        if digits.len() > 1 {
            out.push('.');
            out.push_str(text(&digits[1..]));
        }
        let e = point - 1;
        out.push('e');
        out.push(if e < 0 { '-' } else { '+' });
        if e.unsigned_abs() < 10 {
            out.push('0');
        }
        out.push_str(itoa::Buffer::new().format(e.unsigned_abs()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_round_to_even_as_go_does() {
        // Checked against Go: FormatFloat(84418043664819.125, 'f', -1, 64).
        // Exactly halfway between two 16-digit forms (parsed: the literal
        // trips clippy's precision lint).
        let tie: f64 = "84418043664819.125".parse().unwrap();
        assert_eq!(format_f(tie), "84418043664819.12");
        assert_eq!(format_f(1e21), "1000000000000000000000");
        assert_eq!(format_f(1e-7), "0.0000001");
        assert_eq!(format_f(-0.0), "-0");
        assert_eq!(format_f(f64::NEG_INFINITY), "-Inf");
        let mut s = String::new();
        write_json_float(&mut s, 1e21);
        assert_eq!(s, "1e+21");
    }
}
