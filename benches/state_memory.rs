//! Memory of the projection state per conversion, as the 1M-conversion demo grows it
//! (issue: binary, peak RSS ≤ 512 MB): a lead with a 3-hop chain for every two
//! conversions, each conversion settled on 3 hops. Reports the resident memory the state
//! adds per conversion (the process's RSS before and after, with the shipped allocator).
//! Not a timing: run with `cargo bench --bench state_memory`.

#[path = "fixtures.rs"]
mod fixtures;

use settle_engine::model::Event;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss() -> usize {
    memory_stats::memory_stats().map_or(0, |m| m.physical_mem)
}

fn main() {
    // `cargo bench` passes harness flags (`--bench`); a number among the arguments sets N.
    let n: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(200_000);
    let (mut engine, mut seq) = fixtures::engine_with_chain();
    let mut go = |e: &mut settle_engine::Engine, ev: Event, at: i64| {
        let d = e.decide(fixtures::env_at(seq, fixtures::t(at), ev), seq).expect("fixture fact is accepted");
        seq += 1 + d.outputs.len() as u64;
        d.outputs.iter().filter(|o| o.sign.is_some()).count()
    };
    let before = rss();
    let mut mandates = 0;
    let mut lead = String::new();
    for i in 0..n {
        let at = 100 + i64::try_from(i).unwrap_or(i64::MAX);
        if i % 2 == 0 {
            lead = format!("lead-{i}");
            let program = "growth".to_owned();
            let customer = format!("customer-{i}.example");
            go(
                &mut engine,
                Event::LeadRegistered {
                    lead: lead.clone(),
                    program,
                    customer,
                    customer_key: Some(settle_engine::model::CustomerKey::CURRENT),
                    partner: "p1".into(),
                },
                at,
            );
            go(&mut engine, Event::LeadHandedOff { lead: lead.clone(), from: "p1".into(), to: "p2".into() }, at);
            go(&mut engine, Event::LeadHandedOff { lead: lead.clone(), from: "p2".into(), to: "p3".into() }, at);
        }
        let Event::ConversionRecorded { revenue, fx, subscription_month, .. } = fixtures::conversion(i) else {
            unreachable!("the fixture is a conversion")
        };
        let conversion = Event::ConversionRecorded {
            conversion: format!("deal-{i}"),
            lead: lead.clone(),
            revenue,
            occurred_at: fixtures::t(at),
            subscription_month,
            fx,
        };
        mandates += go(&mut engine, conversion, at);
    }
    let after = rss();
    assert_eq!(mandates as u64, 3 * n, "every conversion pays 3 hops");
    let per = after.saturating_sub(before) / usize::try_from(n.max(1)).unwrap_or(1);
    println!(
        "state_memory: {n} conversions ({} leads, 3 hops each): RSS {} MB → {} MB, {per} bytes per conversion",
        n.div_ceil(2),
        before >> 20,
        after >> 20
    );
    std::hint::black_box(&engine);
}
