//! Human-readable units used in `fluxlit.toml`: durations (`"30s"`) and sizes (`"10MiB"`).
//!
//! Both keep the text the user wrote next to the parsed value, so `fluxlit config`
//! prints the file's own spelling back and the schema documents the accepted forms.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as text: `"250ms"`, `"30s"`, `"2m"`, `"1h 30m"`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }

    pub const fn get(self) -> std::time::Duration {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(text.trim())
            .map(Self)
            .map_err(|err| {
                format!(
                    "invalid duration {text:?}: {err} (write it like \"500ms\", \"30s\", \"2m\")"
                )
            })
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: a number and a unit (ms, s, m, h), e.g. \"500ms\", \"30s\", \"2m\".",
            // The units humantime accepts; the schema and the parser must agree.
            "pattern": r"^\s*([0-9]+\s*(nsec|ns|usec|us|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|w|months|month|M|years|year|y)\s*)+$",
            "examples": ["500ms", "30s", "2m"]
        })
    }
}

/// A size in bytes written as text: `"16KiB"`, `"10MiB"`, `"1GB"`, or a plain number of bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteSize(u64);

impl ByteSize {
    pub const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }

    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }

    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (factor, unit) in UNITS {
            if self.0 >= factor && self.0.is_multiple_of(factor) {
                return write!(f, "{}{unit}", self.0 / factor);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.trim()
            .parse::<bytesize::ByteSize>()
            .map(|size| Self(size.as_u64()))
            .map_err(|err| {
                format!("invalid size {text:?}: {err} (write it like \"16KiB\", \"10MiB\")")
            })
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A size: a number and a unit (B, KB, KiB, MB, MiB, GB, GiB), e.g. \"16KiB\", \"10MiB\".",
            "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*([KkMmGgTtPpEe][Ii]?[Bb]?|[Bb])?\s*$",
            "examples": ["16KiB", "10MiB"]
        })
    }
}

/// A request rate written as text: a count per unit of time, `"20/s"`, `"10/min"`,
/// `"1000/h"`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    count: u32,
    per: RateUnit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RateUnit {
    Second,
    Minute,
    Hour,
}

impl RateUnit {
    const fn seconds(self) -> u64 {
        match self {
            RateUnit::Second => 1,
            RateUnit::Minute => 60,
            RateUnit::Hour => 3600,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            RateUnit::Second => "s",
            RateUnit::Minute => "min",
            RateUnit::Hour => "h",
        }
    }
}

impl Rate {
    /// `count` requests per minute.
    pub const fn per_minute(count: u32) -> Self {
        Self {
            count,
            per: RateUnit::Minute,
        }
    }

    /// The requests allowed per unit of time; never zero once parsed.
    pub const fn count(self) -> u32 {
        self.count
    }

    /// The steady spacing between two requests: the unit divided by the count.
    pub fn interval(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.per.seconds()) / self.count.max(1)
    }
}

impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.per.name())
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| {
            format!("invalid rate {text:?}: {why} (write it like \"20/s\", \"10/min\", \"1000/h\")")
        };
        let Some((count, unit)) = text.trim().split_once('/') else {
            return Err(invalid("a count, '/' and a unit"));
        };
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| invalid("the count must be a whole number"))?;
        if count == 0 {
            return Err(invalid("the count must be at least 1"));
        }
        let per = match unit.trim() {
            "s" | "sec" | "second" => RateUnit::Second,
            "m" | "min" | "minute" => RateUnit::Minute,
            "h" | "hour" => RateUnit::Hour,
            _ => return Err(invalid("the unit must be s, min or h")),
        };
        Ok(Self { count, per })
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Rate {
    fn schema_name() -> Cow<'static, str> {
        "Rate".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A rate: a count of requests per second, minute or hour, e.g. \"20/s\", \"10/min\", \"1000/h\".",
            // The forms `Rate::from_str` accepts; the schema and the parser must agree.
            "pattern": r"^\s*0*[1-9][0-9]*\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$",
            "examples": ["20/s", "10/min"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_back() {
        let parsed: Duration = "30s".parse().unwrap();
        assert_eq!(parsed.get(), std::time::Duration::from_secs(30));
        assert_eq!(parsed.to_string(), "30s");
        assert_eq!("250ms".parse::<Duration>().unwrap().to_string(), "250ms");
        assert!("thirty".parse::<Duration>().is_err());
        assert!(
            "30".parse::<Duration>().is_err(),
            "a bare number has no unit"
        );
    }

    #[test]
    fn sizes_parse_and_print_back() {
        assert_eq!(
            "10MiB".parse::<ByteSize>().unwrap().bytes(),
            10 * 1024 * 1024
        );
        assert_eq!("16KiB".parse::<ByteSize>().unwrap().to_string(), "16KiB");
        assert_eq!("1000".parse::<ByteSize>().unwrap().bytes(), 1000);
        assert!("ten megs".parse::<ByteSize>().is_err());
    }

    #[test]
    fn rates_parse_and_print_back() {
        let rate: Rate = "20/s".parse().unwrap();
        assert_eq!(rate.count(), 20);
        assert_eq!(rate.interval(), std::time::Duration::from_millis(50));
        assert_eq!(rate.to_string(), "20/s");
        let rate: Rate = " 10 / minute ".parse().unwrap();
        assert_eq!(rate.to_string(), "10/min");
        assert_eq!(rate.interval(), std::time::Duration::from_secs(6));
        assert_eq!("1000/h".parse::<Rate>().unwrap().to_string(), "1000/h");
        for wrong in ["0/s", "20", "20/day", "-1/s", "x/s", "/s", "4294967296/s"] {
            assert!(wrong.parse::<Rate>().is_err(), "{wrong} is no rate");
        }
    }
}
