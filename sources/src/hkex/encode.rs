//! An OMD-C encoder, for tests, the sample-day generator and the local retransmission server:
//! the inverse of [`super::wire`]. The exchange is the only real producer of this format.

use super::wire::{msg_type, Message, PacketHeader, Price, MAX_PACKET, PACKET_HEADER};

/// Appends one message's bytes (header included) to `out`.
pub fn encode_message(m: &Message<'_>, out: &mut Vec<u8>) {
    use msg_type::*;
    let start = out.len();
    let put_u16 = |out: &mut Vec<u8>, v: u16| out.extend_from_slice(&v.to_le_bytes());
    let put_u32 = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
    let put_u64 = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(&v.to_le_bytes());
    let put_i64 = |out: &mut Vec<u8>, v: Option<i64>| out.extend_from_slice(&v.unwrap_or(i64::MIN).to_le_bytes());
    let header = |out: &mut Vec<u8>, t: u16| {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&t.to_le_bytes());
    };
    match *m {
        Message::SequenceReset { new_seq_no } => {
            header(out, SEQUENCE_RESET);
            put_u32(out, new_seq_no);
        }
        Message::SecurityDefinition(d) => {
            out.extend_from_slice(d.bytes());
            return; // carries its own size
        }
        Message::TradingSessionStatus { market_code, sub_id, status, control_flag, start: s, end } => {
            header(out, TRADING_SESSION_STATUS);
            fixed(out, market_code, 4);
            out.extend_from_slice(&[0, sub_id, status, control_flag, 0, 0, 0, 0]);
            put_u64(out, s);
            put_u64(out, end);
        }
        Message::SecurityStatus { security_code, suspension } => {
            header(out, SECURITY_STATUS);
            put_u32(out, security_code);
            out.extend_from_slice(&[suspension, 0, 0, 0]);
        }
        Message::AddOrder { security_code, order_id, price, quantity, side, order_type, position } => {
            header(out, ADD_ORDER);
            put_u32(out, security_code);
            put_u64(out, order_id);
            put_u32(out, price.0 as u32);
            put_u32(out, quantity);
            put_u16(out, side.to_wire());
            out.extend_from_slice(&[order_type, 0]);
            put_u32(out, position as u32);
        }
        Message::ModifyOrder { security_code, order_id, quantity, side, position } => {
            header(out, MODIFY_ORDER);
            put_u32(out, security_code);
            put_u64(out, order_id);
            put_u32(out, quantity);
            put_u16(out, side.to_wire());
            out.extend_from_slice(&[0, 0]);
            put_u32(out, position as u32);
        }
        Message::DeleteOrder { security_code, order_id, side } => {
            header(out, DELETE_ORDER);
            put_u32(out, security_code);
            put_u64(out, order_id);
            put_u16(out, side.to_wire());
            out.extend_from_slice(&[0, 0]);
        }
        Message::AggregateOrderBookUpdate { security_code, entries } => {
            header(out, AGGREGATE_ORDER_BOOK_UPDATE);
            put_u32(out, security_code);
            out.extend_from_slice(&[0, 0, 0, entries.len() as u8]);
            for e in entries.iter() {
                put_u64(out, e.quantity);
                put_u32(out, e.price.0 as u32);
                put_u32(out, e.orders);
                put_u16(out, e.side.to_wire());
                out.extend_from_slice(&[e.level, e.action, 0, 0, 0, 0]);
            }
        }
        Message::Trade { security_code, trade_id, price, quantity, trade_type, trade_time } => {
            header(out, TRADE);
            put_u32(out, security_code);
            put_u32(out, trade_id);
            put_u32(out, price.0 as u32);
            put_u32(out, quantity);
            put_u16(out, trade_type as u16);
            out.extend_from_slice(&[0, 0]);
            put_u64(out, trade_time);
        }
        Message::TradeCancel { security_code, trade_id } => {
            header(out, TRADE_CANCEL);
            put_u32(out, security_code);
            put_u32(out, trade_id);
        }
        Message::TradeTicker { security_code, ticker_id, price, quantity, trade_time, trade_type, cancel } => {
            header(out, TRADE_TICKER);
            put_u32(out, security_code);
            put_u32(out, ticker_id);
            put_u32(out, price.0 as u32);
            put_u64(out, quantity);
            put_u64(out, trade_time);
            put_u16(out, trade_type as u16);
            out.extend_from_slice(&[if cancel { b'Y' } else { b'N' }, 0]);
        }
        Message::NominalPrice { security_code, price } => {
            header(out, NOMINAL_PRICE);
            put_u32(out, security_code);
            put_u32(out, price.0 as u32);
        }
        Message::ClosingPrice { security_code, price, trades } => {
            header(out, CLOSING_PRICE);
            put_u32(out, security_code);
            put_u32(out, price.0 as u32);
            put_u32(out, trades);
        }
        Message::Statistics {
            security_code,
            shares_traded,
            turnover,
            high,
            low,
            last,
            vwap,
            short_sell_shares,
            short_sell_turnover,
        } => {
            header(out, STATISTICS);
            put_u32(out, security_code);
            put_u64(out, shares_traded);
            put_i64(out, turnover);
            for p in [high, low, last, vwap] {
                put_u32(out, p.0 as u32);
            }
            put_u32(out, short_sell_shares);
            put_i64(out, short_sell_turnover);
        }
        Message::Logon { username } => {
            header(out, LOGON);
            fixed(out, username, 12);
        }
        Message::LogonResponse { session_status } => {
            header(out, LOGON_RESPONSE);
            out.extend_from_slice(&[session_status, 0, 0, 0]);
        }
        Message::RetransmissionRequest { channel_id, begin, end } => {
            header(out, RETRANSMISSION_REQUEST);
            put_u16(out, channel_id);
            out.extend_from_slice(&[0, 0]);
            put_u32(out, begin);
            put_u32(out, end);
        }
        Message::RetransmissionResponse { channel_id, status, begin, end } => {
            header(out, RETRANSMISSION_RESPONSE);
            put_u16(out, channel_id);
            out.extend_from_slice(&[status, 0]);
            put_u32(out, begin);
            put_u32(out, end);
        }
        Message::RefreshComplete { last_seq_num } => {
            header(out, REFRESH_COMPLETE);
            put_u32(out, last_seq_num);
        }
        Message::Unknown { bytes, .. } => {
            out.extend_from_slice(bytes);
            return;
        }
    }
    let size = (out.len() - start) as u16;
    out[start..start + 2].copy_from_slice(&size.to_le_bytes());
}

/// Appends `s` padded with spaces (or cut) to `n` bytes.
pub fn fixed(out: &mut Vec<u8>, s: &[u8], n: usize) {
    let k = s.len().min(n);
    out.extend_from_slice(&s[..k]);
    out.resize(out.len() + (n - k), b' ');
}

/// Appends `s` as UTF-16LE, NUL-padded (or cut) to `n` bytes.
pub fn utf16_fixed(out: &mut Vec<u8>, s: &str, n: usize) {
    let start = out.len();
    for u in s.encode_utf16() {
        if out.len() + 2 > start + n {
            break;
        }
        out.extend_from_slice(&u.to_le_bytes());
    }
    out.resize(start + n, 0);
}

/// The fields of a Security Definition (message 11), to encode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityDefinitionSpec {
    /// SecurityCode.
    pub security_code: u32,
    /// MarketCode.
    pub market_code: String,
    /// ISINCode.
    pub isin: String,
    /// InstrumentType.
    pub instrument_type: String,
    /// ProductType.
    pub product_type: u8,
    /// SpreadTableCode.
    pub spread_table_code: String,
    /// SecurityShortName.
    pub short_name: String,
    /// CurrencyCode.
    pub currency: String,
    /// NameGCCS.
    pub name_gccs: String,
    /// NameGB.
    pub name_gb: String,
    /// LotSize.
    pub lot_size: u32,
    /// PreviousClosingPrice.
    pub previous_close: Price,
    /// VCM, short-sell, CAS, CCASS and dummy-security flags, in wire order.
    pub flags: [u8; 5],
    /// StampDutyFlag.
    pub stamp_duty: bool,
    /// ListingDate.
    pub listing_date: u32,
    /// DelistingDate.
    pub delisting_date: u32,
    /// FreeText.
    pub free_text: String,
    /// Underlying security codes.
    pub underlyings: Vec<u32>,
}

impl SecurityDefinitionSpec {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(544 + 8 * self.underlyings.len());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&msg_type::SECURITY_DEFINITION.to_le_bytes());
        out.extend_from_slice(&self.security_code.to_le_bytes());
        fixed(&mut out, self.market_code.as_bytes(), 4);
        fixed(&mut out, self.isin.as_bytes(), 12);
        fixed(&mut out, self.instrument_type.as_bytes(), 4);
        out.extend_from_slice(&[self.product_type, 0]);
        fixed(&mut out, self.spread_table_code.as_bytes(), 2);
        fixed(&mut out, self.short_name.as_bytes(), 40);
        fixed(&mut out, self.currency.as_bytes(), 3);
        utf16_fixed(&mut out, &self.name_gccs, 60);
        utf16_fixed(&mut out, &self.name_gb, 60);
        out.extend_from_slice(&self.lot_size.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.previous_close.0.to_le_bytes());
        out.extend_from_slice(&self.flags);
        out.push(0);
        out.push(if self.stamp_duty { b'Y' } else { b'N' });
        out.push(0);
        out.extend_from_slice(&self.listing_date.to_le_bytes());
        out.extend_from_slice(&self.delisting_date.to_le_bytes());
        fixed(&mut out, self.free_text.as_bytes(), 38);
        out.resize(542, 0);
        out.extend_from_slice(&(self.underlyings.len() as u16).to_le_bytes());
        for u in &self.underlyings {
            out.extend_from_slice(&u.to_le_bytes());
            out.extend_from_slice(&[0; 4]);
        }
        let size = out.len() as u16;
        out[0..2].copy_from_slice(&size.to_le_bytes());
        out
    }
}

/// A market code as the 4 bytes of MarketCode (space-padded, cut at 4).
pub fn market_code(market: &str) -> [u8; 4] {
    let mut code = [b' '; 4];
    for (c, b) in code.iter_mut().zip(market.bytes()) {
        *c = b;
    }
    code
}

/// Packs messages into packets of at most [`MAX_PACKET`] bytes with consecutive sequence numbers.
pub struct PacketWriter {
    next_seq: u32,
    send_time: u64,
    buf: Vec<u8>,
    count: u8,
    packets: Vec<Vec<u8>>,
}

impl PacketWriter {
    /// The first message will carry `first_seq`.
    pub fn new(first_seq: u32) -> PacketWriter {
        PacketWriter { next_seq: first_seq, send_time: 0, buf: Vec::new(), count: 0, packets: Vec::new() }
    }

    /// Sequence number the next message gets.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// Adds a message sent at `send_time` (a new packet starts when the time changes or the
    /// message does not fit).
    pub fn push(&mut self, m: &Message<'_>, send_time: u64) {
        let mut bytes = Vec::new();
        encode_message(m, &mut bytes);
        if self.count > 0
            && (send_time != self.send_time || self.buf.len() + bytes.len() > MAX_PACKET || self.count == u8::MAX)
        {
            self.cut();
        }
        if self.count == 0 {
            self.send_time = send_time;
            self.buf.clear();
            self.buf.resize(PACKET_HEADER, 0);
        }
        self.buf.extend_from_slice(&bytes);
        self.count += 1;
    }

    /// Closes the packet being filled.
    pub fn cut(&mut self) {
        if self.count == 0 {
            return;
        }
        let header = PacketHeader {
            size: self.buf.len() as u16,
            msg_count: self.count,
            seq_num: self.next_seq,
            send_time: self.send_time,
        };
        write_header(&mut self.buf[..PACKET_HEADER], &header);
        self.packets.push(std::mem::take(&mut self.buf));
        self.next_seq = self.next_seq.wrapping_add(u32::from(self.count));
        self.count = 0;
    }

    /// A heartbeat packet naming the last sequence number sent.
    pub fn heartbeat(&mut self, send_time: u64) {
        self.cut();
        let mut b = vec![0; PACKET_HEADER];
        let h = PacketHeader {
            size: PACKET_HEADER as u16,
            msg_count: 0,
            seq_num: self.next_seq.wrapping_sub(1),
            send_time,
        };
        write_header(&mut b, &h);
        self.packets.push(b);
    }

    /// Every packet so far (the one being filled is closed).
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.cut();
        self.packets
    }

    /// Takes the packets closed so far.
    pub fn take(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.packets)
    }
}

/// Writes a packet header into the first 16 bytes of `b`.
pub fn write_header(b: &mut [u8], h: &PacketHeader) {
    b[0..2].copy_from_slice(&h.size.to_le_bytes());
    b[2] = h.msg_count;
    b[3] = 0;
    b[4..8].copy_from_slice(&h.seq_num.to_le_bytes());
    b[8..16].copy_from_slice(&h.send_time.to_le_bytes());
}
