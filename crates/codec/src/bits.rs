//! MSB-first bit writer and reader used by the chunk bitstream.

use crate::error::CodecError;

/// A bitstream held in one byte buffer, MSB-first; the last byte may be
/// partial. `buf` is the whole allocation: written bytes, then zeros (bits
/// past `bit_len` are always 0). It grows by about half at a time from 16
/// bytes, so a short chunk holds little more heap than its own length.
/// Written through a [`BitWriter`], which keeps the bits of one append in a
/// register.
#[derive(Debug, Clone, Default)]
pub(crate) struct BitBuf {
    buf: Box<[u8]>,
    /// Number of bits written.
    bit_len: usize,
}

impl BitBuf {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A writer appending to this buffer; its bits land when it is dropped.
    #[inline]
    pub(crate) fn writer(&mut self) -> BitWriter<'_> {
        let used = (self.bit_len & 7) as u32;
        let mut acc = 0;
        if used > 0 {
            // Take the partial last byte back into the accumulator.
            self.bit_len -= used as usize;
            acc = u64::from(self.buf[self.bit_len >> 3] >> (8 - used));
        }
        BitWriter {
            out: self,
            acc,
            acc_bits: used,
        }
    }

    /// Stores `word` at the byte-aligned end and advances by `nbits` (1..=64);
    /// the bytes of `word` past them are 0.
    #[inline]
    fn put(&mut self, word: u64, nbits: u32) {
        debug_assert!(self.bit_len & 7 == 0 && (1..=64).contains(&nbits));
        let byte = self.bit_len >> 3;
        let bytes = word.to_be_bytes();
        match self.buf.get_mut(byte..byte + 8) {
            // Bytes past `nbits` are 0 in `word` and in `buf`.
            Some(dst) => dst.copy_from_slice(&bytes),
            None => self.put_tail(&bytes[..nbits.div_ceil(8) as usize]),
        }
        self.bit_len += nbits as usize;
    }

    /// `put` within 8 bytes of the end of the allocation.
    #[cold]
    #[inline(never)]
    fn put_tail(&mut self, bytes: &[u8]) {
        let byte = self.bit_len >> 3;
        if byte + bytes.len() > self.buf.len() {
            self.grow(byte + bytes.len());
        }
        for (d, &b) in self.buf[byte..].iter_mut().zip(bytes) {
            *d = b;
        }
    }

    /// Reallocates to at least `need` bytes: about half more, in 8-byte steps.
    fn grow(&mut self, need: usize) {
        let cap = (need + need / 2).max(16).next_multiple_of(8);
        let mut v = std::mem::take(&mut self.buf).into_vec();
        v.reserve_exact(cap - v.len());
        // Length = capacity, so the boxed slice keeps the allocation as is.
        v.resize(v.capacity(), 0);
        self.buf = v.into_boxed_slice();
    }

    pub(crate) fn byte_len(&self) -> usize {
        self.bit_len.div_ceil(8)
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The bits written, zero-padded to a whole byte.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.byte_len()]
    }
}

/// Appends bits MSB-first to a [`BitBuf`]. Whole 64-bit words go to the
/// buffer; the last partial word stays in `acc` until the writer is dropped.
#[derive(Debug)]
pub(crate) struct BitWriter<'a> {
    out: &'a mut BitBuf,
    acc: u64,
    /// Number of valid low bits in `acc`, always < 64 between calls.
    acc_bits: u32,
}

impl BitWriter<'_> {
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
            self.out.put(word, 64);
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
}

impl Drop for BitWriter<'_> {
    /// Stores the partial word, zero-padded to a whole byte.
    #[inline]
    fn drop(&mut self) {
        if self.acc_bits > 0 {
            self.out
                .put(self.acc << (64 - self.acc_bits), self.acc_bits);
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
        let mut buf = BitBuf::new();
        let items: Vec<(u64, u32)> = (0..500u64)
            .map(|i| {
                let n = (i * 7 % 65) as u32;
                let v = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                (if n == 64 { v } else { v & ((1u64 << n) - 1) }, n)
            })
            .collect();
        // Several writers in turn, as appends do.
        for chunk in items.chunks(7) {
            let mut w = buf.writer();
            for &(v, n) in chunk {
                w.write(v, n);
            }
        }
        let out = buf.bytes().to_vec();
        assert!(buf.heap_bytes() >= out.len());
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
