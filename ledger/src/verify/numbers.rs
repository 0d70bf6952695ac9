//! The one rule every verifier applies to the numbers of the log: integers written as
//! one, of a magnitude every JSON implementation reads exactly.

/// Largest magnitude of a number in a log line or event: 2^53 − 1, which every JSON
/// implementation reads exactly.
pub const MAX_LOG_INTEGER: u64 = (1 << 53) - 1;

/// The one rule every verifier applies to the numbers of the log (a live log's events, a
/// bundle's `log.jsonl` and a log file's lines, as written): each is an integer written
/// as one — an optional minus sign and decimal digits, no leading zero, no fraction, no
/// exponent, not `-0` — of magnitude at most [`MAX_LOG_INTEGER`]. `5397.0` and `5.397e3`
/// are refused although RFC 8785 would canonicalise them to `5397`: money is never a
/// float, and a verifier that re-canonicalises must not accept what one that hashes the
/// text refuses. JSON that is malformed otherwise is left to the parser.
pub fn integers_only(json: &[u8]) -> Result<(), String> {
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                // Strings are most of an event's bytes (its tokens): skip to the quote
                // that ends them, past escapes.
                i += 1;
                // Bounded: each turn returns, breaks, or moves `i` on by at least two.
                loop {
                    let Some(k) = json.get(i..).and_then(quote_or_backslash) else {
                        return Ok(()); // unterminated: the parser says so
                    };
                    i += k;
                    if json[i] == b'"' {
                        i += 1;
                        break;
                    }
                    i += 2;
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < json.len() && matches!(json[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                let token = &json[start..i];
                let (negative, digits) = token.strip_prefix(b"-").map_or((false, token), |d| (true, d));
                let integer = !digits.is_empty()
                    && digits.iter().all(u8::is_ascii_digit)
                    && (digits.len() == 1 || digits[0] != b'0')
                    && !(negative && digits == b"0")
                    && std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| d.parse::<u64>().ok())
                        .is_some_and(|n| n <= MAX_LOG_INTEGER);
                if !integer {
                    let shown = String::from_utf8_lossy(&token[..token.len().min(40)]).into_owned();
                    return Err(format!(
                        "the number {shown} is not an integer written as one (no fraction, no exponent, no -0, \
                         magnitude below 2^53): numbers in the log are integers"
                    ));
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// The position of the first `"` or `\` in `s`, eight bytes at a time (a string's bytes
/// are most of an event's, and the log's pass reads every event).
pub(super) fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = s.get(i..i + 8) {
        let v = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        let (q, b) = (v ^ (LO * u64::from(b'"')), v ^ (LO * u64::from(b'\\')));
        // A byte of q or b is zero where v holds a quote or a backslash; the lowest such
        // byte is found exactly (a borrow only marks bytes above a zero byte).
        let zero = ((q.wrapping_sub(LO) & !q) | (b.wrapping_sub(LO) & !b)) & HI;
        if zero != 0 {
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s[i..].iter().position(|&c| c == b'"' || c == b'\\').map(|k| i + k)
}
