//! MSB-first bit writer and reader used by the chunk bitstream.

use crate::CodecError;

/// Appends bits MSB-first. Whole 64-bit words go to `buf`; the last partial
/// word stays in `acc` so that `snapshot` can copy without consuming.
#[derive(Debug, Clone, Default)]
pub(crate) struct BitWriter {
    buf: Vec<u8>,
    acc: u64,
    /// Number of valid low bits in `acc`, always < 64 between calls.
    acc_bits: u32,
}

impl BitWriter {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Writes the low `n` bits of `value` (`n` in 0..=64).
    #[inline]
    pub(crate) fn write(&mut self, value: u64, n: u32) {
        debug_assert!(n <= 64);
        if n == 0 {
            return;
        }
        let v = if n == 64 {
            value
        } else {
            value & ((1u64 << n) - 1)
        };
        if self.acc_bits + n < 64 {
            // acc_bits + n < 64 implies n < 64, so the shift is in range.
            self.acc = (self.acc << n) | v;
            self.acc_bits += n;
        } else {
            // 1 <= room <= 64; room == 64 only when acc_bits == 0 (then n == 64).
            let room = 64 - self.acc_bits;
            let rest = n - room; // 0..=63
            let word = if room == 64 {
                v
            } else {
                (self.acc << room) | (v >> rest)
            };
            self.buf.extend_from_slice(&word.to_be_bytes());
            self.acc = if rest == 0 {
                0
            } else {
                v & ((1u64 << rest) - 1)
            };
            self.acc_bits = rest;
        }
    }

    #[inline]
    pub(crate) fn write_bit(&mut self, bit: bool) {
        self.write(u64::from(bit), 1);
    }

    pub(crate) fn bit_len(&self) -> usize {
        self.buf.len() * 8 + self.acc_bits as usize
    }

    pub(crate) fn byte_len(&self) -> usize {
        self.bit_len().div_ceil(8)
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// Appends the bitstream, zero-padded to a whole byte, to `out`.
    pub(crate) fn copy_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.buf);
        if self.acc_bits > 0 {
            let aligned = self.acc << (64 - self.acc_bits);
            let nbytes = self.acc_bits.div_ceil(8) as usize;
            out.extend_from_slice(&aligned.to_be_bytes()[..nbytes]);
        }
    }
}

/// Reads bits MSB-first; reading past the end is an error, never a panic.
#[derive(Debug, Clone)]
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    /// Next bit to read.
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len() * 8 - self.pos
    }

    /// Reads up to 57 bits from a single 8-byte window.
    #[inline]
    fn read_small(&mut self, n: u32) -> u64 {
        debug_assert!(n <= 57 && n as usize <= self.remaining());
        let byte = self.pos / 8;
        let shift = (self.pos % 8) as u32;
        let mut win = [0u8; 8];
        let avail = (self.data.len() - byte).min(8);
        win[..avail].copy_from_slice(&self.data[byte..byte + avail]);
        let w = u64::from_be_bytes(win) << shift;
        self.pos += n as usize;
        if n == 0 {
            0
        } else {
            w >> (64 - n)
        }
    }

    /// Reads `n` bits (0..=64).
    #[inline]
    pub(crate) fn read(&mut self, n: u32) -> Result<u64, CodecError> {
        debug_assert!(n <= 64);
        if n as usize > self.remaining() {
            return Err(CodecError::Truncated);
        }
        if n <= 57 {
            Ok(self.read_small(n))
        } else {
            let hi = self.read_small(32);
            let lo = self.read_small(n - 32);
            Ok((hi << (n - 32)) | lo)
        }
    }

    #[inline]
    pub(crate) fn read_bit(&mut self) -> Result<bool, CodecError> {
        Ok(self.read(1)? == 1)
    }

    /// Counts consecutive 1 bits (consuming them and the terminating 0), up to `max`.
    /// Returns `max` without consuming a terminator when `max` ones were read.
    #[inline]
    pub(crate) fn read_unary(&mut self, max: u32) -> Result<u32, CodecError> {
        let mut n = 0;
        while n < max {
            if !self.read_bit()? {
                return Ok(n);
            }
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_mixed_widths() {
        let mut w = BitWriter::new();
        let items: Vec<(u64, u32)> = (0..500u64)
            .map(|i| {
                let n = (i * 7 % 65) as u32;
                let v = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                (if n == 64 { v } else { v & ((1u64 << n) - 1) }, n)
            })
            .collect();
        for &(v, n) in &items {
            w.write(v, n);
        }
        let mut out = Vec::new();
        w.copy_to(&mut out);
        assert_eq!(out.len(), w.byte_len());
        let mut r = BitReader::new(&out);
        for &(v, n) in &items {
            assert_eq!(r.read(n).unwrap(), v, "width {n}");
        }
        assert!(r.remaining() < 8);
        let pad = r.remaining() as u32;
        assert_eq!(r.read(pad).unwrap(), 0);
        assert!(matches!(r.read(1), Err(CodecError::Truncated)));
    }
}
