//! The deterministic simulation in CI: `settle-sim` runs a bounded number of seeds over
//! the faulty storage model, the same 150 every time and 50 fresh ones (from the day's
//! date: a failure prints its seed, and `settle-sim --seed N --verbose` replays it), with
//! no violation; and a seed's run is the same schedule every time.

use settle::sim::{Options, run};

fn sim(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_settle-sim")).args(args).output().expect("settle-sim runs")
}

#[test]
fn fixed_and_fresh_seeds_pass_with_no_violation() {
    let day = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() / 86_400;
    let fresh = (day * 1_000_003).to_string();
    for (from, n) in [("1", "150"), (fresh.as_str(), "50")] {
        let out = sim(&["--seed", from, "--seeds", n]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "seeds {n} from {from}:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
        let last = text.lines().last().unwrap_or_default();
        assert!(last.starts_with(&format!("{n} seeds passed")) && last.contains("0 violations"), "{last}");
        // The runs did meet faults: power cuts, failed syncs, bit flips.
        assert!(!last.contains(" 0 power cuts") && !last.contains(" 0 bit flips"), "{last}");
    }
}

#[test]
fn a_seed_replays_exactly() {
    let opts = Options::default();
    let a = run(7, &opts).unwrap_or_else(|v| panic!("{v}"));
    let b = run(7, &opts).unwrap_or_else(|v| panic!("{v}"));
    assert_eq!(a.schedule, b.schedule);
    assert!(a.schedule.len() > 50, "a real schedule: {:?}", a.schedule);
    assert_ne!(a.schedule, run(8, &opts).unwrap_or_else(|v| panic!("{v}")).schedule, "another seed, another run");
    // The printed schedule is the same one.
    let out = sim(&["--seed", "7", "--verbose"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(&a.schedule.join("\n")), "{text}");
}
