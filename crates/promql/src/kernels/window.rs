//! Cursor kernels: moving instant cursors and sliding windows forward
//! over a series' samples.

use cairn_common::Sample;

/// Moves an instant cursor forward: from `idx`, the number of samples at
/// or before `te` (`te` at or after the time `idx` was found for).
pub(crate) fn advance_to(s: &[Sample], mut idx: usize, te: i64) -> usize {
    // Far jumps (sparse steps over dense data) search.
    if idx + 16 < s.len() && s[idx + 16].t <= te {
        idx += s[idx..].partition_point(|x| x.t <= te);
    }
    while idx < s.len() && s[idx].t <= te {
        idx += 1;
    }
    idx
}

/// Moves window cursors `(lo, hi)` forward to the samples in `(from, te]`:
/// both only advance, so successive steps cost the samples they pass.
pub(crate) fn slide_window(
    s: &[Sample],
    (mut lo, mut hi): (usize, usize),
    from: i64,
    te: i64,
) -> (usize, usize) {
    while lo < s.len() && s[lo].t <= from {
        lo += 1;
    }
    hi = hi.max(lo);
    while hi < s.len() && s[hi].t <= te {
        hi += 1;
    }
    (lo, hi)
}
