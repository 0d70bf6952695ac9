//! The worked example of `docs/commission-rules.md`, every figure pinned, and refunds
//! given as a fraction of the revenue (figures computed by hand below).
mod common;
use common::*;
use settle_engine::model::*;
use settle_engine::state::Book;

/// 10 % pool, shares 30 / 20 / 40 with the rest to the closer, `half_even`, 30 days on
/// hold; the chain p0 (alice) → p1 (bob) → p2 (carol); a deal of 12,345.67 USD.
fn worked_example() -> World {
    let mut w = World::chain(spec(shares("30", "20", "40", Position::Closer), percent_pool("10"), 30), 3);
    let d = w.convert("deal-1", 1_234_567);
    assert_eq!(outcome(&d), ("settled".into(), None, 123_457), "pool: 123,456.7 rounds half-even to 123,457");
    assert_eq!(amounts(&d), [37_037, 24_691, 61_729], "largest remainder: the leftover cent goes to carol's .5");
    w
}

fn book(w: &World, p: &str) -> Book {
    *w.engine.state().books.get(p).unwrap()
}

fn refund(w: &mut World, id: &str, size: RefundSize) -> Vec<i64> {
    amounts(&w.fact(Event::RefundRecorded { refund: id.into(), conversion: "deal-1".into(), size }))
}

#[test]
fn the_worked_example_partial_then_full_refund() {
    let mut w = worked_example();
    for (p, held) in [("p0", 37_037), ("p1", 24_691), ("p2", 61_729)] {
        assert_eq!(book(&w, p).on_hold, held, "{p}");
    }
    // 2,000.00 refunded: target 123,457 × 200,000 / 1,234,567 = 20,000.0486 → 20,000;
    // over 37,037 / 24,691 / 61,729 the floors 5,999 / 3,999 / 10,000 leave 2 cents, to
    // the fractions .9838 and .9352.
    assert_eq!(refund(&mut w, "refund-1", RefundSize::Amount(usd(200_000))), [6_000, 4_000, 10_000]);
    for (p, earned, clawed, held) in
        [("p0", 37_037, 6_000, 31_037), ("p1", 24_691, 4_000, 20_691), ("p2", 61_729, 10_000, 51_729)]
    {
        let b = book(&w, p);
        assert_eq!((b.earned, b.clawed_back, b.on_hold, b.payable, b.paid), (earned, clawed, held, 0, 0), "{p}");
    }
    // The rest: the target is the whole pool, the increment 103,457 is what the hops
    // still hold.
    assert_eq!(refund(&mut w, "refund-2", RefundSize::Full), [31_037, 20_691, 51_729]);
    for p in ["p0", "p1", "p2"] {
        let b = book(&w, p);
        assert_eq!((b.earned - b.clawed_back, b.on_hold, b.payable), (0, 0, 0), "{p}");
    }
}

#[test]
fn a_refund_given_as_a_fraction_of_the_revenue() {
    let mut w = worked_example();
    // A quarter: 1,234,567 × 0.25 = 308,641.75 → 308,642 (half-even; .75 is no tie).
    // Target 123,457 × 308,642 / 1,234,567 = 30,864.275 → 30,864. Over 37,037 / 24,691 /
    // 61,729 the exact parts are 9,259.175 / 6,172.700 / 15,432.125: floors 9,259 /
    // 6,172 / 15,432 leave 1 cent, to bob's .700.
    assert_eq!(refund(&mut w, "r-quarter", RefundSize::Fraction("0.25".parse().unwrap())), [9_259, 6_173, 15_432]);
    let c = w.engine.state().conversions.get(w.engine.state().conversions.seq_of("deal-1").unwrap()).unwrap();
    assert_eq!(c.refunded, 308_642);
    // Fractions are of the revenue, not of what is left: 0.8 more is 987,654 (987,653.6
    // rounded), more than the 925,925 left, and is refused; the whole is refused too.
    // Outside (0, 1], or less than half a cent of the revenue: refused, whatever is left.
    let left = "exceeds the 9259.25 USD not yet refunded";
    let nothing = "rounds to nothing";
    for (f, why) in [
        ("0.8", left),
        ("1", left),
        ("0", "not in (0, 1]"),
        ("-0.1", "not in (0, 1]"),
        ("1.01", "not in (0, 1]"),
        ("0.0000001", nothing),
    ] {
        let e = w
            .try_fact(Event::RefundRecorded {
                refund: format!("r-{f}"),
                conversion: "deal-1".into(),
                size: RefundSize::Fraction(f.parse().unwrap()),
            })
            .unwrap_err();
        assert!(e.to_string().contains(why), "{f}: {e}");
    }
    // The rest, by `Full`, claws back exactly what the hops still hold.
    assert_eq!(refund(&mut w, "r-rest", RefundSize::Full), [27_778, 18_518, 46_297]);
}

#[test]
fn a_fraction_of_one_is_the_whole_revenue() {
    let mut w = worked_example();
    assert_eq!(refund(&mut w, "r-all", RefundSize::Fraction("1".parse().unwrap())), [37_037, 24_691, 61_729]);
}
