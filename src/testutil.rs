//! Helpers shared by the unit tests (compiled only for tests).

/// A tiny deterministic xorshift generator, so that the no-panic tests can feed many
/// mutated inputs reproducibly without a dependency.
pub struct XorShift(pub u64);

impl XorShift {
    /// The next pseudo-random value.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
