//! Decoder tests: byte vectors laid out by hand from the spec's tables (not by the encoder), every
//! field asserted; framing errors; encoder round trips; arbitrary bytes never panic.

use proptest::prelude::*;
use rust_decimal_macros::dec;

use super::encode::{encode_message, PacketWriter, SecurityDefinitionSpec};
use super::wire::*;

/// Little-endian byte builder for hand-made vectors.
#[derive(Default)]
struct B(Vec<u8>);

impl B {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i16(mut self, v: i16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn pad(mut self, n: usize) -> Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    fn at(self, len: usize) -> Self {
        assert_eq!(self.0.len(), len, "vector laid out to the wrong offset");
        self
    }
}

/// A message: size and type, then `body` (asserted to end at `size`).
fn msg(t: u16, size: u16, body: B) -> Vec<u8> {
    let mut v = B::default().u16(size).u16(t).0;
    v.extend_from_slice(&body.0);
    assert_eq!(v.len(), usize::from(size), "message {t} laid out to {} bytes", v.len());
    v
}

fn packet(seq: u32, time: u64, msgs: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = msgs.concat();
    let mut p = B::default().u16((16 + body.len()) as u16).u8(msgs.len() as u8).u8(0).u32(seq).u64(time).0;
    p.extend_from_slice(&body);
    p
}

fn one(bytes: &[u8]) -> Message<'_> {
    decode_message(bytes, 16).unwrap()
}

#[test]
fn packet_header_and_sequence_numbers() {
    let m1 = msg(40, 12, B::default().u32(700).i32(385_200));
    let m2 = msg(51, 12, B::default().u32(5).u32(77));
    let p = packet(1_000, 1_764_000_000_123_456_789, &[m1, m2]);
    let pk = Packet::parse(&p).unwrap();
    assert_eq!(
        pk.header,
        PacketHeader { size: 40, msg_count: 2, seq_num: 1_000, send_time: 1_764_000_000_123_456_789 }
    );
    assert_eq!(pk.last_seq(), 1_001);
    let got: Vec<(u32, Message<'_>)> = pk.messages().map(|(s, m)| (s, m.unwrap())).collect();
    assert_eq!(
        got,
        vec![
            (1_000, Message::NominalPrice { security_code: 700, price: Price(385_200) }),
            (1_001, Message::TradeCancel { security_code: 5, trade_id: 77 }),
        ]
    );
    // A heartbeat: a bare header naming the last sequence number.
    let hb = packet(1_001, 5, &[]);
    let pk = Packet::parse(&hb).unwrap();
    assert!(pk.is_heartbeat());
    assert_eq!(pk.last_seq(), 1_001);
    assert_eq!(pk.messages().count(), 0);
}

#[test]
fn prices_are_exact_decimals() {
    assert_eq!(Price(385_200).to_decimal(), dec!(385.200));
    assert_eq!(Price(1).to_decimal(), dec!(0.001));
    assert_eq!(Price(-5).to_decimal(), dec!(-0.005));
    assert_eq!(Price::from_decimal(dec!(385.2)), Some(Price(385_200)));
    assert_eq!(Price::from_decimal(dec!(0.0005)), None);
    assert_eq!(Price::from_decimal(dec!(3000000)), None);
}

#[test]
fn sequence_reset() {
    let m = msg(100, 8, B::default().u32(1));
    assert_eq!(one(&m), Message::SequenceReset { new_seq_no: 1 });
}

#[test]
fn security_definition_every_field() {
    let name_gccs: Vec<u8> = "騰訊控股".encode_utf16().flat_map(u16::to_le_bytes).collect();
    let name_gb: Vec<u8> = "腾讯控股".encode_utf16().flat_map(u16::to_le_bytes).collect();
    let body = B::default()
        .u32(700) // @4
        .bytes(b"MAIN") // @8
        .bytes(b"KYG875721634") // @12
        .bytes(b"EQTY") // @24
        .u8(1) // @28 ProductType
        .pad(1)
        .bytes(b"01") // @30
        .bytes(format!("{:<40}", "TENCENT").as_bytes()) // @32
        .bytes(b"HKD") // @72
        .bytes(&name_gccs)
        .pad(60 - name_gccs.len()) // @75
        .bytes(&name_gb)
        .pad(60 - name_gb.len()) // @135
        .at(191)
        .u32(100) // @195 LotSize
        .pad(4)
        .i32(380_400) // @203 PreviousClosingPrice
        .bytes(b"YNYYN") // @207..212 VCM, short sell, CAS, CCASS, dummy
        .pad(1)
        .bytes(b"Y") // @213 StampDutyFlag
        .pad(1)
        .u32(20_040_616) // @215 ListingDate
        .u32(0) // @219 DelistingDate
        .bytes(format!("{:<38}", "free text").as_bytes()) // @223
        .at(257)
        .pad(542 - 261)
        .u16(2) // @542 NoUnderlyingSecurities
        .u32(5)
        .pad(4)
        .u32(388)
        .pad(4);
    let m = msg(11, 560, body);
    let Message::SecurityDefinition(d) = one(&m) else { panic!("not a security definition") };
    assert_eq!(d.security_code(), 700);
    assert_eq!(ascii(d.market_code()), "MAIN");
    assert_eq!(ascii(d.isin()), "KYG875721634");
    assert_eq!(ascii(d.instrument_type()), "EQTY");
    assert_eq!(d.product_type(), 1);
    assert_eq!(ascii(d.spread_table_code()), "01");
    assert_eq!(ascii(d.short_name()), "TENCENT");
    assert_eq!(ascii(d.currency_code()), "HKD");
    assert_eq!(utf16le(d.name_gccs()), "騰訊控股");
    assert_eq!(utf16le(d.name_gb()), "腾讯控股");
    assert_eq!(d.lot_size(), 100);
    assert_eq!(d.previous_closing_price(), Price(380_400));
    assert_eq!([d.vcm_flag(), d.short_sell_flag(), d.cas_flag(), d.ccass_flag(), d.dummy_security_flag()], *b"YNYYN");
    assert!(d.stamp_duty());
    assert_eq!(d.listing_date(), 20_040_616);
    assert_eq!(d.delisting_date(), 0);
    assert_eq!(ascii(d.free_text()), "free text");
    assert_eq!(d.underlyings().collect::<Vec<_>>(), vec![5, 388]);
    // The encoder lays out the same bytes.
    let spec = SecurityDefinitionSpec {
        security_code: 700,
        market_code: "MAIN".into(),
        isin: "KYG875721634".into(),
        instrument_type: "EQTY".into(),
        product_type: 1,
        spread_table_code: "01".into(),
        short_name: "TENCENT".into(),
        currency: "HKD".into(),
        name_gccs: "騰訊控股".into(),
        name_gb: "腾讯控股".into(),
        lot_size: 100,
        previous_close: Price(380_400),
        flags: *b"YNYYN",
        stamp_duty: true,
        listing_date: 20_040_616,
        delisting_date: 0,
        free_text: "free text".into(),
        underlyings: vec![5, 388],
    };
    assert_eq!(spec.encode(), m);
    // Underlyings counted past the message are an error, not a panic.
    let mut short = m.clone();
    short[542..544].copy_from_slice(&3u16.to_le_bytes());
    assert_eq!(
        decode_message(&short, 16),
        Err(DecodeError::TooShort { offset: 16, msg_type: 11, size: 560, need: 568 })
    );
}

#[test]
fn trading_session_and_security_status() {
    let m = msg(
        20,
        32,
        B::default().bytes(b"MAIN").pad(1).u8(3).u8(30).u8(1).pad(4).u64(1_700_000_000_000_000_000).u64(u64::MAX),
    );
    assert_eq!(
        one(&m),
        Message::TradingSessionStatus {
            market_code: b"MAIN",
            sub_id: 3,
            status: 30,
            control_flag: 1,
            start: 1_700_000_000_000_000_000,
            end: u64::MAX
        }
    );
    let m = msg(21, 12, B::default().u32(2_318).u8(2).pad(3));
    assert_eq!(one(&m), Message::SecurityStatus { security_code: 2_318, suspension: 2 });
}

#[test]
fn add_modify_delete_order() {
    let m = msg(30, 32, B::default().u32(700).u64(9_000_000_001).i32(385_200).u32(1_000).u16(1).u8(b'2').pad(1).i32(3));
    assert_eq!(
        one(&m),
        Message::AddOrder {
            security_code: 700,
            order_id: 9_000_000_001,
            price: Price(385_200),
            quantity: 1_000,
            side: BookSide::Offer,
            order_type: b'2',
            position: 3
        }
    );
    let m = msg(31, 28, B::default().u32(700).u64(9_000_000_001).u32(400).u16(0).pad(2).i32(-1));
    assert_eq!(
        one(&m),
        Message::ModifyOrder {
            security_code: 700,
            order_id: 9_000_000_001,
            quantity: 400,
            side: BookSide::Bid,
            position: -1
        }
    );
    let m = msg(32, 20, B::default().u32(700).u64(9_000_000_001).u16(7).pad(2));
    assert_eq!(one(&m), Message::DeleteOrder { security_code: 700, order_id: 9_000_000_001, side: BookSide::Other(7) });
}

#[test]
fn aggregate_order_book_update_entries() {
    let entry = |q: u64, p: i32, n: u32, side: u16, level: u8, act: u8| {
        B::default().u64(q).i32(p).u32(n).u16(side).u8(level).u8(act).pad(4).0
    };
    let body = B::default()
        .u32(5)
        .pad(3)
        .u8(3)
        .bytes(&entry(40_000, 68_050, 12, 0, 1, 0))
        .bytes(&entry(8_000, 68_100, 3, 1, 2, 1))
        .bytes(&entry(0, 0, 0, 0, 0, 74));
    let m = msg(53, 12 + 72, body);
    let Message::AggregateOrderBookUpdate { security_code, entries } = one(&m) else { panic!() };
    assert_eq!(security_code, 5);
    assert_eq!(entries.len(), 3);
    assert_eq!(
        entries.iter().collect::<Vec<_>>(),
        vec![
            BookEntry { quantity: 40_000, price: Price(68_050), orders: 12, side: BookSide::Bid, level: 1, action: 0 },
            BookEntry { quantity: 8_000, price: Price(68_100), orders: 3, side: BookSide::Offer, level: 2, action: 1 },
            BookEntry { quantity: 0, price: Price(0), orders: 0, side: BookSide::Bid, level: 0, action: 74 },
        ]
    );
    // NoEntries beyond the message: an error naming the need.
    let mut bad = m.clone();
    bad[11] = 4;
    assert_eq!(decode_message(&bad, 40), Err(DecodeError::TooShort { offset: 40, msg_type: 53, size: 84, need: 108 }));
}

#[test]
fn trades_tickers_and_prices() {
    let m =
        msg(50, 32, B::default().u32(700).u32(42).i32(385_400).u32(300).i16(102).pad(2).u64(1_764_030_600_000_000_000));
    assert_eq!(
        one(&m),
        Message::Trade {
            security_code: 700,
            trade_id: 42,
            price: Price(385_400),
            quantity: 300,
            trade_type: 102,
            trade_time: 1_764_030_600_000_000_000
        }
    );
    let m = msg(51, 12, B::default().u32(700).u32(42));
    assert_eq!(one(&m), Message::TradeCancel { security_code: 700, trade_id: 42 });
    let m =
        msg(52, 36, B::default().u32(700).u32(9).i32(385_400).u64(5_000_000_000).u64(17).i16(-1).bytes(b"Y").pad(1));
    assert_eq!(
        one(&m),
        Message::TradeTicker {
            security_code: 700,
            ticker_id: 9,
            price: Price(385_400),
            quantity: 5_000_000_000,
            trade_time: 17,
            trade_type: -1,
            cancel: true
        }
    );
    let m = msg(40, 12, B::default().u32(1).i32(49_150));
    assert_eq!(one(&m), Message::NominalPrice { security_code: 1, price: Price(49_150) });
    let m = msg(62, 16, B::default().u32(1).i32(0).u32(0));
    assert_eq!(one(&m), Message::ClosingPrice { security_code: 1, price: Price(0), trades: 0 });
    let m = msg(
        60,
        52,
        B::default()
            .u32(700)
            .u64(12_345_600)
            .i64(4_750_000_000_123)
            .i32(390_000)
            .i32(380_200)
            .i32(385_400)
            .i32(385_011)
            .u32(1_000)
            .i64(NULL_I64),
    );
    assert_eq!(
        one(&m),
        Message::Statistics {
            security_code: 700,
            shares_traded: 12_345_600,
            turnover: Some(4_750_000_000_123),
            high: Price(390_000),
            low: Price(380_200),
            last: Price(385_400),
            vwap: Price(385_011),
            short_sell_shares: 1_000,
            short_sell_turnover: None
        }
    );
}

#[test]
fn retransmission_and_refresh_messages() {
    let m = msg(101, 16, B::default().bytes(b"HARBOUR     "));
    assert_eq!(one(&m), Message::Logon { username: b"HARBOUR     " });
    let m = msg(102, 8, B::default().u8(0).pad(3));
    assert_eq!(one(&m), Message::LogonResponse { session_status: 0 });
    let m = msg(201, 16, B::default().u16(30).pad(2).u32(1_000).u32(1_999));
    assert_eq!(one(&m), Message::RetransmissionRequest { channel_id: 30, begin: 1_000, end: 1_999 });
    let m = msg(202, 16, B::default().u16(30).u8(0).pad(1).u32(1_000).u32(1_999));
    assert_eq!(one(&m), Message::RetransmissionResponse { channel_id: 30, status: 0, begin: 1_000, end: 1_999 });
    let m = msg(203, 8, B::default().u32(123_456));
    assert_eq!(one(&m), Message::RefreshComplete { last_seq_num: 123_456 });
}

#[test]
fn unknown_types_are_skipped_by_their_size() {
    let unknown = msg(54, 10, B::default().bytes(&[1, 2, 3, 4, 5, 6]));
    let known = msg(40, 12, B::default().u32(1).i32(2));
    let p = packet(7, 0, &[unknown.clone(), known]);
    let got: Vec<Message<'_>> = Packet::parse(&p).unwrap().messages().map(|(_, m)| m.unwrap()).collect();
    assert_eq!(got[0], Message::Unknown { msg_type: 54, bytes: &unknown });
    assert_eq!(got[1], Message::NominalPrice { security_code: 1, price: Price(2) });
}

#[test]
fn framing_errors_name_the_offset() {
    let m = msg(40, 12, B::default().u32(1).i32(2));
    assert_eq!(Packet::parse(&[0; 10]).unwrap_err(), DecodeError::ShortPacket { len: 10 });
    // PktSize larger than the datagram; smaller than the datagram.
    let mut p = packet(1, 0, std::slice::from_ref(&m));
    p[0] = 60;
    assert_eq!(Packet::parse(&p).unwrap_err(), DecodeError::PacketSize { size: 60, len: 28 });
    let mut p = packet(1, 0, std::slice::from_ref(&m));
    p.extend_from_slice(&[0; 4]);
    assert_eq!(Packet::parse(&p).unwrap_err(), DecodeError::PacketSize { size: 28, len: 32 });
    // MsgCount too high, too low.
    let mut p = packet(1, 0, std::slice::from_ref(&m));
    p[2] = 2;
    assert_eq!(Packet::parse(&p).unwrap_err(), DecodeError::Count { count: 2, found: 1, offset: 28 });
    let mut p = packet(1, 0, &[m.clone(), m.clone()]);
    p[2] = 1;
    assert_eq!(Packet::parse(&p).unwrap_err(), DecodeError::Count { count: 1, found: 1, offset: 28 });
    // A MsgSize that overruns; one too small for any header; a partial header at the end.
    let mut p = packet(1, 0, std::slice::from_ref(&m));
    p[16] = 13;
    assert_eq!(Packet::parse(&p).unwrap_err(), DecodeError::Overrun { offset: 16, size: 13, left: 12 });
    let mut p = packet(1, 0, std::slice::from_ref(&m));
    p[16] = 2;
    assert!(matches!(Packet::parse(&p).unwrap_err(), DecodeError::TooShort { offset: 16, size: 2, .. }));
    // A message shorter than its layout: framing is fine, decoding it is an error.
    let short = msg(30, 8, B::default().u32(700));
    let p = packet(1, 0, &[short]);
    let (_, r) = Packet::parse(&p).unwrap().messages().next().unwrap();
    assert_eq!(r, Err(DecodeError::TooShort { offset: 16, msg_type: 30, size: 8, need: 32 }));
}

#[test]
fn a_stream_of_packets_splits_on_pkt_size() {
    let a = packet(1, 0, &[msg(40, 12, B::default().u32(1).i32(2))]);
    let b = packet(2, 0, &[]);
    let stream = [a.clone(), b.clone()].concat();
    let (p, rest) = Packet::parse_prefix(&stream).unwrap();
    assert_eq!(p.bytes(), &a[..]);
    assert_eq!(rest, &b[..]);
}

fn arb_side() -> impl Strategy<Value = BookSide> {
    prop_oneof![Just(BookSide::Bid), Just(BookSide::Offer), any::<u16>().prop_map(|v| BookSide::Other(v.max(2)))]
}

fn arb_entry() -> impl Strategy<Value = BookEntry> {
    (any::<u64>(), any::<i32>(), any::<u32>(), arb_side(), any::<u8>(), any::<u8>()).prop_map(
        |(q, p, n, side, l, a)| BookEntry { quantity: q, price: Price(p), orders: n, side, level: l, action: a },
    )
}

/// Owned messages (those with borrowed parts are built from owned bytes in the test).
#[derive(Clone, Debug)]
enum Owned {
    Plain(u8, [u64; 8]),
    Book(u32, Vec<BookEntry>),
}

fn arb_owned() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (0u8..14, any::<[u64; 8]>()).prop_map(|(k, v)| Owned::Plain(k, v)),
        (any::<u32>(), proptest::collection::vec(arb_entry(), 0..20)).prop_map(|(c, e)| Owned::Book(c, e)),
    ]
}

fn build<'a>(o: &Owned, entries: &'a [u8]) -> Message<'a> {
    match o {
        Owned::Book(code, _) => Message::AggregateOrderBookUpdate {
            security_code: *code,
            entries: BookEntries::from_bytes(entries).unwrap(),
        },
        Owned::Plain(k, v) => {
            let (a, b, c, d) = (v[0] as u32, v[1], v[2] as i32, v[3] as u32);
            match k {
                0 => Message::SequenceReset { new_seq_no: a },
                1 => Message::SecurityStatus { security_code: a, suspension: v[1] as u8 },
                2 => Message::AddOrder {
                    security_code: a,
                    order_id: b,
                    price: Price(c),
                    quantity: d,
                    side: BookSide::Offer,
                    order_type: v[4] as u8,
                    position: v[5] as i32,
                },
                3 => Message::ModifyOrder {
                    security_code: a,
                    order_id: b,
                    quantity: d,
                    side: BookSide::Bid,
                    position: c,
                },
                4 => Message::DeleteOrder { security_code: a, order_id: b, side: BookSide::Other(v[4] as u16 | 2) },
                5 => Message::Trade {
                    security_code: a,
                    trade_id: d,
                    price: Price(c),
                    quantity: v[4] as u32,
                    trade_type: v[5] as i16,
                    trade_time: v[6],
                },
                6 => Message::TradeCancel { security_code: a, trade_id: d },
                7 => Message::TradeTicker {
                    security_code: a,
                    ticker_id: d,
                    price: Price(c),
                    quantity: b,
                    trade_time: v[6],
                    trade_type: v[5] as i16,
                    cancel: v[7] % 2 == 0,
                },
                8 => Message::NominalPrice { security_code: a, price: Price(c) },
                9 => Message::ClosingPrice { security_code: a, price: Price(c), trades: d },
                10 => Message::Statistics {
                    security_code: a,
                    shares_traded: b,
                    turnover: (v[3] != 0).then_some(v[4] as i64).filter(|t| *t != NULL_I64),
                    high: Price(c),
                    low: Price(v[5] as i32),
                    last: Price(v[6] as i32),
                    vwap: Price(v[7] as i32),
                    short_sell_shares: d,
                    short_sell_turnover: None,
                },
                11 => Message::RetransmissionRequest { channel_id: v[4] as u16, begin: a, end: d },
                12 => Message::RetransmissionResponse { channel_id: v[4] as u16, status: v[5] as u8, begin: a, end: d },
                _ => Message::RefreshComplete { last_seq_num: a },
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Encode then decode gives the same messages and sequence numbers, whatever the packing.
    #[test]
    fn encoded_messages_decode_to_themselves(msgs in proptest::collection::vec(arb_owned(), 1..60), first in any::<u32>()) {
        let entries: Vec<Vec<u8>> = msgs.iter().map(|o| match o {
            Owned::Book(_, e) => BookEntries::encode(e),
            Owned::Plain(..) => Vec::new(),
        }).collect();
        let built: Vec<Message<'_>> = msgs.iter().zip(&entries).map(|(o, e)| build(o, e)).collect();
        let mut w = PacketWriter::new(first);
        for (i, m) in built.iter().enumerate() {
            w.push(m, (i / 7) as u64);
        }
        let packets = w.finish();
        let mut seq = first;
        let mut got = Vec::new();
        for p in &packets {
            prop_assert!(p.len() <= MAX_PACKET);
            let pk = Packet::parse(p).unwrap();
            for (s, m) in pk.messages() {
                prop_assert_eq!(s, seq);
                seq = seq.wrapping_add(1);
                got.push(m.unwrap());
            }
        }
        prop_assert_eq!(got, built);
    }

    /// Arbitrary bytes: an error or messages, never a panic; a message never reads past its size.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        if let Ok(p) = Packet::parse(&bytes) {
            for (_, m) in p.messages() {
                let _ = m;
            }
        }
        let _ = decode_message(&bytes, 0);
    }

    /// Mostly well-formed packets with a few bytes flipped (the interesting neighbourhood).
    #[test]
    fn corrupted_packets_never_panic(msgs in proptest::collection::vec(arb_owned(), 1..20), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let entries: Vec<Vec<u8>> = msgs.iter().map(|o| match o {
            Owned::Book(_, e) => BookEntries::encode(e),
            Owned::Plain(..) => Vec::new(),
        }).collect();
        let mut w = PacketWriter::new(1);
        for (o, e) in msgs.iter().zip(&entries) {
            w.push(&build(o, e), 0);
        }
        for mut p in w.finish() {
            for (i, v) in &flips {
                let i = i.index(p.len());
                p[i] = *v;
            }
            if let Ok(pk) = Packet::parse(&p) {
                for (_, m) in pk.messages() {
                    let _ = m;
                }
            }
        }
    }
}

#[test]
fn encode_message_sets_its_size() {
    let mut out = Vec::new();
    encode_message(&Message::TradeCancel { security_code: 1, trade_id: 2 }, &mut out);
    assert_eq!(out, msg(51, 12, B::default().u32(1).u32(2)));
}
