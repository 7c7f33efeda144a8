//! Kubernetes resource quantities (`4`, `16Gi`, `500m`, `1e3`), parsed and printed as
//! `k8s.io/apimachinery/pkg/api/resource` does, with exact integer arithmetic in nano units.

use std::{cmp::Ordering, fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The error returned for a string that is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}"
)]
pub struct ParseQuantityError(pub String);

/// How a quantity prints, as in Kubernetes (`resource.Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Format {
    /// `1e3`, `5e-3`.
    DecimalExponent,
    /// `Ki`, `Mi`, `Gi`, ... (powers of 1024).
    BinarySI,
    /// `m`, ``, `k`, `M`, `G`, ... (powers of 1000).
    DecimalSI,
}

const NANO: i128 = 1_000_000_000;
/// Largest magnitude accepted, in nano units (about 1.7e29 whole units).
const LIMIT: i128 = i128::MAX / 1_000_000;

/// A fixed-point quantity with nano precision and the format it was written in.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}
impl Eq for Quantity {}
impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}
impl std::hash::Hash for Quantity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.nanos.hash(state);
    }
}

impl Default for Quantity {
    fn default() -> Self {
        Self::from_int(0, Format::DecimalSI)
    }
}

impl Quantity {
    /// A whole-unit quantity in the given format (`Quantity::from_int(2, Format::BinarySI)`).
    pub fn from_int(value: i64, format: Format) -> Self {
        Self {
            nanos: i128::from(value) * NANO,
            format,
        }
    }

    /// A quantity of milli units (`500` → `500m`).
    pub fn from_milli(milli: i64) -> Self {
        Self {
            nanos: i128::from(milli) * 1_000_000,
            format: Format::DecimalSI,
        }
    }

    /// The format the quantity prints in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The exact value in nano units.
    pub fn as_nanos(&self) -> i128 {
        self.nanos
    }

    /// The value rounded up to a whole unit (Go's `Quantity.Value()`).
    pub fn value(&self) -> i128 {
        ceil_div(self.nanos, NANO)
    }

    /// The value in milli units, rounded up (Go's `Quantity.MilliValue()`).
    pub fn milli_value(&self) -> i128 {
        ceil_div(self.nanos, 1_000_000)
    }

    /// Whether the quantity is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// Sum, keeping `self`'s format.
    pub fn saturating_add(self, other: Self) -> Self {
        Self {
            nanos: self.nanos.saturating_add(other.nanos),
            format: self.format,
        }
    }

    /// Difference, keeping `self`'s format.
    pub fn saturating_sub(self, other: Self) -> Self {
        Self {
            nanos: self.nanos.saturating_sub(other.nanos),
            format: self.format,
        }
    }
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 { q + 1 } else { q }
}

/// Rounds `num / 10^shift` up (towards +inf) for a non-negative magnitude.
fn pow10(exp: u32) -> Option<i128> {
    10i128.checked_pow(exp)
}

impl FromStr for Quantity {
    type Err = ParseQuantityError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = || ParseQuantityError(input.to_string());
        let s = input.trim();
        if s.is_empty() {
            return Err(err());
        }
        let (negative, rest) = match s.as_bytes()[0] {
            b'+' => (false, &s[1..]),
            b'-' => (true, &s[1..]),
            _ => (false, s),
        };
        // Number part: digits with at most one dot.
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err());
        }
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        // Base (2 or 10) and exponent of the suffix.
        let (base2, exponent): (bool, i32) = match suffix {
            "" => (false, 0),
            "n" => (false, -9),
            "u" => (false, -6),
            "m" => (false, -3),
            "k" => (false, 3),
            "M" => (false, 6),
            "G" => (false, 9),
            "T" => (false, 12),
            "P" => (false, 15),
            "E" => (false, 18),
            "Ki" => (true, 10),
            "Mi" => (true, 20),
            "Gi" => (true, 30),
            "Ti" => (true, 40),
            "Pi" => (true, 50),
            "Ei" => (true, 60),
            other if other.starts_with(['e', 'E']) => {
                let exp: i32 = other[1..].parse().map_err(|_| err())?;
                if !(-100..=100).contains(&exp) {
                    return Err(err());
                }
                (false, exp)
            }
            _ => return Err(err()),
        };
        let format = if base2 {
            Format::BinarySI
        } else if suffix.starts_with(['e', 'E']) {
            Format::DecimalExponent
        } else {
            Format::DecimalSI
        };
        // mantissa = whole.frac as an integer, scaled by 10^-frac.len().
        let digits = format!("{whole}{frac}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 36 {
            return Err(err());
        }
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| err())?
        };
        let frac_len = i32::try_from(frac.len()).map_err(|_| err())?;
        // value_nanos = mantissa * 10^(9 - frac_len) * (2^exp or 10^exp), rounded up.
        let nanos = if base2 {
            let scaled = mantissa.checked_mul(1i128 << exponent).ok_or_else(err)?;
            scale10(scaled, 9 - frac_len).ok_or_else(err)?
        } else {
            scale10(mantissa, 9 - frac_len + exponent).ok_or_else(err)?
        };
        if nanos > LIMIT {
            return Err(err());
        }
        Ok(Self {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }
}

/// `value * 10^exp`, rounding up when `exp` is negative (Kubernetes rounds up to nano precision).
fn scale10(value: i128, exp: i32) -> Option<i128> {
    if exp >= 0 {
        value.checked_mul(pow10(exp.unsigned_abs())?)
    } else {
        match pow10(exp.unsigned_abs()) {
            Some(div) => Some(ceil_div(value, div)),
            None => Some(i128::from(value > 0)),
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.nanos;
        if nanos == 0 {
            return f.write_str("0");
        }
        let sign = if nanos < 0 { "-" } else { "" };
        let abs = nanos.unsigned_abs();
        let mut format = self.format;
        if format == Format::BinarySI
            && (abs < 1024 * NANO as u128 || !abs.is_multiple_of(NANO as u128))
        {
            format = Format::DecimalSI;
        }
        if format == Format::BinarySI {
            let mut value = abs / NANO as u128;
            let mut exp = 0;
            while exp < 6 && value.is_multiple_of(1024) {
                value /= 1024;
                exp += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][exp];
            return write!(f, "{sign}{value}{suffix}");
        }
        // Decimal: mantissa * 10^exp with exp a multiple of 3, starting at nano.
        let mut mantissa = abs;
        let mut exp: i32 = -9;
        while exp < 18 && mantissa.is_multiple_of(1000) {
            mantissa /= 1000;
            exp += 3;
        }
        if format == Format::DecimalExponent {
            if exp == 0 {
                write!(f, "{sign}{mantissa}")
            } else {
                write!(f, "{sign}{mantissa}e{exp}")
            }
        } else {
            let suffix = match exp {
                -9 => "n",
                -6 => "u",
                -3 => "m",
                0 => "",
                3 => "k",
                6 => "M",
                9 => "G",
                12 => "T",
                15 => "P",
                _ => "E",
            };
            write!(f, "{sign}{mantissa}{suffix}")
        }
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Str(String),
            Int(i64),
            UInt(u64),
            Float(f64),
        }
        let text = match Raw::deserialize(deserializer)? {
            Raw::Str(s) => s,
            Raw::Int(i) => i.to_string(),
            Raw::UInt(u) => u.to_string(),
            Raw::Float(x) => format!("{x}"),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A resource list (`cpu: 4`, `memory: 16Gi`, `class/machine.x: 10`), sorted by name.
pub type ResourceList = std::collections::BTreeMap<String, Quantity>;

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("4", "4", 4, 4000)]
    #[case("16Gi", "16Gi", 17_179_869_184, 17_179_869_184_000)]
    #[case("500m", "500m", 1, 500)]
    #[case("1e3", "1e3", 1000, 1_000_000)]
    #[case("100M", "100M", 100_000_000, 100_000_000_000)]
    #[case("1000", "1k", 1000, 1_000_000)]
    #[case("1500", "1500", 1500, 1_500_000)]
    #[case("0.5", "500m", 1, 500)]
    #[case("1.5Gi", "1536Mi", 1_610_612_736, 1_610_612_736_000)]
    #[case("1536", "1536", 1536, 1_536_000)]
    #[case("1024Mi", "1Gi", 1_073_741_824, 1_073_741_824_000)]
    #[case("0.5Ki", "512", 512, 512_000)]
    #[case("100m", "100m", 1, 100)]
    #[case("1n", "1n", 1, 1)]
    #[case("0.1n", "1n", 1, 1)]
    #[case("-2", "-2", -2, -2000)]
    #[case("+3k", "3k", 3000, 3_000_000)]
    #[case("0", "0", 0, 0)]
    #[case("0Gi", "0", 0, 0)]
    #[case("10e3", "10e3", 10_000, 10_000_000)]
    #[case("1E6", "1e6", 1_000_000, 1_000_000_000)]
    #[case("1.001", "1001m", 2, 1001)]
    #[case("2.5e-3", "2500e-6", 1, 3)]
    fn parse_and_canonical(
        #[case] input: &str,
        #[case] canonical: &str,
        #[case] value: i128,
        #[case] milli: i128,
    ) {
        let q: Quantity = input.parse().unwrap();
        assert_eq!(q.to_string(), canonical, "{input}");
        assert_eq!(q.value(), value, "{input}");
        assert_eq!(q.milli_value(), milli, "{input}");
        let again: Quantity = canonical.parse().unwrap();
        assert_eq!(again, q);
    }

    #[rstest]
    #[case("")]
    #[case("abc")]
    #[case("1.2.3")]
    #[case("1Gb")]
    #[case("Gi")]
    #[case("1 Gi")]
    #[case(".")]
    #[case("1e")]
    #[case("99999999999999999999999999999999999999999")]
    fn rejects(#[case] input: &str) {
        assert!(input.parse::<Quantity>().is_err(), "{input}");
    }

    #[test]
    fn yaml_numbers_and_strings() {
        let list: ResourceList = serde_yaml::from_str("cpu: 4\nmemory: 16Gi\nx: 0.5\n").unwrap();
        assert_eq!(
            serde_yaml::to_string(&list).unwrap(),
            "cpu: '4'\nmemory: 16Gi\nx: 500m\n"
        );
    }
}
