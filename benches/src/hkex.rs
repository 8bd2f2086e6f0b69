//! OMD-C benchmarks: decoding throughput (bytes per second, one core) and book building
//! (messages per second through the feed handler, one core).

use std::hint::black_box;
use std::time::Instant;

use harbour_sources::hkex::encode::PacketWriter;
use harbour_sources::hkex::feed::FeedHandler;
use harbour_sources::hkex::wire::{action, BookEntries, BookEntry, BookSide, Message, Packet, Price};
use rand::{Rng, SeedableRng};

/// A FullTick-like order flow over `securities`: adds near the touch, modifies and deletes of
/// live orders (about 100 resting per security), trades; packed into full packets.
fn order_flow(messages: usize, securities: u32, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut live: Vec<Vec<(u64, BookSide)>> = vec![Vec::new(); securities as usize];
    let mut next_id = 1u64;
    let mut w = PacketWriter::new(1);
    let mut trade_id = 0u32;
    for i in 0..messages {
        let s = rng.random_range(0..securities);
        let orders = &mut live[s as usize];
        let mid = 100_000 + (s as i32) * 10;
        let r: u32 = rng.random_range(0..100);
        let m = if orders.len() < 60 || r < 40 {
            let side = if rng.random_bool(0.5) { BookSide::Bid } else { BookSide::Offer };
            let off = rng.random_range(1..20) * 10;
            let price = if side == BookSide::Bid { mid - off } else { mid + off };
            let id = next_id;
            next_id += 1;
            orders.push((id, side));
            Message::AddOrder {
                security_code: s + 1,
                order_id: id,
                price: Price(price),
                quantity: 100 * rng.random_range(1..50),
                side,
                order_type: b'2',
                position: 0,
            }
        } else if r < 70 {
            let (id, side) = orders[rng.random_range(0..orders.len())];
            Message::ModifyOrder {
                security_code: s + 1,
                order_id: id,
                quantity: 100 * rng.random_range(1..50),
                side,
                position: 0,
            }
        } else if r < 95 {
            let (id, side) = orders.swap_remove(rng.random_range(0..orders.len()));
            Message::DeleteOrder { security_code: s + 1, order_id: id, side }
        } else {
            trade_id += 1;
            Message::Trade {
                security_code: s + 1,
                trade_id,
                price: Price(mid),
                quantity: 100,
                trade_type: 0,
                trade_time: 1_764_000_000_000_000_000 + i as u64,
            }
        };
        w.push(&m, 1_764_000_000_000_000_000 + (i as u64 / 40));
    }
    w.finish()
}

/// Aggregated-book updates (message 53, 1–4 entries) over `securities`.
fn aggregated_flow(messages: usize, securities: u32, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut depth = vec![[0usize; 2]; securities as usize];
    let mut w = PacketWriter::new(1);
    for i in 0..messages {
        let s = rng.random_range(0..securities);
        let mut entries = Vec::new();
        for _ in 0..rng.random_range(1..=4) {
            let side_i = rng.random_range(0..2);
            let side = if side_i == 0 { BookSide::Bid } else { BookSide::Offer };
            let d = &mut depth[s as usize][side_i];
            let (act, level) = if *d < 10 && rng.random_bool(0.5) || *d == 0 {
                *d += 1;
                (action::NEW, rng.random_range(1..=*d))
            } else if rng.random_bool(0.7) {
                (action::CHANGE, rng.random_range(1..=*d))
            } else {
                *d -= 1;
                (action::DELETE, rng.random_range(1..=*d + 1))
            };
            entries.push(BookEntry {
                quantity: 100 * rng.random_range(1..500),
                price: Price(100_000 + rng.random_range(-100..100) * 10),
                orders: rng.random_range(1..20),
                side,
                level: level as u8,
                action: act,
            });
        }
        let bytes = BookEntries::encode(&entries);
        let m = Message::AggregateOrderBookUpdate {
            security_code: s + 1,
            entries: BookEntries::from_bytes(&bytes).unwrap(),
        };
        w.push(&m, 1_764_000_000_000_000_000 + (i as u64 / 40));
    }
    w.finish()
}

fn decode_all(packets: &[Vec<u8>]) -> u64 {
    let mut sum = 0u64;
    for p in packets {
        let pk = Packet::parse(p).expect("packet");
        for (seq, m) in pk.messages() {
            sum = sum.wrapping_add(u64::from(seq));
            match m.expect("message") {
                Message::AddOrder { order_id, price, quantity, .. } => {
                    sum = sum.wrapping_add(order_id ^ price.0 as u64 ^ u64::from(quantity))
                }
                Message::ModifyOrder { order_id, quantity, .. } => {
                    sum = sum.wrapping_add(order_id ^ u64::from(quantity))
                }
                Message::DeleteOrder { order_id, .. } => sum = sum.wrapping_add(order_id),
                Message::Trade { price, quantity, .. } => sum = sum.wrapping_add(price.0 as u64 ^ u64::from(quantity)),
                Message::AggregateOrderBookUpdate { entries, .. } => {
                    for e in entries.iter() {
                        sum = sum.wrapping_add(e.quantity ^ e.price.0 as u64 ^ u64::from(e.level));
                    }
                }
                _ => {}
            }
        }
    }
    sum
}

/// `harbour-bench hkex [messages]`.
pub fn bench_hkex(messages: usize) {
    for (name, packets) in
        [("FullTick 30/31/32/50", order_flow(messages, 500, 1)), ("aggregated 53", aggregated_flow(messages, 500, 2))]
    {
        let bytes: usize = packets.iter().map(Vec::len).sum();
        let msgs: usize = packets.iter().map(|p| usize::from(p[2])).sum();
        // Decoding: best of 5 passes over the packets (in memory).
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            black_box(decode_all(black_box(&packets)));
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "hkex decode  {name:<22} {:>7.2} MB in {} packets, {} msgs: {:>6.2} GB/s, {:>6.1} M msgs/s (best of 5, one core)",
            bytes as f64 / 1e6,
            packets.len(),
            msgs,
            bytes as f64 / best / 1e9,
            msgs as f64 / best / 1e6
        );
        // Book building: the whole feed handler (sequencing, books, quotes at packet ends).
        let mut best = f64::MAX;
        let mut quotes = 0;
        for _ in 0..3 {
            let mut h = FeedHandler::default();
            let (mut out, mut rejects) = (Vec::with_capacity(64), Vec::new());
            quotes = 0;
            let t = Instant::now();
            for p in &packets {
                h.on_datagram(1, p, &mut out, &mut rejects);
                quotes += out.len();
                out.clear();
            }
            best = best.min(t.elapsed().as_secs_f64());
            assert_eq!(h.state.stats.messages as usize, msgs);
            assert!(rejects.is_empty(), "{rejects:?}");
            assert_eq!(h.state.stats.book_errors, 0);
        }
        println!(
            "hkex books   {name:<22} {msgs} msgs over 500 securities: {:>6.2} M msgs/s through the feed handler ({quotes} quotes out; best of 3, one core)",
            msgs as f64 / best / 1e6
        );
        // Book building alone: the same messages decoded beforehand (decoding is measured above),
        // applied to the market state with its quotes at packet ends.
        let decoded: Vec<(u64, Vec<Message<'_>>)> = packets
            .iter()
            .map(|p| {
                let pk = Packet::parse(p).expect("packet");
                (pk.header.send_time, pk.messages().map(|(_, m)| m.expect("message")).collect())
            })
            .collect();
        let mut best = f64::MAX;
        for _ in 0..3 {
            let mut state = harbour_sources::hkex::feed::MarketState::default();
            let mut out = Vec::with_capacity(64);
            let t = Instant::now();
            for (send_time, msgs) in &decoded {
                state.begin_packet(*send_time, 1);
                for m in msgs {
                    state.apply(m, &mut out);
                }
                state.end_packet(&mut out);
                out.clear();
            }
            best = best.min(t.elapsed().as_secs_f64());
            assert_eq!(state.stats.book_errors, 0);
        }
        println!(
            "hkex books   {name:<22} book building alone (messages decoded beforehand): {:>6.2} M msgs/s (best of 3, one core)",
            msgs as f64 / best / 1e6
        );
    }
}
