//! Value types of the config that have a human spelling: byte sizes (`"64KB"`, `"1MiB"`)
//! and the worker count (`"auto"` or a number).
//!
//! Each type reads both the human string and a bare integer, because TOML files hold
//! either and `IORELAY_*` variables reach serde as whatever figment guessed the text to
//! be. Each writes a spelling that reads back to the same value, so the effective config
//! printed by `iorelay check-config` can be fed back in. Durations need nothing here: the
//! structs use `humantime_serde`, which reads `"300ms"`, `"25s"`, `"1m"`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::Workers;

/// A number of bytes. Reads an integer (bytes) or a string with a unit: decimal `KB`,
/// `MB`, `GB` (powers of 1000), binary `KiB`, `MiB`, `GiB` (powers of 1024), or `B`;
/// case and a space before the unit do not matter (`"1MB"`, `"64 kb"`, `"512 B"`).
/// Written back as the shortest exact spelling (`"1MB"`, `"1MiB"`, `"1500B"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

impl Size {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// The size in bytes as a `usize`, saturating where `usize` is narrower than `u64`.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// Units from largest to smallest, each family separately, so that the first unit that
/// divides a value exactly is the largest one that does.
const DECIMAL_UNITS: [(&str, u64); 6] = [
    ("EB", 1_000_000_000_000_000_000),
    ("PB", 1_000_000_000_000_000),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
];
const BINARY_UNITS: [(&str, u64); 6] = [
    ("EiB", 1 << 60),
    ("PiB", 1 << 50),
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
];

impl fmt::Display for Size {
    /// The shortest exact spelling: the unit, decimal or binary, that leaves the smallest
    /// whole number (decimal on a tie), else plain bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exact = |units: &[(&'static str, u64)]| {
            units
                .iter()
                .find(|(_, factor)| self.0 != 0 && self.0 % factor == 0)
                .map(|&(unit, factor)| (self.0 / factor, unit))
        };
        let best = match (exact(&DECIMAL_UNITS), exact(&BINARY_UNITS)) {
            (Some(d), Some(b)) if b.0 < d.0 => Some(b),
            (Some(d), _) => Some(d),
            (None, b) => b,
        };
        match best {
            Some((n, unit)) => write!(f, "{n}{unit}"),
            None => write!(f, "{}B", self.0),
        }
    }
}

/// Why a size string was refused; the message is the whole explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid size {input:?}: expected a number of bytes or a number with a unit such as \"64KB\", \"1MB\" or \"1MiB\""
)]
pub struct SizeParseError {
    input: String,
}

impl FromStr for Size {
    type Err = SizeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        // bytesize reads a bare number with trailing text ("10 ") as a unit error, and
        // a leading sign as garbage; trimming first keeps both messages about the value.
        trimmed
            .parse::<bytesize::ByteSize>()
            .map(|b| Size(b.as_u64()))
            .map_err(|_| SizeParseError {
                input: s.to_owned(),
            })
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = Size;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes or a string such as \"64KB\", \"1MB\" or \"1MiB\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

impl fmt::Display for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workers::Auto => f.write_str("auto"),
            Workers::Count(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Workers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            Workers::Auto => serializer.serialize_str("auto"),
            Workers::Count(n) => serializer.serialize_u64(n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WorkersVisitor;

        impl WorkersVisitor {
            fn count<E: de::Error>(n: u64) -> Result<Workers, E> {
                match usize::try_from(n) {
                    Ok(0) => Err(E::custom("workers must be \"auto\" or at least 1, found 0")),
                    Ok(n) => Ok(Workers::Count(n)),
                    Err(_) => Err(E::custom(format_args!("workers: {n} is too many"))),
                }
            }
        }

        impl Visitor<'_> for WorkersVisitor {
            type Value = Workers;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"auto\" or a number of workers of at least 1")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Workers, E> {
                Self::count(v)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Workers, E> {
                match u64::try_from(v) {
                    Ok(n) => Self::count(n),
                    Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
                }
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Workers, E> {
                let v = v.trim();
                if v.eq_ignore_ascii_case("auto") {
                    return Ok(Workers::Auto);
                }
                // A quoted number ("4") is what a shell or a templating tool tends to
                // produce; it means the same as the bare number.
                match v.parse::<u64>() {
                    Ok(n) => Self::count(n),
                    Err(_) => Err(E::invalid_value(Unexpected::Str(v), &self)),
                }
            }
        }

        deserializer.deserialize_any(WorkersVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Holder {
        size: Size,
        workers: Workers,
    }

    fn size(toml_value: &str) -> Result<Size, String> {
        #[derive(Deserialize)]
        struct One {
            size: Size,
        }
        toml::from_str::<One>(&format!("size = {toml_value}"))
            .map(|o| o.size)
            .map_err(|e| e.to_string())
    }

    fn workers(toml_value: &str) -> Result<Workers, String> {
        #[derive(Deserialize)]
        struct One {
            workers: Workers,
        }
        toml::from_str::<One>(&format!("workers = {toml_value}"))
            .map(|o| o.workers)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sizes_read_integers_and_human_strings() {
        assert_eq!(size("1000000"), Ok(Size(1_000_000)));
        assert_eq!(size("\"1MB\""), Ok(Size(1_000_000)));
        assert_eq!(size("\"64KB\""), Ok(Size(64_000)));
        assert_eq!(size("\"64 kb\""), Ok(Size(64_000)));
        assert_eq!(size("\"1MiB\""), Ok(Size(1_048_576)));
        assert_eq!(size("\"512 B\""), Ok(Size(512)));
        assert_eq!(size("\"1.5KB\""), Ok(Size(1_500)));
        assert_eq!(size("\"2048\""), Ok(Size(2048)));
    }

    #[test]
    fn bad_sizes_say_what_is_expected() {
        let err = size("\"12 parsecs\"").unwrap_err();
        assert!(err.contains("invalid size \"12 parsecs\""), "{err}");
        assert!(err.contains("\"1MB\""), "{err}");
        assert!(size("-1").is_err());
        assert!(size("\"-1KB\"").is_err());
        assert!(size("true").is_err());
    }

    #[test]
    fn sizes_write_the_shortest_exact_spelling() {
        let cases = [
            (0, "0B"),
            (512, "512B"),
            (1_000, "1KB"),
            (1_024, "1KiB"),
            (1_500, "1500B"),
            (64_000, "64KB"),
            (1_000_000, "1MB"),
            (1_048_576, "1MiB"),
            (1_024_000, "1000KiB"),
            (3 << 30, "3GiB"),
        ];
        for (bytes, text) in cases {
            assert_eq!(Size(bytes).to_string(), text);
        }
    }

    #[test]
    fn sizes_read_back_what_they_write() {
        for bytes in [
            0,
            1,
            999,
            1_000,
            1_023,
            1_024,
            1_500,
            64_000,
            1_048_577,
            u64::MAX,
        ] {
            let text = Size(bytes).to_string();
            assert_eq!(text.parse::<Size>(), Ok(Size(bytes)), "{text}");
        }
    }

    #[test]
    fn as_usize_saturates() {
        assert_eq!(Size(12).as_usize(), 12);
        assert_eq!(Size(u64::MAX).as_usize(), usize::MAX);
    }

    #[test]
    fn workers_read_auto_or_a_positive_number() {
        assert_eq!(workers("\"auto\""), Ok(Workers::Auto));
        assert_eq!(workers("4"), Ok(Workers::Count(4)));
        assert_eq!(workers("\"4\""), Ok(Workers::Count(4)));
        let zero = workers("0").unwrap_err();
        assert!(zero.contains("at least 1"), "{zero}");
        assert!(workers("-2").is_err());
        let word = workers("\"many\"").unwrap_err();
        assert!(word.contains("\"auto\""), "{word}");
    }

    #[test]
    fn both_round_trip_through_toml() {
        for holder in [
            Holder {
                size: Size(1_048_576),
                workers: Workers::Auto,
            },
            Holder {
                size: Size(7),
                workers: Workers::Count(3),
            },
        ] {
            let text = toml::to_string(&holder).unwrap();
            assert_eq!(toml::from_str::<Holder>(&text).unwrap(), holder, "{text}");
        }
    }
}
