//! The aux keyspace: outside the log, and a write not synced survives the process being
//! killed.

use super::*;

fn aux_entries_survive_reopen_and_stay_out_of_the_log(store: &Store) {
    {
        let l = store.open(config(1)).unwrap();
        l.append_blocking(append("k", &["a"])).unwrap();
        l.aux_put(b"wh/sub/1", b"one", true).unwrap();
        l.aux_put(b"wh/sub/2", b"two", false).unwrap();
        l.aux_put(b"wh/cur/1", b"7", true).unwrap();
        l.aux_remove(b"wh/sub/2", true).unwrap();
        l.close().unwrap();
    }
    let l = store.open(config(1)).unwrap();
    assert_eq!(l.size(), 1, "aux writes are not records");
    assert_eq!(l.aux_get(b"wh/sub/1").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(l.aux_get(b"wh/sub/2").unwrap(), None);
    let subs = l.aux_scan(b"wh/sub/", 10).unwrap();
    assert_eq!(subs, vec![(b"wh/sub/1".to_vec(), b"one".to_vec())]);
    assert_eq!(l.aux_scan(b"wh/", 1).unwrap().len(), 1, "the limit holds");
}

/// An aux write that is not synced is still handed to the operating system before it
/// returns (webhook cursors rely on it): a process killed right after it loses nothing.
/// The test runs itself again as the process that writes and is killed (`abort`: no
/// destructor, no buffer flushed).
#[test]
fn an_aux_write_not_synced_survives_the_process_being_killed() {
    const CHILD: &str = "SETTLE_LEDGER_KILLED_WRITER";
    if let Some(dir) = std::env::var_os(CHILD) {
        let l = Ledger::open(Path::new(&dir), config(1)).unwrap();
        l.aux_put(b"wh/cur/1", &42u64.to_be_bytes(), false).unwrap();
        l.aux_apply(&[(b"wh/cur/2", b"x")], &[b"wh/sub/gone"], false).unwrap();
        std::fs::write(Path::new(&dir).join("written"), b"").unwrap();
        std::process::abort();
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let l = Ledger::open(dir.path(), config(1)).unwrap();
        l.append_blocking(append("k", &["a"])).unwrap();
        l.aux_put(b"wh/sub/gone", b"1", true).unwrap();
        l.close().unwrap();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "tests::aux::an_aux_write_not_synced_survives_the_process_being_killed", "--nocapture"])
        .env(CHILD, dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the writer was to be killed: {out:?}");
    assert!(dir.path().join("written").exists(), "the writer did not write: {out:?}");
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    assert_eq!(l.aux_get(b"wh/cur/1").unwrap(), Some(42u64.to_be_bytes().to_vec()), "a cursor written, then a kill");
    assert_eq!(l.aux_get(b"wh/cur/2").unwrap().as_deref(), Some(&b"x"[..]));
    assert_eq!(l.aux_get(b"wh/sub/gone").unwrap(), None, "a removal, then a kill");
    assert_eq!(l.size(), 1);
}

on_both!(aux_entries_survive_reopen_and_stay_out_of_the_log,);
