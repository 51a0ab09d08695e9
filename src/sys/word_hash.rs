//! A hasher for the collector's maps, keyed by return addresses, stack ids
//! and sizes: values of the process's own, so there is no flooding to defend
//! against, and one multiply per word replaces std's SipHash (about 400
//! instructions per interned stack).

use core::hash::{BuildHasherDefault, Hasher};
use std::collections::HashMap;

pub type WordMap<K, V> = HashMap<K, V, BuildHasherDefault<WordHasher>>;

#[derive(Default, Clone, Copy)]
pub struct WordHasher(u64);

impl WordHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
        let mut tail = [0u8; 8];
        tail[..words.remainder().len()].copy_from_slice(words.remainder());
        self.add(u64::from_le_bytes(tail));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_that_differ_hash_apart() {
        let hash = |v: &[usize]| {
            let mut h = WordHasher::default();
            core::hash::Hash::hash(v, &mut h);
            h.finish()
        };
        assert_ne!(hash(&[1, 2, 3]), hash(&[1, 3, 2]));
        assert_ne!(hash(&[1, 2]), hash(&[1, 2, 0]));
        assert_eq!(hash(&[7, 8]), hash(&[7, 8]));
    }
}
