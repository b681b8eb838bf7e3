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

    /// The next 64 bits from the current position, MSB-aligned; bits past
    /// the end read as 0. At least 57 of them are real window bits.
    #[inline]
    fn peek(&self) -> u64 {
        let byte = self.pos >> 3;
        let shift = (self.pos & 7) as u32;
        let w = match self.data.get(byte..byte + 8) {
            Some(s) => u64::from_be_bytes(s.try_into().expect("8 bytes")),
            None => {
                let mut win = [0u8; 8];
                let tail = self.data.get(byte..).unwrap_or(&[]);
                win[..tail.len()].copy_from_slice(tail);
                u64::from_be_bytes(win)
            }
        };
        w << shift
    }

    /// Reads `n` bits (0..=64).
    #[inline]
    pub(crate) fn read(&mut self, n: u32) -> Result<u64, CodecError> {
        debug_assert!(n <= 64);
        if n as usize > self.remaining() {
            return Err(CodecError::Truncated);
        }
        if n == 0 {
            return Ok(0);
        }
        if n <= 57 {
            let v = self.peek() >> (64 - n);
            self.pos += n as usize;
            Ok(v)
        } else {
            let hi = self.peek() >> 32;
            self.pos += 32;
            let lo = self.peek() >> (64 - (n - 32));
            self.pos += (n - 32) as usize;
            Ok((hi << (n - 32)) | lo)
        }
    }

    #[inline]
    pub(crate) fn read_bit(&mut self) -> Result<bool, CodecError> {
        if self.pos >= self.data.len() * 8 {
            return Err(CodecError::Truncated);
        }
        let bit = (self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    /// Counts consecutive 1 bits (consuming them and the terminating 0), up to `max`
    /// (at most 56). Returns `max` without consuming a terminator when `max`
    /// ones were read.
    #[inline]
    pub(crate) fn read_unary(&mut self, max: u32) -> Result<u32, CodecError> {
        debug_assert!(max <= 56);
        // Padding past the end reads as zeros, so the count never runs past it.
        let ones = self.peek().leading_ones();
        if ones >= max {
            self.pos += max as usize;
            return Ok(max);
        }
        if ones as usize + 1 > self.remaining() {
            return Err(CodecError::Truncated);
        }
        self.pos += ones as usize + 1;
        Ok(ones)
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

    #[test]
    fn unary_at_the_end_of_data() {
        // 0b1110_0000: three ones, then a terminator.
        let mut r = BitReader::new(&[0xe0]);
        assert_eq!(r.read_unary(10).unwrap(), 3);
        assert_eq!(r.remaining(), 4);
        // All ones up to the end: no terminator, fewer than max ones.
        let mut r = BitReader::new(&[0xff]);
        assert!(matches!(r.read_unary(10), Err(CodecError::Truncated)));
        // Exactly max ones: returned without a terminator.
        let mut r = BitReader::new(&[0xff, 0xc0]);
        assert_eq!(r.read_unary(10).unwrap(), 10);
        assert_eq!(r.remaining(), 6);
        assert!(!r.read_bit().unwrap());
    }
}
