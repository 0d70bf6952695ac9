//! The simulator can fail: with a known bug injected into the ledger (appends
//! acknowledged before the sync that makes them durable, behind the test-only
//! `fault-injection` switch), `settle::sim` finds an acknowledged append lost (or
//! acknowledged before it was durable) within a bounded number of seeds, and the
//! failing seed replays exactly: the same violation at the same step, after the same
//! schedule. (A test binary of its own: the switch holds for every ledger of the
//! process.)

use settle::sim::{Options, run};

#[test]
fn the_simulator_finds_acknowledgements_before_the_sync_and_replays_them_from_the_seed() {
    settle_ledger::inject_ack_before_sync(true);
    let opts = Options::default();
    let found = (1..=100).find_map(|seed| run(seed, &opts).err()).expect("the bug is found within 100 seeds");
    assert!(
        found.what.contains("acknowledged")
            && (found.what.contains("lost") || found.what.contains("before it was durable")),
        "the violation is an acknowledged append lost, or acknowledged before it was durable: {found}"
    );
    let again = run(found.seed, &opts).expect_err("the seed fails again");
    assert_eq!((again.step, &again.what), (found.step, &found.what), "the same violation");
    assert_eq!(again.schedule, found.schedule, "after the same schedule");
    settle_ledger::inject_ack_before_sync(false);
    run(found.seed, &opts).unwrap_or_else(|v| panic!("without the bug the seed passes: {v}"));
}
