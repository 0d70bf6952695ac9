use std::collections::{HashMap, HashSet};

use settle_mandates::checkpoint::Checkpoint;
use settle_mandates::keys::{Jwks, SigningKey};
use settle_mandates::merkle;

use super::numbers::quote_or_backslash;
use super::pass::{Captured, proof_nodes};
use super::*;
use crate::testing::{append, config, ring};
use crate::tree::Frontier;

/// A ledger of `n` records `e0…`, checkpointed after every `every` records and at the
/// end, exported as a log file; its lines.
fn log_file(dir: &std::path::Path, n: u64, every: u64) -> (Vec<String>, Vec<Checkpoint>) {
    let l = Ledger::open(dir, config(1)).unwrap();
    for i in 0..n {
        l.append_blocking(append(&format!("k{i}"), &[&format!("e{i}")])).unwrap();
        if (i + 1) % every == 0 {
            l.checkpoint_blocking(i64::try_from(i).unwrap()).unwrap();
        }
    }
    l.checkpoint_blocking(1000).unwrap();
    let cps = l.checkpoints().map(|c| c.unwrap().checkpoint).collect();
    let jwks = Jwks { keys: vec![SigningKey::from_seed(&[1; 32]).to_jwk(None, None)] };
    let mut buf = Vec::new();
    export_file(&l, &jwks, &mut buf).unwrap();
    l.close().unwrap();
    (String::from_utf8(buf).unwrap().lines().map(str::to_owned).collect(), cps)
}

fn note(cp: &Checkpoint) -> String {
    cp.sign(&SigningKey::from_seed(&[1; 32]))
}

fn known(source: &str, note: String) -> Known {
    Known { source: source.into(), note }
}

#[test]
fn numbers_in_the_log_are_integers_written_as_one() {
    for ok in [
        &br#"{"a":5397,"b":-12,"c":0,"d":[1,2,{"e":9007199254740991}],"s":"5.5e3 -0 1.0"}"#[..],
        br#"{"esc":"a\"1.5\\","n":1}"#,
        br#"{"long":"0123456789abcdef\"0123456789.5\\\\ \\\" 1.5","n":[12345678901,-3]}"#,
        b"[true,false,null,-1]",
    ] {
        assert_eq!(integers_only(ok), Ok(()), "{}", String::from_utf8_lossy(ok));
    }
    for bad in [
        &br#"{"amount":5397.0}"#[..],
        br#"{"amount":5.397e3}"#,
        br#"{"amount":5397E0}"#,
        br#"{"amount":1e3}"#,
        br#"{"amount":-0}"#,
        br#"{"amount":007}"#,
        br#"{"amount":9007199254740992}"#,
        br#"{"amount":99999999999999999999999}"#,
        br#"{"s":"\\","amount":1.5}"#,
        br#"{"s":"0123456789abcdef0123456789\\","amount":1.5}"#,
        br#"{"s":"0123456\"\\","amount":2e1}"#,
    ] {
        let e = integers_only(bad).unwrap_err();
        assert!(e.contains("not an integer"), "{}: {e}", String::from_utf8_lossy(bad));
    }
}

/// The eight-byte search finds the first quote or backslash wherever it stands.
#[test]
fn the_first_quote_or_backslash_is_found_at_every_position() {
    for len in 0..40 {
        for at in 0..=len {
            for c in [b'"', b'\\'] {
                let mut s = vec![b'a'; len];
                if at > 0 {
                    s[at - 1] = b'"' ^ 0x80;
                }
                if at < len {
                    s[at] = c;
                    if at + 3 < len {
                        s[at + 3] = b'"';
                    }
                }
                let want = s.iter().position(|&x| x == b'"' || x == b'\\');
                assert_eq!(quote_or_backslash(&s), want, "{len} {at} {c}");
            }
        }
    }
}

/// The nodes a pass keeps answer every consistency proof exactly as the whole tree.
#[test]
fn captured_nodes_give_every_consistency_proof() {
    let leaves: Vec<Hash> = (0..80u64).map(|i| merkle::leaf_hash(&i.to_be_bytes())).collect();
    for n in 1..=80u64 {
        for m in 0..=n {
            let wanted: HashSet<(u32, u64)> = proof_nodes(m).collect();
            let mut nodes = HashMap::new();
            let mut f = Frontier::default();
            for l in &leaves[..usize::try_from(n).unwrap()] {
                f.push(*l, |level, index, h| {
                    if wanted.contains(&(level, index)) {
                        nodes.insert((level, index), h);
                    }
                });
            }
            let mut start = 0u64;
            for &(level, h) in &f.nodes {
                nodes.insert((level, start >> level), h);
                start += 1 << level;
            }
            let got = merkle::consistency_proof(&Captured(&nodes), m, n).unwrap().unwrap();
            let want = merkle::consistency_proof(&leaves[..usize::try_from(n).unwrap()], m, n).unwrap().unwrap();
            assert_eq!(got, want, "m {m} n {n}");
        }
    }
}

/// A log file cut back at an older signed checkpoint verifies on its own; against a
/// checkpoint the auditor held before it is refused, and so is a log rewritten under
/// the same key. Checkpoints the log extends pass.
#[test]
fn a_log_cut_back_or_rewritten_is_refused_against_a_checkpoint_held_before() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, cps) = log_file(&dir.path().join("a"), 23, 5);
    assert_eq!(cps.iter().map(|c| c.size).collect::<Vec<_>>(), [5, 10, 15, 20, 23]);
    let check = |ls: &[String], held: &[Known]| verify_file_known(ls.join("\n").as_bytes(), None, held, |_| Ok(()));
    // Every checkpoint the log signed, and the empty log, are prefixes of it.
    for cp in &cps {
        check(&lines, &[known("held", note(cp))]).unwrap();
    }
    let empty = Checkpoint { origin: "settle.test/log".into(), size: 0, root: merkle::empty_root(), time: 1 };
    check(&lines, &[known("empty", note(&empty))]).unwrap();
    // Cut back at the checkpoint of 15: on its own it verifies.
    let cut_at = lines.iter().position(|l| l.starts_with(r#"{"checkpoint":"settle.test/log\n15\n"#)).unwrap();
    let cut = lines[..=cut_at].to_vec();
    assert_eq!(check(&cut, &[]).unwrap().0.records, 15);
    check(&cut, &[known("old", note(&cps[1]))]).unwrap();
    let f = check(&cut, &[known("old", note(&cps[1])), known("receipt.json:1", note(&cps[3]))]).unwrap_err();
    assert!(f.what.contains("cut back") && f.what.contains("receipt.json:1") && f.what.contains("20 records"), "{f:?}");
    // Rewritten from record 12 on, re-signed with the vendor's key: the file verifies
    // alone, but not against a checkpoint of 15 or 20 held before; one of 10 still passes.
    let l = Ledger::open(&dir.path().join("b"), config(1)).unwrap();
    for i in 0..23u64 {
        let e = if i < 12 { format!("e{i}") } else { format!("x{i}") };
        l.append_blocking(append(&format!("k{i}"), &[&e])).unwrap();
    }
    l.checkpoint_blocking(1000).unwrap();
    let jwks = Jwks { keys: vec![SigningKey::from_seed(&[1; 32]).to_jwk(None, None)] };
    let mut buf = Vec::new();
    export_file(&l, &jwks, &mut buf).unwrap();
    let rewritten: Vec<String> = String::from_utf8(buf).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(check(&rewritten, &[]).unwrap().0.records, 23);
    check(&rewritten, &[known("old", note(&cps[1]))]).unwrap();
    for held in [&cps[2], &cps[3], &cps[4]] {
        let f = check(&rewritten, &[known("old", note(held))]).unwrap_err();
        assert!(f.what.contains("rewritten") && f.seq == held.size, "{f:?}");
    }
    // A held checkpoint that does not verify under the log's keys, or is of another log.
    let forged = cps[1].sign(&SigningKey::from_seed(&[7; 32]));
    assert!(check(&lines, &[known("forged", forged)]).unwrap_err().what.contains("you hold from forged"));
    let elsewhere = Checkpoint { origin: "other/log".into(), ..cps[1].clone() };
    assert!(check(&lines, &[known("o", note(&elsewhere))]).unwrap_err().what.contains("origin"));
    // The bundle's log is checked the same way.
    let records: Vec<String> = lines[1..].iter().filter(|l| l.starts_with(r#"{"seq":"#)).cloned().collect();
    let notes: Vec<String> = cps.iter().map(note).collect();
    let export = |held: &[Known]| {
        verify_export_known(records.join("\n").as_bytes(), notes.clone(), &ring(&[1]), "settle.test/log", held, |_| {
            Ok(())
        })
    };
    export(&[known("old", note(&cps[4]))]).unwrap();
    let bigger = Checkpoint { size: 24, ..cps[4].clone() };
    assert!(export(&[known("old", note(&bigger))]).unwrap_err().what.contains("cut back"));
}

/// A record line whose event writes a number as a float is refused by the file and the
/// bundle verifiers, even when its event hash and chain are those of the integer
/// (RFC 8785 would turn `7.0` into `7`).
#[test]
fn a_float_in_a_log_line_is_refused_even_when_its_hashes_match() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    for i in 0..3 {
        let mut a = append(&format!("k{i}"), &["x"]);
        a.records[0].event = format!(r#"{{"amount":{}}}"#, 5397 + i).into_bytes();
        l.append_blocking(a).unwrap();
    }
    l.checkpoint_blocking(5).unwrap();
    let jwks = Jwks { keys: vec![SigningKey::from_seed(&[1; 32]).to_jwk(None, None)] };
    let mut buf = Vec::new();
    export_file(&l, &jwks, &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    verify_file(text.as_bytes(), None, |_| Ok(())).unwrap();
    let notes: Vec<String> = l.checkpoints().map(|c| c.unwrap().note).collect();
    let records = |t: &str| t.lines().filter(|l| l.starts_with(r#"{"seq":"#)).collect::<Vec<_>>().join("\n");
    verify_export(records(&text).as_bytes(), notes.clone(), &ring(&[1]), "settle.test/log", |_| Ok(())).unwrap();
    for float in ["5398.0", "5.398e3", "53980e-1"] {
        let edited = text.replace(r#""amount":5398"#, &format!(r#""amount":{float}"#));
        assert_ne!(edited, text);
        let f = verify_file(edited.as_bytes(), None, |_| Ok(())).unwrap_err();
        assert!(f.seq == 1 && f.what.contains("not an integer"), "{float}: {f:?}");
        let f = verify_export(records(&edited).as_bytes(), notes.clone(), &ring(&[1]), "settle.test/log", |_| Ok(()))
            .unwrap_err();
        assert!(f.seq == 1 && f.what.contains("not an integer"), "{float}: {f:?}");
    }
    // The live log is held to the same rule (its events are bytes as stored).
    verify_log(&l, &ring(&[1])).unwrap();
}

/// A checkpoint of the empty log is in the file only if the vendor signed one (a
/// store served and stopped before its first record); it then stands right after the
/// header and is checked like any other. A log whose first checkpoint covers records
/// has record 0 right after the header.
#[test]
fn a_checkpoint_of_the_empty_log_follows_the_header_only_when_one_was_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = log_file(&dir.path().join("a"), 4, 2);
    assert!(lines[1].starts_with(r#"{"seq":0,"#), "{}", lines[1]);
    let l = Ledger::open(&dir.path().join("b"), config(1)).unwrap();
    let empty = l.checkpoint_blocking(0).unwrap();
    assert_eq!((empty.checkpoint.size, empty.checkpoint.root), (0, merkle::empty_root()));
    l.append_blocking(append("k", &["e"])).unwrap();
    l.checkpoint_blocking(1).unwrap();
    let jwks = Jwks { keys: vec![SigningKey::from_seed(&[1; 32]).to_jwk(None, None)] };
    let mut buf = Vec::new();
    export_file(&l, &jwks, &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with(r#"{"checkpoint":"settle.test/log\n0\n"#), "{}", lines[1]);
    assert_eq!(verify_file(text.as_bytes(), None, |_| Ok(())).unwrap().0.checkpoints, 2);
    // One that claims a root for the empty log other than SHA-256 of nothing is refused.
    let bad = Checkpoint { root: [1; 32], ..empty.checkpoint.clone() };
    let forged = text
        .replace(lines[1], &serde_json::json!({"checkpoint": bad.sign(&SigningKey::from_seed(&[1; 32]))}).to_string());
    let f = verify_file(forged.as_bytes(), None, |_| Ok(())).unwrap_err();
    assert!(f.seq == 0 && f.what.contains("recomputed root"), "{f:?}");
}
