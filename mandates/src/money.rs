//! Exact money: integer minor units of an ISO 4217 currency.
//!
//! Amounts are never floats. An [`Amount`] is a signed count of minor units (cents for
//! USD, yen for JPY, fils for BHD) bounded by [`MAX_MINOR_UNITS`]; arithmetic is checked
//! and returns [`MoneyError`] instead of wrapping or panicking. Conversions to and from
//! [`rust_decimal::Decimal`] always name their [`Rounding`].
//!
//! ```
//! use settle_mandates::money::{Amount, Currency, Sign};
//! let usd: Currency = "USD".parse().unwrap();
//! let a = Amount::parse("12.34", usd, Sign::Positive).unwrap();
//! assert_eq!(a.minor_units(), 1234);
//! assert_eq!(a.to_string(), "12.34 USD");
//! assert!(Amount::parse("12.345", usd, Sign::Positive).is_err()); // over-precise
//! ```

use std::fmt;
use std::str::FromStr;

use num_bigint::BigInt;
use num_integer::Integer;
use num_traits::Signed;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest magnitude an amount may have, in minor units (10^15: a quadrillion cents).
/// A named limit keeps every sum of a bounded number of amounts far from `i64` overflow.
pub const MAX_MINOR_UNITS: i64 = 1_000_000_000_000_000;

/// Why a money value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// Not an ISO 4217 code.
    #[error("unknown currency '{0}' (expected an ISO 4217 code such as USD)")]
    UnknownCurrency(String),
    /// An ISO 4217 code with no minor unit (gold, SDR, test codes): not payable.
    #[error("currency '{0}' has no minor unit and cannot be paid")]
    NotPayable(String),
    /// Not a decimal number.
    #[error("'{0}' is not a decimal amount")]
    Malformed(String),
    /// More decimal places than the currency has.
    #[error("'{value}' has more than {exponent} decimal places for {currency}")]
    OverPrecise {
        /// The input.
        value: String,
        /// The currency.
        currency: String,
        /// Its number of minor-unit digits.
        exponent: u32,
    },
    /// A negative (or zero) amount where only positive ones are allowed.
    #[error("amount {0} must be {1}")]
    WrongSign(String, &'static str),
    /// Beyond [`MAX_MINOR_UNITS`].
    #[error("amount out of range (more than {MAX_MINOR_UNITS} minor units)")]
    Overflow,
    /// Two amounts of different currencies were combined.
    #[error("currency mismatch: {0} vs {1}")]
    CurrencyMismatch(String, String),
}

/// An ISO 4217 currency with a minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// The three-letter code.
    #[must_use]
    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Number of minor-unit digits (USD 2, JPY 0, BHD 3).
    #[must_use]
    pub fn exponent(self) -> u32 {
        // Construction guarantees an exponent exists.
        u32::from(self.0.exponent().unwrap_or(0))
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, MoneyError> {
        let c = iso_currency::Currency::from_code(s).ok_or_else(|| MoneyError::UnknownCurrency(s.to_owned()))?;
        if c.exponent().is_none() {
            return Err(MoneyError::NotPayable(s.to_owned()));
        }
        Ok(Self(c))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Currency {
    /// Every code [`Currency`] accepts (ISO 4217 codes with a minor unit), sorted: the
    /// three-letter codes that parse, so the list is what the parser accepts.
    #[must_use]
    pub fn all() -> Vec<Self> {
        let letters = b'A'..=b'Z';
        let mut out = Vec::new();
        for a in letters.clone() {
            for b in letters.clone() {
                for c in letters.clone() {
                    let code = [a, b, c];
                    if let Ok(cur) = std::str::from_utf8(&code).unwrap_or_default().parse::<Self>() {
                        out.push(cur);
                    }
                }
            }
        }
        out
    }
}

/// An ISO 4217 code with a minor unit: one of [`Currency::all`].
#[cfg(feature = "schemars")]
impl schemars::JsonSchema for Currency {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Currency".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let codes: Vec<&str> = Self::all().into_iter().map(Self::code).collect();
        schemars::json_schema!({
            "type": "string",
            "description": "An ISO 4217 currency code with a minor unit (codes without one, such as XAU, are not payable).",
            "enum": codes,
        })
    }
}

/// Parses a decimal string of the one grammar every door accepts: an optional `-`,
/// one or more ASCII digits, and optionally a point followed by one or more digits
/// (`"12.34"`, `"0.25"`, `"-5"`; not `"1."`, `".5"`, `"+1"`, `"1e3"`, `" 1"`), at most 28
/// fraction digits. The value keeps the digits written (`"1.230"` has scale 3).
pub fn parse_decimal(s: &str) -> Result<Decimal, MoneyError> {
    let bad = || MoneyError::Malformed(s.to_owned());
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.').map_or((digits, None), |(i, f)| (i, Some(f)));
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
        return Err(bad());
    }
    Decimal::from_str_exact(s).map_err(|_| bad())
}

/// Which signs an amount may have where it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// Strictly greater than zero.
    Positive,
    /// Zero or more.
    NonNegative,
    /// Any sign.
    Any,
}

/// A named rounding strategy. There is no default: every call site says which one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Round half to even (banker's rounding).
    HalfEven,
    /// Round half away from zero (the school rule).
    HalfAwayFromZero,
    /// Truncate toward zero.
    TowardZero,
    /// Toward negative infinity.
    Floor,
}

impl Rounding {
    /// Rounds the exact rational `num / den` (`den > 0`) to an integer by this rule:
    /// the remainder is compared with the divisor in integers, so a tie is exactly ½
    /// and nothing is lost to a decimal expansion (thirds stay thirds).
    ///
    /// ```
    /// use settle_mandates::money::Rounding;
    /// assert_eq!(Rounding::HalfEven.round_ratio(&5_i128, &2), 2);
    /// assert_eq!(Rounding::HalfEven.round_ratio(&7_i128, &2), 4);
    /// assert_eq!(Rounding::HalfAwayFromZero.round_ratio(&-5_i128, &2), -3);
    /// assert_eq!(Rounding::TowardZero.round_ratio(&-5_i128, &3), -1);
    /// assert_eq!(Rounding::Floor.round_ratio(&-5_i128, &3), -2);
    /// ```
    ///
    /// # Panics
    /// If `den` is not positive (a bug of the caller).
    #[must_use]
    pub fn round_ratio<T>(self, num: &T, den: &T) -> T
    where
        T: Integer + Signed + Clone,
    {
        assert!(den.is_positive(), "round_ratio needs a positive divisor");
        let (q, r) = num.div_mod_floor(den);
        if r.is_zero() {
            return q;
        }
        let up = match self {
            Self::Floor => false,
            Self::TowardZero => num.is_negative(),
            Self::HalfEven | Self::HalfAwayFromZero => match (r.clone() + r).cmp(den) {
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal if self == Self::HalfEven => q.is_odd(),
                std::cmp::Ordering::Equal => !num.is_negative(),
            },
        };
        if up { q + T::one() } else { q }
    }

    fn strategy(self) -> RoundingStrategy {
        match self {
            Self::HalfEven => RoundingStrategy::MidpointNearestEven,
            Self::HalfAwayFromZero => RoundingStrategy::MidpointAwayFromZero,
            Self::TowardZero => RoundingStrategy::ToZero,
            Self::Floor => RoundingStrategy::ToNegativeInfinity,
        }
    }
}

/// An exact amount of money: signed integer minor units and a currency.
///
/// Serialised as AP2 v0.2 does: `{"amount": <minor units>, "currency": "USD"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "AmountRepr", into = "AmountRepr")]
pub struct Amount {
    minor: i64,
    currency: Currency,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AmountRepr {
    amount: i64,
    currency: Currency,
}

/// `{"amount": <minor units, |amount| ≤ 10^15>, "currency": <ISO 4217 code>}`.
#[cfg(feature = "schemars")]
impl schemars::JsonSchema for Amount {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Amount".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let currency = generator.subschema_for::<Currency>();
        schemars::json_schema!({
            "type": "object",
            "description": "An exact amount of money: signed integer minor units (cents for USD, yen for JPY) of a currency, never a float.",
            "properties": {
                "amount": {
                    "type": "integer",
                    "description": "Minor units of the currency.",
                    "minimum": -MAX_MINOR_UNITS,
                    "maximum": MAX_MINOR_UNITS,
                },
                "currency": currency,
            },
            "required": ["amount", "currency"],
            "additionalProperties": false,
        })
    }
}

impl TryFrom<AmountRepr> for Amount {
    type Error = MoneyError;
    fn try_from(r: AmountRepr) -> Result<Self, MoneyError> {
        Self::from_minor(r.amount, r.currency)
    }
}

impl From<Amount> for AmountRepr {
    fn from(a: Amount) -> Self {
        Self { amount: a.minor, currency: a.currency }
    }
}

impl Amount {
    /// An amount of `minor` minor units; refuses magnitudes beyond [`MAX_MINOR_UNITS`].
    pub fn from_minor(minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        if minor.checked_abs().is_none_or(|m| m > MAX_MINOR_UNITS) {
            return Err(MoneyError::Overflow);
        }
        Ok(Self { minor, currency })
    }

    /// Zero of a currency.
    #[must_use]
    pub fn zero(currency: Currency) -> Self {
        Self { minor: 0, currency }
    }

    /// Parses a decimal string (`"12.34"`, `"-5"`, `"0.1"`) in `currency`: the
    /// [`parse_decimal`] grammar with at most the currency's exponent of fraction digits
    /// (`"1.230"` is refused for USD, as `"1."`, `".5"` and `"1e3"` are everywhere); signs
    /// outside `sign` and overflow are refused too.
    pub fn parse(s: &str, currency: Currency, sign: Sign) -> Result<Self, MoneyError> {
        let d = parse_decimal(s)?;
        let exp = currency.exponent();
        if d.scale() > exp {
            return Err(MoneyError::OverPrecise {
                value: s.to_owned(),
                currency: currency.code().to_owned(),
                exponent: exp,
            });
        }
        let a = Self::from_decimal(d, currency, Rounding::TowardZero)?;
        a.check_sign(sign)?;
        Ok(a)
    }

    /// Refuses an amount whose sign `sign` does not allow.
    pub fn check_sign(self, sign: Sign) -> Result<(), MoneyError> {
        match sign {
            Sign::Positive if self.minor <= 0 => Err(MoneyError::WrongSign(self.to_string(), "greater than zero")),
            Sign::NonNegative if self.minor < 0 => Err(MoneyError::WrongSign(self.to_string(), "zero or more")),
            _ => Ok(()),
        }
    }

    /// Converts an exact decimal in major units to minor units with the named rounding.
    pub fn from_decimal(d: Decimal, currency: Currency, rounding: Rounding) -> Result<Self, MoneyError> {
        let exp = currency.exponent();
        let scaled = d
            .checked_mul(Decimal::from(10_i64.pow(exp)))
            .ok_or(MoneyError::Overflow)?
            .round_dp_with_strategy(0, rounding.strategy());
        let minor = i64::try_from(scaled).map_err(|_| MoneyError::Overflow)?;
        Self::from_minor(minor, currency)
    }

    /// The amount `num / den` minor units (`den > 0`), exactly, rounded once by
    /// `rounding`; refuses a result beyond [`MAX_MINOR_UNITS`].
    pub fn from_ratio(num: i128, den: i128, currency: Currency, rounding: Rounding) -> Result<Self, MoneyError> {
        let minor = rounding.round_ratio(&num, &den);
        Self::from_minor(i64::try_from(minor).map_err(|_| MoneyError::Overflow)?, currency)
    }

    /// `self × factor`, expressed in `to`'s minor units, computed exactly (big integers:
    /// a factor may carry 28 digits) and rounded once by `rounding`. An FX conversion
    /// (`factor` = units of `to` per unit of `self`'s currency) and a fraction of an
    /// amount (`to` = the same currency) are both this. The result carries the sign of
    /// the product; one beyond [`MAX_MINOR_UNITS`] is refused.
    pub fn times_exact(self, factor: Decimal, to: Currency, rounding: Rounding) -> Result<Self, MoneyError> {
        let ten = BigInt::from(10);
        let num = BigInt::from(self.minor)
            * BigInt::from(factor.mantissa())
            * num_traits::pow(ten.clone(), usize::try_from(to.exponent()).map_err(|_| MoneyError::Overflow)?);
        let den_exp = self.currency.exponent() + factor.scale();
        let den = num_traits::pow(ten, usize::try_from(den_exp).map_err(|_| MoneyError::Overflow)?);
        let minor = rounding.round_ratio(&num, &den);
        let minor = i64::try_from(minor).map_err(|_| MoneyError::Overflow)?;
        Self::from_minor(minor, to)
    }

    /// The exact value in major units (`12.34` for 1234 cents).
    #[must_use]
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.minor, self.currency.exponent())
    }

    /// Minor units.
    #[must_use]
    pub fn minor_units(self) -> i64 {
        self.minor
    }

    /// The currency.
    #[must_use]
    pub fn currency(self) -> Currency {
        self.currency
    }

    /// True when zero.
    #[must_use]
    pub fn is_zero(self) -> bool {
        self.minor == 0
    }

    /// `self + other`, same currency, within range.
    pub fn checked_add(self, other: Self) -> Result<Self, MoneyError> {
        self.same_currency(other)?;
        Self::from_minor(self.minor.checked_add(other.minor).ok_or(MoneyError::Overflow)?, self.currency)
    }

    /// `self - other`, same currency, within range.
    pub fn checked_sub(self, other: Self) -> Result<Self, MoneyError> {
        self.same_currency(other)?;
        Self::from_minor(self.minor.checked_sub(other.minor).ok_or(MoneyError::Overflow)?, self.currency)
    }

    /// `-self`.
    #[must_use]
    pub fn negated(self) -> Self {
        // In range by construction: the bound is symmetric.
        Self { minor: -self.minor, currency: self.currency }
    }

    fn same_currency(self, other: Self) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch(self.currency.code().to_owned(), other.currency.code().to_owned()))
        }
    }

    /// The amount as a plain decimal string in major units, without the currency
    /// (`"12.34"`, `"-0.05"`, `"100"` for JPY). Parses back with [`Amount::parse`].
    #[must_use]
    pub fn to_decimal_string(self) -> String {
        self.to_decimal().to_string()
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cur(c: &str) -> Currency {
        c.parse().unwrap()
    }

    /// `Currency::all` is the set the parser accepts: payable codes only, sorted.
    #[test]
    fn all_currencies_are_the_payable_codes() {
        let all = Currency::all();
        let codes: Vec<&str> = all.iter().map(|c| c.code()).collect();
        assert!(codes.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
        for c in ["USD", "EUR", "JPY", "BHD", "CLF"] {
            assert!(codes.contains(&c), "{c}");
        }
        for c in ["XAU", "XDR", "XTS", "ABC"] {
            assert!(!codes.contains(&c), "{c}");
        }
        assert!(all.iter().all(|c| c.code().parse::<Currency>() == Ok(*c)));
    }

    #[test]
    fn parse_checks_precision_sign_and_currency() {
        let cases: &[(&str, &str, Sign, Result<i64, &str>)] = &[
            ("12.34", "USD", Sign::Positive, Ok(1234)),
            ("12.3", "USD", Sign::Positive, Ok(1230)),
            ("12.30", "USD", Sign::Positive, Ok(1230)),
            ("1000", "JPY", Sign::Positive, Ok(1000)),
            ("1000.5", "JPY", Sign::Positive, Err("more than 0 decimal places")),
            ("1.234", "BHD", Sign::Positive, Ok(1234)),
            ("1.2345", "BHD", Sign::Positive, Err("more than 3 decimal places")),
            ("12.345", "USD", Sign::Positive, Err("more than 2 decimal places")),
            ("-1", "USD", Sign::Positive, Err("must be greater than zero")),
            ("0", "USD", Sign::Positive, Err("must be greater than zero")),
            ("0", "USD", Sign::NonNegative, Ok(0)),
            ("-1.5", "USD", Sign::Any, Ok(-150)),
            ("1e3", "USD", Sign::Any, Err("not a decimal")),
            ("1.230", "USD", Sign::Positive, Err("more than 2 decimal places")),
            ("1.", "USD", Sign::Positive, Err("not a decimal")),
            (".5", "USD", Sign::Positive, Err("not a decimal")),
            ("+1", "USD", Sign::Positive, Err("not a decimal")),
            ("1.0", "JPY", Sign::Positive, Err("more than 0 decimal places")),
            ("--1", "USD", Sign::Any, Err("not a decimal")),
            ("1.2.3", "USD", Sign::Any, Err("not a decimal")),
            (" 1", "USD", Sign::Any, Err("not a decimal")),
            ("", "USD", Sign::Any, Err("not a decimal")),
            ("abc", "USD", Sign::Any, Err("not a decimal")),
            ("10000000000000000", "USD", Sign::Any, Err("out of range")),
        ];
        for (s, c, sign, want) in cases {
            let got = Amount::parse(s, cur(c), *sign);
            match (got, want) {
                (Ok(a), Ok(m)) => assert_eq!(a.minor_units(), *m, "{s} {c}"),
                (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{s}: {e}"),
                (g, w) => panic!("{s} {c}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn currencies_are_checked() {
        assert!(matches!("XYZ".parse::<Currency>(), Err(MoneyError::UnknownCurrency(_))));
        assert!(matches!("usd".parse::<Currency>(), Err(MoneyError::UnknownCurrency(_))));
        assert!(matches!("XAU".parse::<Currency>(), Err(MoneyError::NotPayable(_))));
        assert_eq!(cur("JPY").exponent(), 0);
        assert_eq!(cur("BHD").exponent(), 3);
    }

    #[test]
    fn rounding_is_named() {
        let usd = cur("USD");
        let d = Decimal::new(12345, 3); // 12.345
        let r = |m| Amount::from_decimal(d, usd, m).unwrap().minor_units();
        assert_eq!(r(Rounding::HalfEven), 1234);
        assert_eq!(r(Rounding::HalfAwayFromZero), 1235);
        assert_eq!(r(Rounding::TowardZero), 1234);
        let n = Decimal::new(-12345, 3);
        assert_eq!(Amount::from_decimal(n, usd, Rounding::Floor).unwrap().minor_units(), -1235);
    }

    #[test]
    fn serde_is_ap2_shape() {
        let a = Amount::from_minor(1234, cur("USD")).unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"amount":1234,"currency":"USD"}"#);
        let bad: Result<Amount, _> = serde_json::from_str(r#"{"amount":12.5,"currency":"USD"}"#);
        assert!(bad.is_err(), "floats are refused");
        let bad: Result<Amount, _> = serde_json::from_str(r#"{"amount":1,"currency":"ABC"}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn arithmetic_is_checked() {
        let usd = cur("USD");
        let max = Amount::from_minor(MAX_MINOR_UNITS, usd).unwrap();
        let one = Amount::from_minor(1, usd).unwrap();
        assert_eq!(max.checked_add(one), Err(MoneyError::Overflow));
        let eur = Amount::from_minor(1, cur("EUR")).unwrap();
        assert!(matches!(one.checked_add(eur), Err(MoneyError::CurrencyMismatch(..))));
        assert_eq!(one.checked_sub(one).unwrap().minor_units(), 0);
    }

    #[test]
    fn exact_rounding_of_ratios() {
        // (num, den, floor, toward_zero, half_even, half_away_from_zero)
        let cases: &[(i128, i128, [i128; 4])] = &[
            (7, 2, [3, 3, 4, 4]),
            (5, 2, [2, 2, 2, 3]),
            (-5, 2, [-3, -2, -2, -3]),
            (-7, 2, [-4, -3, -4, -4]),
            (2, 3, [0, 0, 1, 1]),
            (-2, 3, [-1, 0, -1, -1]),
            (1, 3, [0, 0, 0, 0]),
            (3000 * 10000, 30000, [1000, 1000, 1000, 1000]),
            (0, 7, [0, 0, 0, 0]),
        ];
        let modes = [Rounding::Floor, Rounding::TowardZero, Rounding::HalfEven, Rounding::HalfAwayFromZero];
        for (n, d, want) in cases {
            for (m, w) in modes.iter().zip(want) {
                assert_eq!(m.round_ratio(n, d), *w, "{n}/{d} by {m:?}");
            }
        }
    }

    #[test]
    fn a_hair_above_a_half_is_not_a_tie() {
        // pool 400000000000001 × refunded 928571428571428 / revenue 999999999999999:
        // exactly 371428571428572.5000000000000005…, which half-even rounds up.
        let num = 400_000_000_000_001_i128 * 928_571_428_571_428;
        let den = 999_999_999_999_999_i128;
        assert_eq!(Rounding::HalfEven.round_ratio(&num, &den), 371_428_571_428_573);
        let usd = cur("USD");
        let a = Amount::from_ratio(num, den, usd, Rounding::HalfEven).unwrap();
        assert_eq!(a.minor_units(), 371_428_571_428_573);
        assert_eq!(Amount::from_ratio(num * 1000, den, usd, Rounding::Floor), Err(MoneyError::Overflow));
    }

    #[test]
    fn products_with_long_factors_are_exact() {
        let usd = cur("USD");
        let jpy = cur("JPY");
        let bhd = cur("BHD");
        let a = Amount::from_minor(999_999_999_999_999, usd).unwrap();
        // A 28-digit fraction: 1/3 to 28 places. 999999999999999 × 0.333… = 333333333333332.99…97
        let third: Decimal = "0.3333333333333333333333333333".parse().unwrap();
        assert_eq!(a.times_exact(third, usd, Rounding::Floor).unwrap().minor_units(), 333_333_333_333_332);
        assert_eq!(a.times_exact(third, usd, Rounding::HalfEven).unwrap().minor_units(), 333_333_333_333_333);
        // FX across exponents: 12.34 USD at 150.5 JPY per USD = 1857.17 JPY → 1857.
        let b = Amount::from_minor(1234, usd).unwrap();
        let rate: Decimal = "150.5".parse().unwrap();
        assert_eq!(b.times_exact(rate, jpy, Rounding::HalfEven).unwrap().minor_units(), 1857);
        assert_eq!(b.times_exact(rate, bhd, Rounding::HalfEven).unwrap().minor_units(), 1_857_170);
        // A rate of 1e-25 gives nothing; a huge rate overflows.
        let tiny: Decimal = "0.0000000000000000000000001".parse().unwrap();
        assert_eq!(b.times_exact(tiny, usd, Rounding::HalfEven).unwrap().minor_units(), 0);
        let huge: Decimal = "79228162514264337593543950335".parse().unwrap();
        assert_eq!(b.times_exact(huge, usd, Rounding::HalfEven), Err(MoneyError::Overflow));
    }

    proptest! {
        /// Where a decimal product is exact, the exact rounding agrees with rust_decimal's.
        #[test]
        fn exact_rounding_agrees_with_decimal_where_decimal_is_exact(
            num in -1_000_000_000_000_i64..1_000_000_000_000, scale in 0u32..6, m in 0usize..4
        ) {
            let modes = [Rounding::Floor, Rounding::TowardZero, Rounding::HalfEven, Rounding::HalfAwayFromZero];
            let d = Decimal::new(num, scale);
            let want = d.round_dp_with_strategy(0, modes[m].strategy());
            let den = 10_i128.pow(scale);
            prop_assert_eq!(Decimal::from(modes[m].round_ratio(&i128::from(num), &den)), want);
        }

        #[test]
        fn parse_format_round_trip(minor in -MAX_MINOR_UNITS..=MAX_MINOR_UNITS, c in 0usize..4) {
            let code = ["USD", "JPY", "BHD", "EUR"][c];
            let a = Amount::from_minor(minor, cur(code)).unwrap();
            let s = a.to_decimal_string();
            let b = Amount::parse(&s, cur(code), Sign::Any).unwrap();
            prop_assert_eq!(a, b);
            let j = serde_json::to_string(&a).unwrap();
            prop_assert_eq!(serde_json::from_str::<Amount>(&j).unwrap(), a);
        }
    }
}
