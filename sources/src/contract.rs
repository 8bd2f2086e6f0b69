//! The input contract: one JSON object per line (a Kafka message later), decimals as strings,
//! timestamps RFC 3339 with an offset. Documented for producers in docs/input-contract.md.
//!
//! [`parse_line`] turns a line into a [`harbour_dataflows::validate::Input`] or a
//! [`Rejection::Parse`]; [`to_line`] writes the same format (the generator and tests use it).
//! Unknown fields are ignored (a tolerant reader); missing or malformed required ones are not.

use chrono::{DateTime, FixedOffset, SecondsFormat};
use harbour_dataflows::model::{
    Bust, Cleared, Close, Fill, Instrument, Order, OrderStatus, PositionKey, Quote, Side, StatusSubject, Symbol,
    TradingStatus, Ts, MARKET_STATUSES, SECURITY_STATUSES,
};
use harbour_dataflows::validate::{hkt, Input, Rejection};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A contract line as serde sees it. `S` is the text type: `String` to write lines and on the
/// general (tagged) parse, borrowed text on the fast path ([`Flat`]).
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Wire<S = String> {
    Fill {
        exec_id: S,
        order_id: S,
        account: S,
        strategy: S,
        symbol: S,
        side: S,
        #[serde(deserialize_with = "decimal_text", serialize_with = "rust_decimal::serde::str::serialize")]
        qty: Decimal,
        #[serde(deserialize_with = "decimal_text", serialize_with = "rust_decimal::serde::str::serialize")]
        price: Decimal,
        ts: S,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "decimal_text_opt",
            serialize_with = "rust_decimal::serde::str_option::serialize"
        )]
        commission: Option<Decimal>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        odd_lot: bool,
    },
    Bust {
        exec_id: S,
        ts: S,
    },
    Quote {
        symbol: S,
        ts: S,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "price_field",
            serialize_with = "serialize_price_field"
        )]
        bid: Option<Option<Decimal>>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "price_field",
            serialize_with = "serialize_price_field"
        )]
        ask: Option<Option<Decimal>>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "price_field",
            serialize_with = "serialize_price_field"
        )]
        last: Option<Option<Decimal>>,
    },
    Close {
        symbol: S,
        ts: S,
        #[serde(deserialize_with = "decimal_text", serialize_with = "rust_decimal::serde::str::serialize")]
        price: Decimal,
    },
    Instrument {
        symbol: S,
        name: S,
        lot_size: i64,
        currency: S,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sector: Option<S>,
        stamp_duty: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        spread_table: Option<S>,
    },
    Order {
        order_id: S,
        account: S,
        strategy: S,
        symbol: S,
        side: S,
        #[serde(deserialize_with = "decimal_text", serialize_with = "rust_decimal::serde::str::serialize")]
        qty: Decimal,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "decimal_text_opt",
            serialize_with = "rust_decimal::serde::str_option::serialize"
        )]
        price: Option<Decimal>,
        order_type: S,
        status: S,
        ts: S,
    },
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        symbol: Option<S>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        market: Option<S>,
        status: S,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<u8>,
        ts: S,
    },
}

/// A decimal as the contract gives it: a JSON string (plain or scientific). A JSON number is
/// refused: serde_json reads it as an f64 first (100000000000000000.01 came out
/// 100000000000000000).
fn decimal_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    d.deserialize_str(DecimalText)
}

/// [`decimal_text`], or `null` / absent.
fn decimal_text_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    d.deserialize_option(OptionalDecimalText)
}

/// A quote's price field when present: a price, or `null` (the field is emptied: no bid, no
/// ask, no last trade any more). An absent field stays `None` (unchanged).
fn price_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Decimal>>, D::Error> {
    decimal_text_opt(d).map(Some)
}

/// Writes a [`price_field`] back: the price as text, or `null` for an emptied field.
fn serialize_price_field<S: serde::Serializer>(v: &Option<Option<Decimal>>, s: S) -> Result<S::Ok, S::Error> {
    rust_decimal::serde::str_option::serialize(v.as_ref().unwrap_or(&None), s)
}

/// Reads the text where it lies (no `String` per field, which `Cow<str>` would allocate).
struct DecimalText;

impl<'de> serde::de::Visitor<'de> for DecimalText {
    type Value = Decimal;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a decimal number in a string")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Decimal, E> {
        parse_decimal(text)
    }
}

struct OptionalDecimalText;

impl<'de> serde::de::Visitor<'de> for OptionalDecimalText {
    type Value = Option<Decimal>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a decimal number in a string, or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Option<Decimal>, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Option<Decimal>, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<Decimal>, D::Error> {
        d.deserialize_str(DecimalText).map(Some)
    }
}

/// A decimal exactly as written: a value that does not fit the 96-bit mantissa and 28 places
/// is refused rather than rounded (trailing zeros past 28 places are exact and accepted).
fn parse_decimal<E: serde::de::Error>(text: &str) -> Result<Decimal, E> {
    let refuse = || E::invalid_value(serde::de::Unexpected::Str(text), &"a decimal number of at most 28 places");
    Decimal::from_str_exact(text).or_else(|_| {
        let trimmed = match text.split_once('.') {
            Some((_, fraction)) if fraction.bytes().all(|b| b.is_ascii_digit()) => text.trim_end_matches('0'),
            _ => text,
        };
        match Decimal::from_str_exact(trimmed.trim_end_matches('.')) {
            Ok(d) => Ok(d),
            Err(_) if !text.contains(['e', 'E']) => Err(refuse()),
            // Scientific notation: kept only when it converts back exactly.
            Err(_) => Decimal::from_scientific(text).ok().filter(|d| exact_scientific(text, *d)).ok_or_else(refuse),
        }
    })
}

/// `text` (m·10^e) equals `d` exactly: the digits of the mantissa, shifted, are `d`'s.
fn exact_scientific(text: &str, d: Decimal) -> bool {
    let Some((m, e)) = text.split_once(['e', 'E']) else { return false };
    let (Ok(m), Ok(e)) = (Decimal::from_str_exact(m), e.parse::<i32>()) else { return false };
    let ten = Decimal::TEN;
    let mut back = d;
    // d = m·10^e, checked without rounding: m scaled up, or d scaled up for a negative e.
    if e >= 0 {
        let mut m = m;
        for _ in 0..e {
            match m.checked_mul(ten) {
                Some(x) => m = x,
                None => return false,
            }
        }
        m == d
    } else {
        for _ in 0..(-e) {
            match back.checked_mul(ten) {
                Some(x) => back = x,
                None => return false,
            }
        }
        back == m
    }
}

fn bad(msg: impl Into<String>) -> Rejection {
    Rejection::Parse(msg.into())
}

fn ts(s: &str) -> Result<Ts, Rejection> {
    let t = DateTime::parse_from_rfc3339(s).map_err(|e| bad(format!("ts {s:?}: {e}")))?;
    t.timestamp_nanos_opt().ok_or_else(|| bad(format!("ts {s:?} out of range")))
}

fn symbol(s: &str) -> Result<Symbol, Rejection> {
    Symbol::parse(s).ok_or_else(|| bad(format!("symbol {s:?} is not a security code of up to 5 digits")))
}

fn side(s: &str) -> Result<Side, Rejection> {
    match s {
        "BUY" => Ok(Side::Buy),
        "SELL" => Ok(Side::Sell),
        _ => Err(bad(format!("side {s:?} is not BUY or SELL"))),
    }
}

fn shares(q: Decimal) -> Result<i64, Rejection> {
    if !q.fract().is_zero() {
        return Err(bad(format!("qty {q} is not a whole number of shares")));
    }
    i64::try_from(q).map_err(|_| bad(format!("qty {q} out of range")))
}

fn nonempty(field: &str, s: impl AsRef<str>) -> Result<smol_str::SmolStr, Rejection> {
    match s.as_ref() {
        "" => Err(bad(format!("{field} is empty"))),
        s => Ok(s.into()),
    }
}

/// Every field of every kind of line, each optional, text borrowed from the line. Deserializing
/// into it is direct (no buffering of the object, which serde's tagged enums need to find the tag
/// first, and no `String` per field), so it is the fast path of [`parse_line`]; a line it cannot
/// take whole (a field missing or of another type, a duplicate, an unknown `type`, text with
/// escapes, which cannot be borrowed) goes through [`Wire`], whose errors are the contract's.
#[derive(Deserialize)]
struct Flat<'a> {
    #[serde(rename = "type")]
    kind: Option<&'a str>,
    exec_id: Option<&'a str>,
    order_id: Option<&'a str>,
    account: Option<&'a str>,
    strategy: Option<&'a str>,
    symbol: Option<&'a str>,
    side: Option<&'a str>,
    #[serde(default, deserialize_with = "decimal_text_opt")]
    qty: Option<Decimal>,
    #[serde(default, deserialize_with = "decimal_text_opt")]
    price: Option<Decimal>,
    ts: Option<&'a str>,
    #[serde(default, deserialize_with = "decimal_text_opt")]
    commission: Option<Decimal>,
    /// Present or not, and then its value (`null` is not a flag: the general parse refuses it).
    #[serde(default, deserialize_with = "present")]
    odd_lot: Option<Option<bool>>,
    #[serde(default, deserialize_with = "price_field")]
    bid: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "price_field")]
    ask: Option<Option<Decimal>>,
    #[serde(default, deserialize_with = "price_field")]
    last: Option<Option<Decimal>>,
    name: Option<&'a str>,
    lot_size: Option<i64>,
    currency: Option<&'a str>,
    sector: Option<&'a str>,
    stamp_duty: Option<bool>,
    spread_table: Option<&'a str>,
    order_type: Option<&'a str>,
    status: Option<&'a str>,
    market: Option<&'a str>,
    session: Option<u8>,
}

/// A field that is present, whatever its value (`null` included).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl<'a> Flat<'a> {
    /// The line as its kind's [`Wire`], when every required field of that kind is here (`None`
    /// sends the line to the general parse, which names what is wrong).
    fn wire(self) -> Option<Wire<&'a str>> {
        Some(match self.kind? {
            "fill" => Wire::Fill {
                exec_id: self.exec_id?,
                order_id: self.order_id?,
                account: self.account?,
                strategy: self.strategy?,
                symbol: self.symbol?,
                side: self.side?,
                qty: self.qty?,
                price: self.price?,
                ts: self.ts?,
                commission: self.commission,
                odd_lot: match self.odd_lot {
                    None => false,
                    Some(flag) => flag?,
                },
            },
            "bust" => Wire::Bust { exec_id: self.exec_id?, ts: self.ts? },
            "quote" => {
                Wire::Quote { symbol: self.symbol?, ts: self.ts?, bid: self.bid, ask: self.ask, last: self.last }
            }
            "close" => Wire::Close { symbol: self.symbol?, ts: self.ts?, price: self.price? },
            "instrument" => Wire::Instrument {
                symbol: self.symbol?,
                name: self.name?,
                lot_size: self.lot_size?,
                currency: self.currency?,
                sector: self.sector,
                stamp_duty: self.stamp_duty?,
                spread_table: self.spread_table,
            },
            "order" => Wire::Order {
                order_id: self.order_id?,
                account: self.account?,
                strategy: self.strategy?,
                symbol: self.symbol?,
                side: self.side?,
                qty: self.qty?,
                price: self.price,
                order_type: self.order_type?,
                status: self.status?,
                ts: self.ts?,
            },
            "status" => Wire::Status {
                symbol: self.symbol,
                market: self.market,
                status: self.status?,
                session: self.session,
                ts: self.ts?,
            },
            _ => return None,
        })
    }
}

/// Parses one line of the contract. `seq` is the line's source position, kept on fills and orders.
///
/// Most lines take a fast path (`Flat`); whatever it cannot take whole goes through the general
/// parse, so a line gets the same event or the same error either way, with one difference: the
/// fast path skips the values of unknown fields without the general parse's checks (numbers
/// beyond the range of f64, lone surrogate escapes, nesting deeper than 128), so a line whose
/// only fault is there is now read (unknown fields are ignored) where it used to be refused.
pub fn parse_line(line: &str, seq: u64) -> Result<Input, Rejection> {
    // An object only: a struct would also read an array, by position.
    let object = line.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{');
    let fast = if object { serde_json::from_str::<Flat<'_>>(line).ok().and_then(Flat::wire) } else { None };
    match fast {
        Some(wire) => input(wire, seq),
        None => parse_general(line, seq),
    }
}

/// The general parse: serde's tagged enum, which reads the whole object and names what is wrong.
fn parse_general(line: &str, seq: u64) -> Result<Input, Rejection> {
    input(serde_json::from_str::<Wire>(line).map_err(|e| bad(e.to_string()))?, seq)
}

/// The event a well-formed line describes, once its fields pass the contract's checks.
fn input<S: AsRef<str> + Into<String>>(wire: Wire<S>, seq: u64) -> Result<Input, Rejection> {
    Ok(match wire {
        Wire::Fill {
            exec_id,
            order_id,
            account,
            strategy,
            symbol: s,
            side: sd,
            qty,
            price,
            ts: t,
            commission,
            odd_lot,
        } => Input::Fill(Fill {
            ts: ts(t.as_ref())?,
            exec_id: nonempty("exec_id", exec_id)?,
            order_id: order_id.as_ref().into(),
            key: PositionKey {
                account: nonempty("account", account)?,
                strategy: strategy.as_ref().into(),
                symbol: symbol(s.as_ref())?,
            },
            side: side(sd.as_ref())?,
            qty: shares(qty)?,
            price,
            commission,
            stamp_duty_exempt: false,
            odd_lot,
            source_seq: seq,
        }),
        Wire::Bust { exec_id, ts: t } => {
            Input::Bust(Bust { exec_id: nonempty("exec_id", exec_id)?, ts: ts(t.as_ref())? })
        }
        Wire::Quote { symbol: s, ts: t, bid, ask, last } => {
            if bid.is_none() && ask.is_none() && last.is_none() {
                return Err(bad("quote has none of bid, ask, last"));
            }
            let cleared = Cleared { bid: bid == Some(None), ask: ask == Some(None), last: last == Some(None) };
            let (bid, ask, last) = (bid.flatten(), ask.flatten(), last.flatten());
            Input::Quote(Quote { symbol: symbol(s.as_ref())?, ts: ts(t.as_ref())?, bid, ask, last, cleared, seq: 0 })
        }
        Wire::Close { symbol: s, ts: t, price } => {
            Input::Close(Close { symbol: symbol(s.as_ref())?, ts: ts(t.as_ref())?, price, seq: 0 })
        }
        Wire::Status { symbol: sym, market, status, session, ts: t } => {
            let (subject, allowed): (StatusSubject, &[&str]) = match (sym, market) {
                (Some(s), None) => (StatusSubject::Security(symbol(s.as_ref())?), &SECURITY_STATUSES),
                (None, Some(m)) => (StatusSubject::Market(nonempty("market", m)?), &MARKET_STATUSES),
                _ => return Err(bad("status needs exactly one of symbol, market")),
            };
            if !allowed.contains(&status.as_ref()) {
                return Err(bad(format!("status {:?} is not one of {}", status.as_ref(), allowed.join(", "))));
            }
            Input::Status(TradingStatus { ts: ts(t.as_ref())?, subject, status: status.as_ref().into(), session })
        }
        Wire::Instrument { symbol: s, name, lot_size, currency, sector, stamp_duty, spread_table } => {
            Input::Instrument(Instrument {
                symbol: symbol(s.as_ref())?,
                name: name.into(),
                lot_size,
                currency: currency.into(),
                sector: sector.map(Into::into),
                stamp_duty,
                spread_table: spread_table.map(|c| c.as_ref().into()),
            })
        }
        Wire::Order { order_id, account, strategy, symbol: s, side: sd, qty, price, order_type, status, ts: t } => {
            Input::Order(Order {
                ts: ts(t.as_ref())?,
                order_id: nonempty("order_id", order_id)?,
                key: PositionKey {
                    account: nonempty("account", account)?,
                    strategy: strategy.as_ref().into(),
                    symbol: symbol(s.as_ref())?,
                },
                side: side(sd.as_ref())?,
                qty: shares(qty)?,
                price,
                order_type: order_type.into(),
                status: OrderStatus::parse(status.as_ref())
                    .ok_or_else(|| bad(format!("status {:?} is unknown", status.as_ref())))?,
                source_seq: seq,
            })
        }
    })
}

/// Formats an event time as RFC 3339 in Hong Kong time, with as many fraction digits as needed.
pub fn format_ts(t: Ts) -> String {
    let dt: DateTime<FixedOffset> = DateTime::from_timestamp_nanos(t).with_timezone(&hkt());
    dt.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// Writes an input as one contract line (no trailing newline).
pub fn to_line(input: &Input) -> String {
    let wire = match input.clone() {
        Input::Fill(f) => Wire::Fill {
            exec_id: f.exec_id.into(),
            order_id: f.order_id.into(),
            account: f.key.account.into(),
            strategy: f.key.strategy.into(),
            symbol: f.key.symbol.to_string(),
            side: f.side.as_str().into(),
            qty: Decimal::from(f.qty),
            price: f.price,
            ts: format_ts(f.ts),
            commission: f.commission,
            odd_lot: f.odd_lot,
        },
        Input::Bust(b) => Wire::Bust { exec_id: b.exec_id.into(), ts: format_ts(b.ts) },
        Input::Quote(q) => {
            let field = |p: Option<Decimal>, cleared: bool| if cleared { Some(None) } else { p.map(Some) };
            Wire::Quote {
                symbol: q.symbol.to_string(),
                ts: format_ts(q.ts),
                bid: field(q.bid, q.cleared.bid),
                ask: field(q.ask, q.cleared.ask),
                last: field(q.last, q.cleared.last),
            }
        }
        Input::Close(c) => Wire::Close { symbol: c.symbol.to_string(), ts: format_ts(c.ts), price: c.price },
        Input::Status(st) => {
            let (symbol, market) = match st.subject {
                StatusSubject::Security(s) => (Some(s.to_string()), None),
                StatusSubject::Market(m) => (None, Some(m.to_string())),
            };
            Wire::Status { symbol, market, status: st.status.to_string(), session: st.session, ts: format_ts(st.ts) }
        }
        Input::Instrument(i) => Wire::Instrument {
            symbol: i.symbol.to_string(),
            name: i.name,
            lot_size: i.lot_size,
            currency: i.currency,
            sector: i.sector,
            stamp_duty: i.stamp_duty,
            spread_table: i.spread_table.map(|c| c.to_string()),
        },
        Input::Order(o) => Wire::Order {
            order_id: o.order_id.into(),
            account: o.key.account.into(),
            strategy: o.key.strategy.into(),
            symbol: o.key.symbol.to_string(),
            side: o.side.as_str().into(),
            qty: Decimal::from(o.qty),
            price: o.price,
            order_type: o.order_type,
            status: o.status.as_str().into(),
            ts: format_ts(o.ts),
        },
    };
    serde_json::to_string(&wire).expect("contract types always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn parses_the_documented_fill() {
        let line = r#"{"type":"fill","exec_id":"E1","order_id":"O1","account":"ACC1","strategy":"mm","symbol":"00700","side":"BUY","qty":"1000","price":"385.200","ts":"2026-01-02T09:30:00.5+08:00","commission":"12.50"}"#;
        let Input::Fill(f) = parse_line(line, 7).unwrap() else { panic!("not a fill") };
        assert_eq!(f.key.symbol, Symbol(700));
        assert_eq!(f.qty, 1000);
        assert_eq!(f.price, dec!(385.200));
        assert_eq!(f.commission, Some(dec!(12.50)));
        assert_eq!(f.ts, 1_767_317_400_500_000_000);
        assert_eq!(f.source_seq, 7);
        // and back
        assert_eq!(parse_line(&to_line(&Input::Fill(f.clone())), 7).unwrap(), Input::Fill(f));
    }

    #[test]
    fn a_null_price_empties_the_field_and_an_absent_one_leaves_it() {
        let line = r#"{"type":"quote","symbol":"00700","ts":"2026-01-02T09:30:00+08:00","bid":null,"ask":"385.200"}"#;
        let Input::Quote(q) = parse_line(line, 1).unwrap() else { panic!("not a quote") };
        assert_eq!((q.bid, q.ask, q.last), (None, Some(dec!(385.200)), None));
        assert_eq!(q.cleared, Cleared { bid: true, ask: false, last: false });
        let back = to_line(&Input::Quote(q.clone()));
        assert!(back.contains(r#""bid":null"#) && !back.contains("last"), "{back}");
        assert_eq!(parse_line(&back, 1).unwrap(), Input::Quote(q));
        // Only emptied fields is a quote; the general parse (escapes) reads it the same way.
        let only = r#"{"type":"quote","symbol":"00700","ts":"2026-01-02T09:30:00+08:00","last":null}"#;
        let escaped = only.replace("00700", r"\u00300700");
        let (Input::Quote(a), Input::Quote(b)) = (parse_line(only, 1).unwrap(), parse_line(&escaped, 1).unwrap())
        else {
            panic!("not quotes")
        };
        assert_eq!(a.cleared, Cleared { last: true, ..Cleared::default() });
        assert_eq!(a, b);
    }

    #[test]
    fn parses_trading_status_of_a_security_and_a_market() {
        let halt = r#"{"type":"status","symbol":"00700","status":"halted","ts":"2026-01-02T10:15:00+08:00"}"#;
        let Input::Status(s) = parse_line(halt, 1).unwrap() else { panic!("not a status") };
        assert_eq!(
            (s.subject.clone(), s.status.as_str(), s.session),
            (StatusSubject::Security(Symbol(700)), "halted", None)
        );
        assert_eq!(parse_line(&to_line(&Input::Status(s.clone())), 1).unwrap(), Input::Status(s));
        let open = r#"{"type":"status","market":"MAIN","status":"open","session":3,"ts":"2026-01-02T09:30:00+08:00"}"#;
        let Input::Status(m) = parse_line(open, 2).unwrap() else { panic!("not a status") };
        assert_eq!((m.subject.clone(), m.session), (StatusSubject::Market("MAIN".into()), Some(3)));
        assert_eq!(parse_line(&to_line(&Input::Status(m.clone())), 2).unwrap(), Input::Status(m));
        for (line, why) in [
            (
                r#"{"type":"status","symbol":"00700","market":"MAIN","status":"open","ts":"2026-01-02T09:30:00+08:00"}"#,
                "exactly one",
            ),
            (r#"{"type":"status","status":"open","ts":"2026-01-02T09:30:00+08:00"}"#, "exactly one"),
            (
                r#"{"type":"status","symbol":"00700","status":"open","ts":"2026-01-02T09:30:00+08:00"}"#,
                "trading, halted",
            ),
            (r#"{"type":"status","market":"MAIN","status":"lunch","ts":"2026-01-02T09:30:00+08:00"}"#, "pre_open"),
        ] {
            let e = parse_line(line, 0).unwrap_err().to_string();
            assert!(e.contains(why), "{line}: {e}");
        }
    }

    #[test]
    fn the_fast_path_reads_every_line_as_the_general_parse_does() {
        let day = crate::generate::generate(&crate::generate::GenerateConfig {
            fills: 3_000,
            quotes: 3_000,
            invalid_ratio: 0.05,
            ..Default::default()
        })
        .unwrap();
        let ts = r#""ts":"2026-01-02T09:30:00.5+08:00""#;
        let fill = r#""type":"fill","exec_id":"E1","order_id":"O1","account":"A","strategy":"S","symbol":"00700","side":"BUY","qty":"100","price":"385.2""#;
        let edges = [
            format!(r#"{{{fill},{ts},"odd_lot":true,"commission":"1.5"}}"#),
            format!(r#"{{{fill},{ts},"commission":null,"note":{{"x":[1,2]}}}}"#),
            format!(r#"{{{fill},{ts},"bid":true,"lot_size":"x"}}"#),
            format!(r#"{{{fill},{ts},"qty":"200"}}"#),
            format!(r#"{{{fill},{ts},"type":"bust"}}"#),
            format!(r#"{{"type":"Fill",{}}}"#, &fill[14..]),
            format!(r#"{{{},{ts},"account":"A\u00e9\"q"}}"#, fill.replace(r#""account":"A","#, "")),
            format!(r#"{{{fill},{ts},"qty":100,"price":385.2}}"#),
            format!(r#"{{{fill},{ts},"account":""}}"#),
            format!(r#"{{"type":"bust","exec_id":"E1",{ts}}}"#),
            format!(r#"{{"type":"quote","symbol":"00700",{ts},"bid":"1.00","last":null}}"#),
            format!(r#"{{"type":"quote","symbol":"00700",{ts}}}"#),
            format!(r#"{{"type":"close","symbol":"700",{ts},"price":"3"}}"#),
            r#"{"type":"instrument","symbol":"00700","name":"TENCENT","lot_size":100,"currency":"HKD","stamp_duty":true,"sector":null,"spread_table":"A"}"#.to_string(),
            r#"{"type":"instrument","symbol":"00700","name":"TENCENT","lot_size":100,"currency":"HKD"}"#.to_string(),
            format!(r#"{{"type":"order","order_id":"O1","account":"A","strategy":"S","symbol":"00700","side":"SELL","qty":"100","order_type":"limit","status":"new",{ts}}}"#),
            format!(r#"{{"type":"order","order_id":"O1","account":"A","strategy":"S","symbol":"00700","side":"SELL","qty":"100","order_type":"limit","status":"gone",{ts}}}"#),
            format!(r#"{{"type":"status","market":"MAIN","status":"open","session":3,{ts}}}"#),
            format!(r#"{{"type":"status","symbol":"00700","status":"halted","session":300,{ts}}}"#),
            r#"{"type":null}"#.to_string(),
            "[]".to_string(),
            format!(r#"{{{fill},{ts},"odd_lot":null}}"#),
            // A struct reads an array by position; the contract is objects only.
            format!(r#"["bust","E1",null,null,null,null,null,null,null,"2026-01-02T09:30:00+08:00"{}]"#, ",null".repeat(15)),
            format!(r#"  {{{fill},{ts}}}"#),
        ];
        let mut fast = 0;
        for (i, line) in day.iter().chain(edges.iter()).enumerate() {
            let general = parse_general(line, i as u64);
            assert_eq!(parse_line(line, i as u64), general, "{line}");
            fast += usize::from(serde_json::from_str::<Flat<'_>>(line).ok().and_then(Flat::wire).is_some());
        }
        // Most lines take the fast path (the rest show that falling back changes nothing).
        assert!(fast > day.len() * 9 / 10, "{fast} of {} lines on the fast path", day.len());
        // Text with escapes is read whole through the fallback.
        let Ok(Input::Fill(f)) = parse_line(&edges[6], 0) else { panic!("{}", edges[6]) };
        assert_eq!(f.key.account, "A\u{e9}\"q");
        for refused in [&edges[20], &edges[21]] {
            assert!(parse_line(refused, 0).is_err(), "{refused}");
        }
    }

    #[test]
    fn the_values_of_unknown_fields_are_skipped_unchecked() {
        // The one documented difference from the general parse: it refused these.
        for unknown in [r#""x":1e400"#, r#""x":"\ud800""#] {
            let line = format!(r#"{{"type":"bust","exec_id":"E1","ts":"2026-01-02T09:30:00+08:00",{unknown}}}"#);
            assert!(parse_general(&line, 0).is_err(), "{line}");
            assert!(matches!(parse_line(&line, 0), Ok(Input::Bust(_))), "{line}");
        }
    }

    #[test]
    fn rejects_what_does_not_fit_the_contract() {
        for (line, why) in [
            ("{not json", "key must be a string"),
            (r#"{"type":"fill","exec_id":"E1"}"#, "missing field"),
            (r#"{"type":"bust","exec_id":"E1","ts":"yesterday"}"#, "ts \"yesterday\""),
            (r#"{"type":"quote","symbol":"00700","ts":"2026-01-02T09:30:00+08:00"}"#, "none of bid"),
            (r#"{"type":"close","symbol":"ABC","ts":"2026-01-02T16:10:00+08:00","price":"1"}"#, "security code"),
            (r#"{"type":"teleport"}"#, "unknown variant"),
            // Decimals are strings: a JSON number would go through f64 (100000000000000000.01
            // became 100000000000000000).
            (
                r#"{"type":"close","symbol":"00700","ts":"2026-01-02T16:10:00+08:00","price":385.2}"#,
                "invalid type: floating point",
            ),
            (
                r#"{"type":"quote","symbol":"00700","ts":"2026-01-02T16:10:00+08:00","bid":100000000000000000.01}"#,
                "invalid type: floating point",
            ),
        ] {
            let err = parse_line(line, 1).unwrap_err();
            assert!(err.to_string().contains(why), "{line}: {err}");
            assert_eq!(err.code(), "parse");
        }
        let odd = r#"{"type":"fill","exec_id":"E","order_id":"O","account":"A","strategy":"S","symbol":"5","side":"SELL","qty":"10.5","price":"60","ts":"2026-01-02T09:30:00+08:00"}"#;
        assert!(parse_line(odd, 1).unwrap_err().to_string().contains("whole number"));
    }

    #[test]
    fn a_decimal_is_read_exactly_or_refused() {
        let close = |p: &str| {
            let line = format!(r#"{{"type":"close","symbol":"00700","ts":"2026-01-02T16:10:00+08:00","price":"{p}"}}"#);
            match parse_line(&line, 1) {
                Ok(Input::Close(c)) => Ok(c.price),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(close("385.2"), Ok(dec!(385.2)));
        assert_eq!(close("385.200"), Ok(dec!(385.200)));
        // Trailing zeros past 28 places are exact.
        assert_eq!(close("1.000000000000000000000000000000000"), Ok(dec!(1)));
        assert_eq!(close("3.85e2"), Ok(dec!(385)));
        assert_eq!(close("3852E-1"), Ok(dec!(385.2)));
        // More digits than 96 bits and 28 places hold: refused, not rounded (both parse paths).
        for p in ["985.20000000000000000000000001", "79228162514264337593543950336", "9.8765432109876543210987654321e5"]
        {
            let err = close(p).unwrap_err();
            assert!(err.contains("at most 28 places"), "{p}: {err}");
            let escaped =
                format!(r#"{{"type":"close","symbol":"\u00300700","ts":"2026-01-02T16:10:00+08:00","price":"{p}"}}"#);
            assert!(parse_line(&escaped, 1).is_err(), "{p}");
        }
    }
}
