//! `settle-sim`: the deterministic simulation of the settlement path over faulty storage
//! (`settle::sim`). `--seed N` runs seed N (with `--verbose`, printing its schedule);
//! `--seeds K` runs K seeds from N, on every core. A violation prints its seed, its step
//! and the schedule up to it, and exits 1: `settle-sim --seed <that seed>` replays it.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use clap::Parser;
use rayon::prelude::*;
use settle::sim::{Options, Summary, Violation, run};

/// The command line.
#[derive(Parser)]
#[command(
    name = "settle-sim",
    version,
    about = "Deterministic simulation of settle's settlement path over a faulty storage model: one seed, one run",
    long_about = None
)]
struct Cli {
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many seeds, from --seed.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Client steps per seed.
    #[arg(long, default_value_t = Options::default().steps)]
    steps: usize,
    /// Print each seed's schedule (a single seed always does).
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let opts = Options { steps: cli.steps };
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let total = Mutex::new(Summary::default());
    let first_failure: Mutex<Option<Violation>> = Mutex::new(None);
    let end = cli.seed.saturating_add(cli.seeds);
    // One seed prints its schedule; many, with --verbose.
    let verbose = cli.verbose || cli.seeds == 1;
    (cli.seed..end).into_par_iter().for_each(|seed| {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match run(seed, &opts) {
            Ok(r) => {
                if verbose {
                    println!("{}", r.schedule.join("\n"));
                }
                let s = r.summary;
                let mut t = total.lock().unwrap_or_else(PoisonError::into_inner);
                t.acked += s.acked;
                t.retries += s.retries;
                t.restarts += s.restarts;
                t.crashes += s.crashes;
                t.failed_syncs += s.failed_syncs;
                t.flips += s.flips;
                t.records += s.records;
            }
            Err(v) => {
                stop.store(true, Ordering::Relaxed);
                let mut f = first_failure.lock().unwrap_or_else(PoisonError::into_inner);
                if f.as_ref().is_none_or(|o| v.seed < o.seed) {
                    *f = Some(v);
                }
            }
        }
    });
    if let Some(v) = first_failure.into_inner().unwrap_or_else(PoisonError::into_inner) {
        for line in &v.schedule {
            println!("{line}");
        }
        eprintln!("FAIL {v}");
        eprintln!("replay it: settle-sim --seed {} --steps {} --verbose", v.seed, cli.steps);
        return ExitCode::FAILURE;
    }
    let t = total.into_inner().unwrap_or_else(PoisonError::into_inner);
    let took = started.elapsed();
    println!(
        "{} seeds passed ({}..{}), 0 violations: {} appends acknowledged, {} retries answered alike, {} power cuts, {} failed syncs, {} bit flips detected, {} restarts, {} records; {:.1?} ({} ms a seed)",
        cli.seeds,
        cli.seed,
        end - 1,
        t.acked,
        t.retries,
        t.crashes,
        t.failed_syncs,
        t.flips,
        t.restarts,
        t.records,
        took,
        took.as_millis() / u128::from(cli.seeds.max(1))
    );
    ExitCode::SUCCESS
}
