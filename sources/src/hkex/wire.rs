//! The OMD-C wire format: packet and message headers, and every message Harbour reads, decoded
//! zero-copy from a borrowed packet (strings stay `&[u8]` views into it).
//!
//! Layouts: HKEX "OMD-C Interface Specifications – Binary Protocol" v1.45 (summarised in
//! ../shared/HKEX.md §1). Integers are little-endian; prices are `i32` with 3 implied decimals
//! ([`Price`]); Int64 null is `0x8000000000000000`.
//!
//! Decoding never panics: sizes that overrun the packet, a `MsgCount` that disagrees with the
//! bytes, or a message shorter than its type's layout are [`DecodeError`]s naming the byte offset.
//! Unknown message types are returned as [`Message::Unknown`] (skipped by their size).

use rust_decimal::Decimal;

/// Largest packet the exchange sends.
pub const MAX_PACKET: usize = 1500;
/// Packet header size.
pub const PACKET_HEADER: usize = 16;
/// Int64 null value.
pub const NULL_I64: i64 = i64::MIN;

/// What is wrong with a packet, and where (offsets are from the packet start).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than a packet header.
    #[error("packet of {len} bytes is shorter than the 16-byte packet header")]
    ShortPacket {
        /// Bytes received.
        len: usize,
    },
    /// `PktSize` disagrees with the bytes received.
    #[error("PktSize {size} disagrees with the {len} bytes received")]
    PacketSize {
        /// `PktSize`.
        size: usize,
        /// Bytes received.
        len: usize,
    },
    /// A message header or body runs past the end of the packet.
    #[error("message at offset {offset}: size {size} overruns the packet ({left} bytes left)")]
    Overrun {
        /// Offset of the message.
        offset: usize,
        /// Its `MsgSize` (or the 4 bytes of a header that does not fit).
        size: usize,
        /// Bytes left in the packet from `offset`.
        left: usize,
    },
    /// A message is shorter than its type's layout (or than its own header).
    #[error("message at offset {offset}: type {msg_type} needs {need} bytes, MsgSize is {size}")]
    TooShort {
        /// Offset of the message.
        offset: usize,
        /// `MsgType`.
        msg_type: u16,
        /// `MsgSize`.
        size: usize,
        /// Bytes the layout needs.
        need: usize,
    },
    /// `MsgCount` says more or fewer messages than the packet holds.
    #[error("MsgCount {count} but the packet holds {found} message(s) (bytes end at offset {offset})")]
    Count {
        /// `MsgCount`.
        count: u8,
        /// Messages found before the bytes ran out (or where `MsgCount` was reached).
        found: usize,
        /// Where the count and the bytes disagree.
        offset: usize,
    },
}

/// A price with 3 implied decimals, exactly as on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(pub i32);

impl Price {
    /// The exact decimal (raw 385200 is 385.200).
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(i64::from(self.0), 3)
    }

    /// From an exact decimal with at most 3 decimals that fits; `None` otherwise.
    pub fn from_decimal(d: Decimal) -> Option<Price> {
        let scaled = d.checked_mul(Decimal::new(1000, 0))?;
        if !scaled.fract().is_zero() {
            return None;
        }
        i32::try_from(scaled).ok().map(Price)
    }
}

/// The 16-byte packet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketHeader {
    /// Packet size including the header.
    pub size: u16,
    /// Messages in the packet (0: heartbeat).
    pub msg_count: u8,
    /// Sequence number of the first message (of a heartbeat: the last message sent).
    pub seq_num: u32,
    /// Send time, nanoseconds since the Unix epoch (UTC).
    pub send_time: u64,
}

/// Order book side (`Side` on the wire: 0 bid, 1 offer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BookSide {
    /// Bid (0).
    Bid,
    /// Offer (1).
    Offer,
    /// Any other value, kept.
    Other(u16),
}

impl BookSide {
    fn from_wire(v: u16) -> BookSide {
        match v {
            0 => BookSide::Bid,
            1 => BookSide::Offer,
            v => BookSide::Other(v),
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> u16 {
        match self {
            BookSide::Bid => 0,
            BookSide::Offer => 1,
            BookSide::Other(v) => v,
        }
    }
}

/// Message 11, Security Definition: a view into the packet (fixed part and underlyings).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecurityDefinition<'a> {
    bytes: &'a [u8],
}

impl std::fmt::Debug for SecurityDefinition<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityDefinition")
            .field("security_code", &self.security_code())
            .field("market_code", &ascii(self.market_code()))
            .field("short_name", &ascii(self.short_name()))
            .field("lot_size", &self.lot_size())
            .field("currency", &ascii(self.currency_code()))
            .field("stamp_duty", &self.stamp_duty())
            .finish_non_exhaustive()
    }
}

/// ASCII field without its space (or NUL) padding.
pub fn ascii(field: &[u8]) -> &str {
    let end = field.iter().rposition(|b| *b != b' ' && *b != 0).map_or(0, |i| i + 1);
    std::str::from_utf8(&field[..end]).unwrap_or("")
}

/// UTF-16LE field without its NUL/space padding; unpaired surrogates become U+FFFD.
pub fn utf16le(field: &[u8]) -> String {
    let units = field.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    let s: String = char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect();
    s.trim_end_matches(['\0', ' ']).to_owned()
}

impl<'a> SecurityDefinition<'a> {
    /// Fixed part of the layout.
    pub const FIXED: usize = 544;

    /// The message's bytes (header included).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// SecurityCode.
    pub fn security_code(&self) -> u32 {
        u32_at(self.bytes, 4)
    }
    /// MarketCode (MAIN, GEM, NASD, ETS).
    pub fn market_code(&self) -> &'a [u8] {
        &self.bytes[8..12]
    }
    /// ISINCode.
    pub fn isin(&self) -> &'a [u8] {
        &self.bytes[12..24]
    }
    /// InstrumentType (EQTY, TRST, WRNT, BOND).
    pub fn instrument_type(&self) -> &'a [u8] {
        &self.bytes[24..28]
    }
    /// ProductType.
    pub fn product_type(&self) -> u8 {
        self.bytes[28]
    }
    /// SpreadTableCode.
    pub fn spread_table_code(&self) -> &'a [u8] {
        &self.bytes[30..32]
    }
    /// SecurityShortName.
    pub fn short_name(&self) -> &'a [u8] {
        &self.bytes[32..72]
    }
    /// CurrencyCode.
    pub fn currency_code(&self) -> &'a [u8] {
        &self.bytes[72..75]
    }
    /// NameGCCS (traditional Chinese, UTF-16LE).
    pub fn name_gccs(&self) -> &'a [u8] {
        &self.bytes[75..135]
    }
    /// NameGB (simplified Chinese, UTF-16LE).
    pub fn name_gb(&self) -> &'a [u8] {
        &self.bytes[135..195]
    }
    /// LotSize.
    pub fn lot_size(&self) -> u32 {
        u32_at(self.bytes, 195)
    }
    /// PreviousClosingPrice.
    pub fn previous_closing_price(&self) -> Price {
        Price(i32_at(self.bytes, 203))
    }
    /// VCMFlag.
    pub fn vcm_flag(&self) -> u8 {
        self.bytes[207]
    }
    /// ShortSellFlag.
    pub fn short_sell_flag(&self) -> u8 {
        self.bytes[208]
    }
    /// CASFlag.
    pub fn cas_flag(&self) -> u8 {
        self.bytes[209]
    }
    /// CCASSFlag.
    pub fn ccass_flag(&self) -> u8 {
        self.bytes[210]
    }
    /// DummySecurityFlag.
    pub fn dummy_security_flag(&self) -> u8 {
        self.bytes[211]
    }
    /// StampDutyFlag: stamp duty applies ('Y').
    pub fn stamp_duty(&self) -> bool {
        self.bytes[213] == b'Y'
    }
    /// ListingDate (YYYYMMDD).
    pub fn listing_date(&self) -> u32 {
        u32_at(self.bytes, 215)
    }
    /// DelistingDate (YYYYMMDD).
    pub fn delisting_date(&self) -> u32 {
        u32_at(self.bytes, 219)
    }
    /// FreeText.
    pub fn free_text(&self) -> &'a [u8] {
        &self.bytes[223..261]
    }
    /// Underlying security codes.
    pub fn underlyings(&self) -> impl Iterator<Item = u32> + 'a {
        let n = usize::from(u16_at(self.bytes, 542));
        let bytes = self.bytes;
        (0..n).map(move |i| u32_at(bytes, Self::FIXED + 8 * i))
    }
}

/// One entry of message 53.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BookEntry {
    /// AggregateQuantity.
    pub quantity: u64,
    /// Price.
    pub price: Price,
    /// NumberOfOrders.
    pub orders: u32,
    /// Side.
    pub side: BookSide,
    /// PriceLevel, 1 = best.
    pub level: u8,
    /// UpdateAction: 0 new, 1 change, 2 delete, 74 clear book.
    pub action: u8,
}

/// UpdateAction values of message 53.
pub mod action {
    /// Insert a level.
    pub const NEW: u8 = 0;
    /// Change a level.
    pub const CHANGE: u8 = 1;
    /// Delete a level.
    pub const DELETE: u8 = 2;
    /// Clear the whole book.
    pub const CLEAR: u8 = 74;
}

/// Message 53's entries, read in place.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BookEntries<'a> {
    bytes: &'a [u8],
}

impl std::fmt::Debug for BookEntries<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> BookEntries<'a> {
    /// Entry size.
    pub const SIZE: usize = 24;

    /// Entries laid out on the wire (`None` unless a whole number of entries, at most 255).
    pub fn from_bytes(bytes: &'a [u8]) -> Option<BookEntries<'a>> {
        (bytes.len().is_multiple_of(Self::SIZE) && bytes.len() / Self::SIZE <= 255).then_some(BookEntries { bytes })
    }

    /// Lays `entries` out as on the wire.
    pub fn encode(entries: &[BookEntry]) -> Vec<u8> {
        let mut out = Vec::with_capacity(entries.len() * Self::SIZE);
        for e in entries {
            out.extend_from_slice(&e.quantity.to_le_bytes());
            out.extend_from_slice(&e.price.0.to_le_bytes());
            out.extend_from_slice(&e.orders.to_le_bytes());
            out.extend_from_slice(&e.side.to_wire().to_le_bytes());
            out.extend_from_slice(&[e.level, e.action, 0, 0, 0, 0]);
        }
        out
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.bytes.len() / Self::SIZE
    }
    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = BookEntry> + 'a {
        self.bytes.chunks_exact(Self::SIZE).map(|e| BookEntry {
            quantity: u64_at(e, 0),
            price: Price(i32_at(e, 8)),
            orders: u32_at(e, 12),
            side: BookSide::from_wire(u16_at(e, 16)),
            level: e[18],
            action: e[19],
        })
    }
}

/// One OMD-C message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// 100: the next message has sequence number `new_seq_no`.
    SequenceReset {
        /// NewSeqNo.
        new_seq_no: u32,
    },
    /// 11.
    SecurityDefinition(SecurityDefinition<'a>),
    /// 20.
    TradingSessionStatus {
        /// MarketCode.
        market_code: &'a [u8],
        /// TradingSessionSubID.
        sub_id: u8,
        /// TradingSesStatus.
        status: u8,
        /// TradingSesControlFlag.
        control_flag: u8,
        /// StartDateTime (ns).
        start: u64,
        /// EndDateTime (ns).
        end: u64,
    },
    /// 21: 2 halt, 3 resume.
    SecurityStatus {
        /// SecurityCode.
        security_code: u32,
        /// SuspensionIndicator.
        suspension: u8,
    },
    /// 30.
    AddOrder {
        /// SecurityCode.
        security_code: u32,
        /// OrderId.
        order_id: u64,
        /// Price.
        price: Price,
        /// Quantity.
        quantity: u32,
        /// Side.
        side: BookSide,
        /// OrderType ('1' market, '2' limit).
        order_type: u8,
        /// OrderBookPosition.
        position: i32,
    },
    /// 31.
    ModifyOrder {
        /// SecurityCode.
        security_code: u32,
        /// OrderId.
        order_id: u64,
        /// Quantity (the new remaining quantity).
        quantity: u32,
        /// Side.
        side: BookSide,
        /// OrderBookPosition.
        position: i32,
    },
    /// 32.
    DeleteOrder {
        /// SecurityCode.
        security_code: u32,
        /// OrderId.
        order_id: u64,
        /// Side.
        side: BookSide,
    },
    /// 53.
    AggregateOrderBookUpdate {
        /// SecurityCode.
        security_code: u32,
        /// The entries.
        entries: BookEntries<'a>,
    },
    /// 50.
    Trade {
        /// SecurityCode.
        security_code: u32,
        /// TradeID.
        trade_id: u32,
        /// Price.
        price: Price,
        /// Quantity.
        quantity: u32,
        /// TrdType.
        trade_type: i16,
        /// TradeTime (ns).
        trade_time: u64,
    },
    /// 51.
    TradeCancel {
        /// SecurityCode.
        security_code: u32,
        /// TradeID.
        trade_id: u32,
    },
    /// 52.
    TradeTicker {
        /// SecurityCode.
        security_code: u32,
        /// TickerID.
        ticker_id: u32,
        /// Price.
        price: Price,
        /// AggregateQuantity.
        quantity: u64,
        /// TradeTime (ns).
        trade_time: u64,
        /// TrdType.
        trade_type: i16,
        /// TrdCancelFlag ('Y' cancels an earlier ticker).
        cancel: bool,
    },
    /// 40.
    NominalPrice {
        /// SecurityCode.
        security_code: u32,
        /// NominalPrice.
        price: Price,
    },
    /// 62.
    ClosingPrice {
        /// SecurityCode.
        security_code: u32,
        /// ClosingPrice (0: none).
        price: Price,
        /// NumberOfTrades.
        trades: u32,
    },
    /// 60.
    Statistics {
        /// SecurityCode.
        security_code: u32,
        /// SharesTraded.
        shares_traded: u64,
        /// Turnover (3 implied decimals; `None` when null).
        turnover: Option<i64>,
        /// HighPrice.
        high: Price,
        /// LowPrice.
        low: Price,
        /// LastPrice.
        last: Price,
        /// VWAP.
        vwap: Price,
        /// ShortSellSharesTraded.
        short_sell_shares: u32,
        /// ShortSellTurnover (3 implied decimals; `None` when null).
        short_sell_turnover: Option<i64>,
    },
    /// 101 (retransmission, client to server).
    Logon {
        /// Username.
        username: &'a [u8],
    },
    /// 102.
    LogonResponse {
        /// SessionStatus (0 session active).
        session_status: u8,
    },
    /// 201.
    RetransmissionRequest {
        /// ChannelID.
        channel_id: u16,
        /// BeginSeqNum.
        begin: u32,
        /// EndSeqNum.
        end: u32,
    },
    /// 202.
    RetransmissionResponse {
        /// ChannelID.
        channel_id: u16,
        /// RetransStatus (0 accepted).
        status: u8,
        /// BeginSeqNum.
        begin: u32,
        /// EndSeqNum.
        end: u32,
    },
    /// 203: the refresh snapshot is complete up to `last_seq_num`.
    RefreshComplete {
        /// LastSeqNum.
        last_seq_num: u32,
    },
    /// A type Harbour does not read (skipped by its size).
    Unknown {
        /// MsgType.
        msg_type: u16,
        /// The whole message.
        bytes: &'a [u8],
    },
}

/// Message type numbers.
pub mod msg_type {
    #![allow(missing_docs)]
    pub const SECURITY_DEFINITION: u16 = 11;
    pub const TRADING_SESSION_STATUS: u16 = 20;
    pub const SECURITY_STATUS: u16 = 21;
    pub const ADD_ORDER: u16 = 30;
    pub const MODIFY_ORDER: u16 = 31;
    pub const DELETE_ORDER: u16 = 32;
    pub const NOMINAL_PRICE: u16 = 40;
    pub const TRADE: u16 = 50;
    pub const TRADE_CANCEL: u16 = 51;
    pub const TRADE_TICKER: u16 = 52;
    pub const AGGREGATE_ORDER_BOOK_UPDATE: u16 = 53;
    pub const STATISTICS: u16 = 60;
    pub const CLOSING_PRICE: u16 = 62;
    pub const SEQUENCE_RESET: u16 = 100;
    pub const LOGON: u16 = 101;
    pub const LOGON_RESPONSE: u16 = 102;
    pub const RETRANSMISSION_REQUEST: u16 = 201;
    pub const RETRANSMISSION_RESPONSE: u16 = 202;
    pub const REFRESH_COMPLETE: u16 = 203;
}

/// Minimum size of each known type's layout.
pub fn layout_size(t: u16) -> Option<usize> {
    use msg_type::*;
    Some(match t {
        SEQUENCE_RESET => 8,
        SECURITY_DEFINITION => SecurityDefinition::FIXED,
        TRADING_SESSION_STATUS => 32,
        SECURITY_STATUS => 12,
        ADD_ORDER => 32,
        MODIFY_ORDER => 28,
        DELETE_ORDER => 20,
        AGGREGATE_ORDER_BOOK_UPDATE => 12,
        TRADE => 32,
        TRADE_CANCEL => 12,
        TRADE_TICKER => 36,
        NOMINAL_PRICE => 12,
        CLOSING_PRICE => 16,
        STATISTICS => 52,
        LOGON => 16,
        LOGON_RESPONSE => 8,
        RETRANSMISSION_REQUEST => 16,
        RETRANSMISSION_RESPONSE => 16,
        REFRESH_COMPLETE => 8,
        _ => return None,
    })
}

#[inline]
fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
#[inline]
fn i16_at(b: &[u8], o: usize) -> i16 {
    i16::from_le_bytes([b[o], b[o + 1]])
}
#[inline]
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
#[inline]
fn i32_at(b: &[u8], o: usize) -> i32 {
    i32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
#[inline]
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}
#[inline]
fn i64_at(b: &[u8], o: usize) -> i64 {
    i64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}
fn nullable(v: i64) -> Option<i64> {
    (v != NULL_I64).then_some(v)
}

/// Decodes one message (`m` is exactly its `MsgSize` bytes, `offset` its place in the packet).
pub fn decode_message(m: &[u8], offset: usize) -> Result<Message<'_>, DecodeError> {
    use msg_type::*;
    let size = m.len();
    if size < 4 {
        return Err(DecodeError::TooShort { offset, msg_type: 0, size, need: 4 });
    }
    let t = u16_at(m, 2);
    let need = match t {
        AGGREGATE_ORDER_BOOK_UPDATE if size >= 12 => 12 + BookEntries::SIZE * usize::from(m[11]),
        SECURITY_DEFINITION if size >= SecurityDefinition::FIXED => {
            SecurityDefinition::FIXED + 8 * usize::from(u16_at(m, 542))
        }
        _ => layout_size(t).unwrap_or(4),
    };
    if size < need {
        return Err(DecodeError::TooShort { offset, msg_type: t, size, need });
    }
    Ok(match t {
        SEQUENCE_RESET => Message::SequenceReset { new_seq_no: u32_at(m, 4) },
        SECURITY_DEFINITION => Message::SecurityDefinition(SecurityDefinition { bytes: m }),
        TRADING_SESSION_STATUS => Message::TradingSessionStatus {
            market_code: &m[4..8],
            sub_id: m[9],
            status: m[10],
            control_flag: m[11],
            start: u64_at(m, 16),
            end: u64_at(m, 24),
        },
        SECURITY_STATUS => Message::SecurityStatus { security_code: u32_at(m, 4), suspension: m[8] },
        ADD_ORDER => Message::AddOrder {
            security_code: u32_at(m, 4),
            order_id: u64_at(m, 8),
            price: Price(i32_at(m, 16)),
            quantity: u32_at(m, 20),
            side: BookSide::from_wire(u16_at(m, 24)),
            order_type: m[26],
            position: i32_at(m, 28),
        },
        MODIFY_ORDER => Message::ModifyOrder {
            security_code: u32_at(m, 4),
            order_id: u64_at(m, 8),
            quantity: u32_at(m, 16),
            side: BookSide::from_wire(u16_at(m, 20)),
            position: i32_at(m, 24),
        },
        DELETE_ORDER => Message::DeleteOrder {
            security_code: u32_at(m, 4),
            order_id: u64_at(m, 8),
            side: BookSide::from_wire(u16_at(m, 16)),
        },
        AGGREGATE_ORDER_BOOK_UPDATE => Message::AggregateOrderBookUpdate {
            security_code: u32_at(m, 4),
            entries: BookEntries { bytes: &m[12..need] },
        },
        TRADE => Message::Trade {
            security_code: u32_at(m, 4),
            trade_id: u32_at(m, 8),
            price: Price(i32_at(m, 12)),
            quantity: u32_at(m, 16),
            trade_type: i16_at(m, 20),
            trade_time: u64_at(m, 24),
        },
        TRADE_CANCEL => Message::TradeCancel { security_code: u32_at(m, 4), trade_id: u32_at(m, 8) },
        TRADE_TICKER => Message::TradeTicker {
            security_code: u32_at(m, 4),
            ticker_id: u32_at(m, 8),
            price: Price(i32_at(m, 12)),
            quantity: u64_at(m, 16),
            trade_time: u64_at(m, 24),
            trade_type: i16_at(m, 32),
            cancel: m[34] == b'Y',
        },
        NOMINAL_PRICE => Message::NominalPrice { security_code: u32_at(m, 4), price: Price(i32_at(m, 8)) },
        CLOSING_PRICE => {
            Message::ClosingPrice { security_code: u32_at(m, 4), price: Price(i32_at(m, 8)), trades: u32_at(m, 12) }
        }
        STATISTICS => Message::Statistics {
            security_code: u32_at(m, 4),
            shares_traded: u64_at(m, 8),
            turnover: nullable(i64_at(m, 16)),
            high: Price(i32_at(m, 24)),
            low: Price(i32_at(m, 28)),
            last: Price(i32_at(m, 32)),
            vwap: Price(i32_at(m, 36)),
            short_sell_shares: u32_at(m, 40),
            short_sell_turnover: nullable(i64_at(m, 44)),
        },
        LOGON => Message::Logon { username: &m[4..16] },
        LOGON_RESPONSE => Message::LogonResponse { session_status: m[4] },
        RETRANSMISSION_REQUEST => {
            Message::RetransmissionRequest { channel_id: u16_at(m, 4), begin: u32_at(m, 8), end: u32_at(m, 12) }
        }
        RETRANSMISSION_RESPONSE => Message::RetransmissionResponse {
            channel_id: u16_at(m, 4),
            status: m[6],
            begin: u32_at(m, 8),
            end: u32_at(m, 12),
        },
        REFRESH_COMPLETE => Message::RefreshComplete { last_seq_num: u32_at(m, 4) },
        _ => Message::Unknown { msg_type: t, bytes: m },
    })
}

/// A packet whose framing (header, every message size, `MsgCount`) was checked.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// The header.
    pub header: PacketHeader,
    bytes: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Checks a whole datagram: `PktSize` must equal its length.
    pub fn parse(bytes: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        let (p, rest) = Packet::parse_prefix(bytes)?;
        if !rest.is_empty() {
            return Err(DecodeError::PacketSize { size: usize::from(p.header.size), len: bytes.len() });
        }
        Ok(p)
    }

    /// The packet at the start of a stream (a capture, a TCP read), and the bytes after it.
    pub fn parse_prefix(bytes: &'a [u8]) -> Result<(Packet<'a>, &'a [u8]), DecodeError> {
        if bytes.len() < PACKET_HEADER {
            return Err(DecodeError::ShortPacket { len: bytes.len() });
        }
        let header = PacketHeader {
            size: u16_at(bytes, 0),
            msg_count: bytes[2],
            seq_num: u32_at(bytes, 4),
            send_time: u64_at(bytes, 8),
        };
        let size = usize::from(header.size);
        if size < PACKET_HEADER || size > bytes.len() {
            return Err(DecodeError::PacketSize { size, len: bytes.len() });
        }
        let (bytes, rest) = bytes.split_at(size);
        // Walk the message sizes once: MsgCount and the bytes must agree exactly.
        let mut offset = PACKET_HEADER;
        let mut found = 0usize;
        while offset < size {
            if found == usize::from(header.msg_count) {
                return Err(DecodeError::Count { count: header.msg_count, found, offset });
            }
            let left = size - offset;
            if left < 4 {
                return Err(DecodeError::Overrun { offset, size: 4, left });
            }
            let m = usize::from(u16_at(bytes, offset));
            if m < 4 {
                return Err(DecodeError::TooShort { offset, msg_type: u16_at(bytes, offset + 2), size: m, need: 4 });
            }
            if m > left {
                return Err(DecodeError::Overrun { offset, size: m, left });
            }
            offset += m;
            found += 1;
        }
        if found != usize::from(header.msg_count) {
            return Err(DecodeError::Count { count: header.msg_count, found, offset });
        }
        Ok((Packet { header, bytes }, rest))
    }

    /// A heartbeat (no messages).
    pub fn is_heartbeat(&self) -> bool {
        self.header.msg_count == 0
    }

    /// The packet's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Sequence number of the last message (of a heartbeat: the one it names).
    pub fn last_seq(&self) -> u32 {
        match self.header.msg_count {
            0 => self.header.seq_num,
            n => self.header.seq_num.wrapping_add(u32::from(n) - 1),
        }
    }

    /// The messages with their sequence numbers, in order.
    pub fn messages(&self) -> Messages<'a> {
        Messages { bytes: self.bytes, offset: PACKET_HEADER, seq: self.header.seq_num }
    }
}

/// Iterator over a checked packet's messages.
pub struct Messages<'a> {
    bytes: &'a [u8],
    offset: usize,
    seq: u32,
}

impl<'a> Iterator for Messages<'a> {
    type Item = (u32, Result<Message<'a>, DecodeError>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.offset >= self.bytes.len() {
            return None;
        }
        // Sizes were checked by `Packet::parse_prefix`.
        let size = usize::from(u16_at(self.bytes, self.offset));
        let m = &self.bytes[self.offset..self.offset + size];
        let item = (self.seq, decode_message(m, self.offset));
        self.offset += size;
        self.seq = self.seq.wrapping_add(1);
        Some(item)
    }
}
