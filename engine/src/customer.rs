//! Customer keys: how the `customer` of a `lead_registered` fact becomes the key by which
//! the first registration of a customer owns it (docs/commission-rules.md, "Attribution
//! window and duplicates").
//!
//! The normalisation is named and versioned ([`CustomerKey`]), as a rule version's
//! arithmetic is: a fact records the one it was decided with, a fact recorded without one
//! is [`CustomerKey::V1`], and a new normalisation gets a new name while the old ones stay
//! for replay.
//!
//! - **`trim_lower.v1`**: trimmed, ASCII letters lowercased. Nothing else, so
//!   `BÜCHER-BI.example`, the NFD spelling of `bücher-bi.example`, its punycode and its
//!   fullwidth letters were each a customer of their own.
//! - **`uts46_nfkc_cf.v2`** ([`fold`]): trimmed; then
//!   - a **domain** (a name UTS #46 accepts, with at least two labels) is its UTS #46
//!     ToASCII form, the punycode (A-label) form: `BÜCHER-BI.example`, its NFD
//!     spelling, its fullwidth letters and `xn--bcher-bi-65a.example` are all
//!     `xn--bcher-bi-65a.example`. ASCII, because that is the one form DNS, certificates
//!     and URL parsers (the WHATWG URL Standard, which the `idna` crate implements) give
//!     a host, so a vendor's own records of a domain compare equal to the key; and
//!     because on ASCII (punycode aside) v2 is then what v1 was, trimmed and lowercased
//!     (what v1 recorded for every ASCII domain). Processing is nontransitional, as
//!     UTS #46 now specifies and browsers do: `straße.example` and `strasse.example` are
//!     two domains (DNS resolves them apart since IDNA2008), so two customers. The
//!     options: STD3 ASCII rules (letters, digits, hyphens), hyphens anywhere, DNS
//!     lengths checked (no empty label, no trailing root dot).
//!   - **any other name** is its NFKC case fold: NFKC, full case folding (Unicode
//!     `CaseFolding.txt`, C and F mappings: `ß` → `ss`), Default_Ignorable_Code_Points
//!     (joiners, soft hyphens, variation selectors) removed, NFKC again, trimmed,
//!     repeated until stable: the construction Unicode gives for NFKC_Casefold, the
//!     property UAX #31 recommends for case-insensitive identifiers. `Straße` and
//!     `STRASSE` are `strasse`. A name whose fold is a domain (`⒈` is `1.`) is that
//!     domain's key.
//!
//!   A customer holding a code point that is unassigned in the Unicode version settle is
//!   built with is refused: a later version may give it a mapping, while Unicode's
//!   stability policies keep the normalisation and case folding of assigned characters
//!   as they are. The crates are pinned by `Cargo.lock`, and `engine/tests/customers.rs`
//!   pins the keys of known spellings: an upgrade that keys a recorded customer
//!   differently (a UTS #46 table change, say) is a new normalisation, `.v3`, as a new
//!   arithmetic is, never a silent change under recorded facts.
//!
//! The crates: `idna` (servo's rust-url project, the UTS #46 of the `url` crate) for
//! domains; for names ICU4X (`icu_normalizer`, `icu_casemap`, `icu_properties`), the
//! Unicode Consortium's own Rust implementation, pure Rust with its data compiled in and
//! released with each Unicode version. `idna` itself runs on `icu_normalizer` and
//! `icu_properties`, so domains and names are normalised with one set of Unicode data
//! (Unicode 18.0 with ICU4X 2.4, pinned by `Cargo.lock`), and `icu_casemap` folds a
//! string in full (`ß` → `ss`), where `unicase` only compares and `caseless` is seldom
//! released.
//!
//! An owner registered under v1 is compared, by a v2 registration, through the v2 key of
//! its recorded v1 key: v1 only trimmed and lowercased ASCII letters, which v2 does too,
//! so that is the v2 key of what its partner sent ([`fold`] of a v1 key is [`fold`] of
//! the customer it came from). A v1 registration compares recorded keys exactly, as it
//! always did.
//!
//! [`CustomerKey`], the names of the normalisations, is defined here beside them; the
//! log's vocabulary (`model`) re-exports it, where it always was.

use std::borrow::Cow;

use icu_casemap::CaseMapper;
use icu_normalizer::ComposingNormalizer;
use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory};
use icu_properties::{CodePointMapData, CodePointSetData};
use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
use serde::{Deserialize, Serialize};

use crate::limits::MAX_ID_BYTES;

/// The named normalisation that makes a lead's `customer` into the key its owner is
/// found by ([`crate::customer`]). Recorded on every `lead_registered` fact the doors
/// write; absent in a recorded fact, it is [`CustomerKey::V1`] (facts recorded before v2
/// existed), so older logs replay to the same bytes.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CustomerKey {
    /// Trimmed, ASCII letters lowercased, nothing else: `BÜCHER-BI.example`, the NFD
    /// spelling of `bücher-bi.example`, its punycode or fullwidth letters are each another
    /// customer. Kept only so that older logs, recorded without `customer_key`, replay to
    /// the same bytes.
    #[serde(rename = "trim_lower.v1")]
    V1,
    /// A domain through UTS #46 to its ASCII (punycode) form, any other name by NFKC and
    /// full case folding ([`crate::customer`]); code points unassigned in the Unicode
    /// version of the build are refused. What settle records for every new registration.
    #[serde(rename = "uts46_nfkc_cf.v2")]
    V2,
}

impl CustomerKey {
    /// What settle records now.
    pub const CURRENT: Self = Self::V2;

    /// The normalisation's name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "trim_lower.v1",
            Self::V2 => "uts46_nfkc_cf.v2",
        }
    }
}

/// The Unicode version of the data the v2 normalisation is built with (ICU4X 2.4).
pub const UNICODE_VERSION: &str = "18.0";

/// Most rounds of the name fold before it is stable (two suffice for every code point;
/// a test checks all of them).
const MAX_ROUNDS: usize = 4;

/// The key of `customer` under normalisation `version`, or why there is none (refused:
/// empty or longer than [`MAX_ID_BYTES`] once normalised; under v2, also a code point
/// unassigned in [`UNICODE_VERSION`]).
///
/// # Errors
/// The reason, in words.
pub fn key(version: CustomerKey, customer: &str) -> Result<String, String> {
    match version {
        CustomerKey::V1 => {
            let k = customer.trim().to_ascii_lowercase();
            if k.is_empty() || k.len() > MAX_ID_BYTES {
                return Err("customer key must be 1..=128 characters".into());
            }
            Ok(k)
        }
        CustomerKey::V2 => {
            let general_category = CodePointMapData::<GeneralCategory>::new();
            if let Some(c) = customer.trim().chars().find(|&c| general_category.get(c) == GeneralCategory::Unassigned) {
                return Err(format!(
                    "customer holds U+{:04X}, a code point unassigned in Unicode {UNICODE_VERSION}",
                    u32::from(c)
                ));
            }
            let k = fold(customer).into_owned();
            if k.is_empty() || k.len() > MAX_ID_BYTES {
                return Err(format!(
                    "customer key must be 1..=128 bytes once normalised ({}), not {}",
                    CustomerKey::V2.name(),
                    k.len()
                ));
            }
            Ok(k)
        }
    }
}

/// The v2 (`uts46_nfkc_cf.v2`) form of `customer`, whatever it holds (no refusal: the
/// look-up of owners folds every recorded key with it, v1 keys included). Idempotent:
/// `fold(fold(x)) == fold(x)`. On ASCII that holds no `xn--` it is trimming and
/// lowercasing, nothing else.
#[must_use]
pub fn fold(customer: &str) -> Cow<'_, str> {
    let t = customer.trim();
    if t.is_ascii() && !t.as_bytes().windows(4).any(|w| w.eq_ignore_ascii_case(b"xn--")) {
        // What the rest would give, fast: UTS #46 maps ASCII letters to lowercase and
        // leaves the rest of ASCII as it is or refuses it; NFKC and case folding of ASCII
        // are lowercasing.
        return if t.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(t.to_ascii_lowercase())
        } else {
            Cow::Borrowed(t)
        };
    }
    if let Some(d) = domain(t) {
        return Cow::Owned(d);
    }
    let n = name(t);
    Cow::Owned(domain(&n).unwrap_or(n))
}

/// The UTS #46 ToASCII form of `t` if it is a domain: UTS #46 accepts it (STD3 rules,
/// hyphens anywhere, DNS lengths) and it has two labels or more.
fn domain(t: &str) -> Option<String> {
    let d = Uts46::new().to_ascii(t.as_bytes(), AsciiDenyList::STD3, Hyphens::Allow, DnsLength::Verify).ok()?;
    d.contains('.').then(|| d.into_owned())
}

/// The NFKC case fold of a name: one [`fold_round`] after another until one changes
/// nothing.
fn name(t: &str) -> String {
    let mut s = fold_round(t);
    for _ in 0..MAX_ROUNDS {
        let next = fold_round(&s);
        if next == s {
            break;
        }
        s = next;
    }
    s
}

/// NFKC, full case folding, Default_Ignorable_Code_Points removed, NFKC, trimmed.
fn fold_round(s: &str) -> String {
    let nfkc = ComposingNormalizer::new_nfkc();
    let ignorable = CodePointSetData::new::<DefaultIgnorableCodePoint>();
    let folded = CaseMapper::new().fold_string(&nfkc.normalize(s)).into_owned();
    let kept: String = folded.chars().filter(|&c| !ignorable.contains(c)).collect();
    nfkc.normalize(&kept).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every scalar value: the name fold is stable within [`MAX_ROUNDS`], and the key is
    /// idempotent (so no code point needs more rounds than the fold allows).
    #[test]
    fn every_code_point_folds_to_a_fixed_point() {
        let general_category = CodePointMapData::<GeneralCategory>::new();
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            if general_category.get(c) == GeneralCategory::Unassigned {
                continue;
            }
            for s in [format!("{c}"), format!("a{c}"), format!("{c}\u{301}"), format!("x.{c}.example")] {
                let k = fold(&s);
                assert_eq!(fold(&k), k, "U+{:04X} in {s:?}", u32::from(c));
                let mut n = fold_round(&s);
                let mut rounds = 1;
                // Bounded: past MAX_ROUNDS the assertion below fails anyway.
                while rounds <= MAX_ROUNDS && fold_round(&n) != n {
                    n = fold_round(&n);
                    rounds += 1;
                }
                assert!(rounds <= 2, "U+{:04X} in {s:?} takes {rounds} rounds", u32::from(c));
            }
        }
    }

    /// [`fold`] without its shortcut for ASCII.
    fn slow(s: &str) -> String {
        let t = s.trim();
        domain(t).unwrap_or_else(|| {
            let n = name(t);
            domain(&n).unwrap_or(n)
        })
    }

    #[test]
    fn the_fast_path_is_the_slow_path() {
        for s in ["Acme.Example", "acme corp", " ACME ", "a..b", "a_b.example", "-a-.example", "xn--bcher-kva.example"]
        {
            assert_eq!(fold(s), slow(s), "{s}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fast_path_is_the_slow_path_on_any_ascii(s in "[\t -~]{0,40}") {
            proptest::prop_assert_eq!(fold(&s), slow(&s));
        }
    }
}
