//! Checkpoints under key rotation, the export bundle's log and the self-contained log
//! file, and every edit of them found.

use super::*;

fn key_rotation_keeps_old_checkpoints_verifiable(store: &Store) {
    let l = store.open(config(1)).unwrap();
    l.append_blocking(append("a", &["x"])).unwrap();
    l.checkpoint_blocking(100).unwrap();
    l.rotate_key(SigningKey::from_seed(&[2; 32])).unwrap();
    l.append_blocking(append("b", &["y"])).unwrap();
    l.checkpoint_blocking(200).unwrap();
    let both = KeyRing::new(&Jwks {
        keys: vec![
            SigningKey::from_seed(&[1; 32]).to_jwk(None, Some(150)),
            SigningKey::from_seed(&[2; 32]).to_jwk(Some(150), None),
        ],
    })
    .unwrap();
    assert_eq!(verify_log(&l, &both).unwrap().checkpoints, 2);
    assert!(verify_log(&l, &ring(&[2])).is_err(), "without the old key the first checkpoint fails");
}

fn export_verifies_and_tampering_is_detected(store: &Store) {
    let l = store.open(config(1)).unwrap();
    for i in 0..20 {
        l.append_blocking(append(&format!("k{i}"), &[&format!("e{i}")])).unwrap();
        if i % 7 == 6 {
            l.checkpoint_blocking(i).unwrap();
        }
    }
    let notes: Vec<String> = vec![l.checkpoint_blocking(99).unwrap().note];
    let mut buf = Vec::new();
    assert_eq!(export_bundle_log(&l, &mut buf).unwrap(), 20);
    let text = String::from_utf8(buf).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let check = |ls: &[String]| {
        verify_export(ls.join("\n").as_bytes(), notes.clone(), &ring(&[1]), "settle.test/log", |_| Ok(()))
    };
    let orig: Vec<String> = lines.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(check(&orig).unwrap().records, 20);
    let mut edited = orig.clone();
    edited[10] = edited[10].replace("e10", "e11");
    assert!(check(&edited).unwrap_err().what.contains("event hash"));
    // The stored type and version are inside the chain.
    for (from, to) in [(r#""type":"test_event""#, r#""type":"test_other""#), (r#""v":1"#, r#""v":2"#)] {
        let mut retyped = orig.clone();
        retyped[10] = retyped[10].replacen(from, to, 1);
        assert_ne!(retyped[10], orig[10]);
        let f = check(&retyped).unwrap_err();
        assert!(f.seq == 10 && f.what.contains("chain"), "{f:?}");
    }
    let mut deleted = orig.clone();
    deleted.remove(10);
    assert_eq!(check(&deleted).unwrap_err().seq, 10);
    let mut swapped = orig.clone();
    swapped.swap(4, 5);
    assert!(check(&swapped).unwrap_err().what.contains("gap or reordering"));
    let mut truncated = orig.clone();
    truncated.pop();
    assert!(check(&truncated).unwrap_err().what.contains("records missing"));
    // Re-hashing an edited record breaks the chain instead.
    let mut rehashed = orig;
    let mut v: serde_json::Value = serde_json::from_str(&rehashed[3]).unwrap();
    v["event"]["e"] = "zz".into();
    let bytes = settle_mandates::jcs::to_vec(&v["event"]).unwrap();
    v["event_hash"] = hex::encode(Sha256::digest(&bytes)).into();
    rehashed[3] = v.to_string();
    assert!(check(&rehashed).unwrap_err().what.contains("chain"));
}

/// The self-contained log file: header (format, origin, keys), records, and each
/// checkpoint right after the last record it covers. It verifies on its own, or against
/// pinned keys; every edit is found, with the seq.
fn the_self_contained_log_file_verifies_alone_and_every_edit_is_found(store: &Store) {
    let l = store.open(config(1)).unwrap();
    l.checkpoint_blocking(0).unwrap();
    for i in 0..20 {
        l.append_blocking(append(&format!("k{i}"), &[&format!("e{i}")])).unwrap();
        if i % 7 == 6 {
            l.checkpoint_blocking(i).unwrap();
        }
    }
    l.checkpoint_blocking(99).unwrap();
    let jwks = Jwks { keys: vec![SigningKey::from_seed(&[1; 32]).to_jwk(None, None)] };
    let mut buf = Vec::new();
    assert_eq!(export_file(&l, &jwks, &mut buf).unwrap(), 20);
    let text = String::from_utf8(buf).unwrap();
    let orig: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(orig[0].starts_with(r#"{"format":"settle.log.1","origin":"settle.test/log","keys":{"#), "{}", orig[0]);
    assert!(orig[1].starts_with(r#"{"checkpoint":"settle.test/log"#), "the empty log's checkpoint first: {}", orig[1]);
    assert_eq!(orig.len(), 1 + 20 + 4, "header, records, checkpoints of sizes 0, 7, 14 and 20");
    let check = |ls: &[String], pinned: Option<&KeyRing>| verify_file(ls.join("\n").as_bytes(), pinned, |_| Ok(()));
    let (report, origin) = check(&orig, None).unwrap();
    assert_eq!((report.records, report.checkpoints, origin.as_str()), (20, 4, "settle.test/log"));
    assert_eq!(check(&orig, Some(&ring(&[1]))).unwrap().0.root, verify_log(&l, &ring(&[1])).unwrap().root);
    // Record 10 is line 10 + 1 (header) + 2 (the checkpoints of sizes 0 and 7).
    let line_of = |seq: usize| seq + 1 + 1 + usize::from(seq >= 7) + usize::from(seq >= 14);
    assert!(orig[line_of(10)].starts_with(r#"{"seq":10,"#));
    let fails = |ls: Vec<String>, pinned: Option<&KeyRing>| check(&ls, pinned).unwrap_err();
    let edit = |seq: usize, from: &str, to: &str| {
        let mut ls = orig.clone();
        ls[line_of(seq)] = ls[line_of(seq)].replacen(from, to, 1);
        assert_ne!(ls, orig);
        ls
    };
    let f = fails(edit(10, "e10", "e11"), None);
    assert!(f.seq == 10 && f.what.contains("event hash"), "{f:?}");
    let f = fails(edit(10, r#""type":"test_event""#, r#""type":"test_other""#), None);
    assert!(f.seq == 10 && f.what.contains("chain"), "{f:?}");
    let mut deleted = orig.clone();
    deleted.remove(line_of(10));
    assert_eq!(fails(deleted, None).seq, 10);
    let mut swapped = orig.clone();
    swapped.swap(line_of(4), line_of(5));
    assert!(fails(swapped, None).what.contains("gap or reordering"));
    // The tail cut, its checkpoints with it: what is left is not covered by a checkpoint
    // unless the cut falls on one, and never matches the checkpoints that were cut.
    let mut truncated = orig.clone();
    truncated.truncate(line_of(17));
    assert!(fails(truncated, None).what.contains("not covered"));
    // A checkpoint moved: it stands after a record it does not end on.
    let mut moved = orig.clone();
    let cp = moved.remove(line_of(7) - 1);
    moved.insert(line_of(9), cp);
    assert!(fails(moved, None).what.contains("stands after record"));
    // Everything re-signed with another key, the header's keys swapped for it: the file
    // verifies on its own, but not against the vendor's pinned keys.
    let forger = SigningKey::from_seed(&[9; 32]);
    let mut forged: Vec<String> = orig
        .iter()
        .map(|line| match serde_json::from_str::<serde_json::Value>(line).unwrap().get("checkpoint") {
            Some(note) => {
                let (cp, _) = Checkpoint::parse(note.as_str().unwrap()).unwrap();
                serde_json::json!({"checkpoint": cp.sign(&forger)}).to_string()
            }
            None => line.clone(),
        })
        .collect();
    let header = serde_json::json!({"format": "settle.log.1", "origin": "settle.test/log", "keys": Jwks { keys: vec![forger.to_jwk(None, None)] }});
    forged[0] = header.to_string();
    assert_eq!(check(&forged, None).unwrap().0.records, 20);
    assert!(fails(forged, Some(&ring(&[1]))).what.contains("checkpoint"));
    // Not a log file at all; a header alone, with nothing signed.
    assert!(fails(vec![r#"{"format":"settle.bundle.1"}"#.into()], None).what.contains("header"));
    assert!(fails(vec![orig[0].clone()], None).what.contains("no signed checkpoint"));
}

on_both!(
    key_rotation_keeps_old_checkpoints_verifiable,
    export_verifies_and_tampering_is_detected,
    the_self_contained_log_file_verifies_alone_and_every_edit_is_found,
);
