//! Order books per security, built from OMD-C messages.
//!
//! - [`FullBook`]: every order from Add/Modify/Delete Order (30/31/32, the FullTick feed),
//!   aggregated into price levels; the top of book is read off the best levels.
//! - [`AggregatedBook`]: the price levels the Standard and Premium feeds send in Aggregate Order
//!   Book Update (53): at most [`DEPTH`] levels per side, addressed by level number. A new level
//!   shifts the levels at and below it down one (a level pushed past the depth drops out); a
//!   deleted level shifts those below it up; Clear (74) empties both sides.
//!
//! Inconsistent input (an unknown order id, a level number past the book) is a [`BookError`],
//! counted by the caller; the book stays usable.

use rustc_hash::FxHashMap;

use super::wire::{action, BookEntry, BookSide, Price};

/// Levels per side of the aggregated book.
pub const DEPTH: usize = 10;

/// Why a book message could not be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    /// Add Order for an id already in the book.
    #[error("order {0} is already in the book")]
    DuplicateOrder(u64),
    /// Modify or Delete Order for an id not in the book.
    #[error("order {0} is not in the book")]
    UnknownOrder(u64),
    /// A side other than bid (0) or offer (1).
    #[error("side {0} is neither bid nor offer")]
    BadSide(u16),
    /// A level number outside 1..=DEPTH, or past the levels present.
    #[error("price level {level} is outside the book ({present} level(s) on that side)")]
    BadLevel {
        /// The level.
        level: u8,
        /// Levels present on the side.
        present: usize,
    },
    /// An UpdateAction that is not 0, 1, 2 or 74.
    #[error("update action {0} is unknown")]
    BadAction(u8),
}

/// One price level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Level {
    /// Price.
    pub price: Price,
    /// Total quantity.
    pub quantity: u64,
    /// Orders at the level.
    pub orders: u32,
}

/// Best bid and offer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Top {
    /// Best bid.
    pub bid: Option<Level>,
    /// Best offer.
    pub ask: Option<Level>,
}

#[derive(Clone, Copy, Debug)]
struct Order {
    price: i32,
    quantity: u32,
    bid: bool,
}

/// The full order book of one security (FullTick).
#[derive(Clone, Debug, Default)]
pub struct FullBook {
    orders: FxHashMap<u64, Order>,
    /// Price levels, ascending by price: (price, quantity, orders). Books hold tens of levels
    /// near the touch, where a sorted vector beats a tree.
    bids: Vec<(i32, u64, u32)>,
    asks: Vec<(i32, u64, u32)>,
}

fn is_bid(side: BookSide) -> Result<bool, BookError> {
    match side {
        BookSide::Bid => Ok(true),
        BookSide::Offer => Ok(false),
        BookSide::Other(v) => Err(BookError::BadSide(v)),
    }
}

impl FullBook {
    fn side(&mut self, bid: bool) -> &mut Vec<(i32, u64, u32)> {
        if bid {
            &mut self.bids
        } else {
            &mut self.asks
        }
    }

    fn add_level(&mut self, bid: bool, price: i32, qty: u32) {
        let side = self.side(bid);
        match side.binary_search_by_key(&price, |l| l.0) {
            Ok(i) => {
                side[i].1 += u64::from(qty);
                side[i].2 += 1;
            }
            Err(i) => side.insert(i, (price, u64::from(qty), 1)),
        }
    }

    fn remove_level(&mut self, bid: bool, price: i32, qty: u32) {
        let side = self.side(bid);
        if let Ok(i) = side.binary_search_by_key(&price, |l| l.0) {
            side[i].1 -= u64::from(qty);
            side[i].2 -= 1;
            if side[i].2 == 0 {
                side.remove(i);
            }
        }
    }

    /// Add Order (30).
    pub fn add(&mut self, order_id: u64, side: BookSide, price: Price, quantity: u32) -> Result<(), BookError> {
        let bid = is_bid(side)?;
        match self.orders.entry(order_id) {
            std::collections::hash_map::Entry::Occupied(_) => return Err(BookError::DuplicateOrder(order_id)),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Order { price: price.0, quantity, bid });
            }
        }
        self.add_level(bid, price.0, quantity);
        Ok(())
    }

    /// Modify Order (31): the order's remaining quantity is now `quantity` (price unchanged).
    pub fn modify(&mut self, order_id: u64, quantity: u32) -> Result<(), BookError> {
        let o = self.orders.get_mut(&order_id).ok_or(BookError::UnknownOrder(order_id))?;
        let (bid, price, old) = (o.bid, o.price, o.quantity);
        o.quantity = quantity;
        let side = self.side(bid);
        if let Ok(i) = side.binary_search_by_key(&price, |l| l.0) {
            side[i].1 = side[i].1 - u64::from(old) + u64::from(quantity);
        }
        Ok(())
    }

    /// Delete Order (32).
    pub fn delete(&mut self, order_id: u64) -> Result<(), BookError> {
        let o = self.orders.remove(&order_id).ok_or(BookError::UnknownOrder(order_id))?;
        self.remove_level(o.bid, o.price, o.quantity);
        Ok(())
    }

    /// Best bid and offer (orders without a price, at-auction, are not levels).
    pub fn top(&self) -> Top {
        let level = |&(p, q, n): &(i32, u64, u32)| Level { price: Price(p), quantity: q, orders: n };
        Top {
            bid: self.bids.last().filter(|l| l.0 > 0).map(level),
            ask: self.asks.get(self.asks.partition_point(|l| l.0 <= 0)).map(level),
        }
    }

    /// The best `n` levels of a side, best first.
    pub fn levels(&self, side: BookSide, n: usize) -> Vec<Level> {
        let level = |&(p, q, c): &(i32, u64, u32)| Level { price: Price(p), quantity: q, orders: c };
        match side {
            BookSide::Bid => self.bids.iter().rev().filter(|l| l.0 > 0).take(n).map(level).collect(),
            _ => self.asks.iter().filter(|l| l.0 > 0).take(n).map(level).collect(),
        }
    }

    /// Resting orders: id, (price, quantity, is bid), by id.
    pub fn orders(&self) -> Vec<(u64, (i32, u32, bool))> {
        let mut v: Vec<_> = self.orders.iter().map(|(id, o)| (*id, (o.price, o.quantity, o.bid))).collect();
        v.sort_unstable_by_key(|(id, _)| *id);
        v
    }

    /// Orders in the book.
    pub fn order_count(&self) -> usize {
        self.orders.len()
    }

    /// Empties the book.
    pub fn clear(&mut self) {
        self.orders.clear();
        self.bids.clear();
        self.asks.clear();
    }
}

/// The aggregated book of one security (Standard/Premium feeds).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AggregatedBook {
    bids: Vec<Level>,
    asks: Vec<Level>,
}

impl AggregatedBook {
    /// Applies one entry of message 53.
    pub fn apply(&mut self, e: &BookEntry) -> Result<(), BookError> {
        if e.action == action::CLEAR {
            self.bids.clear();
            self.asks.clear();
            return Ok(());
        }
        let side = if is_bid(e.side)? { &mut self.bids } else { &mut self.asks };
        let level = usize::from(e.level);
        let bad = |present| BookError::BadLevel { level: e.level, present };
        if level == 0 || level > DEPTH {
            return Err(bad(side.len()));
        }
        let i = level - 1;
        let l = Level { price: e.price, quantity: e.quantity, orders: e.orders };
        match e.action {
            action::NEW => {
                if i > side.len() {
                    return Err(bad(side.len()));
                }
                side.insert(i, l);
                side.truncate(DEPTH);
            }
            action::CHANGE => {
                let present = side.len();
                let slot = side.get_mut(i).ok_or(bad(present))?;
                *slot = l;
            }
            action::DELETE => {
                if i >= side.len() {
                    return Err(bad(side.len()));
                }
                side.remove(i);
            }
            a => return Err(BookError::BadAction(a)),
        }
        Ok(())
    }

    /// The levels of a side, best first.
    pub fn levels(&self, side: BookSide) -> &[Level] {
        match side {
            BookSide::Bid => &self.bids,
            _ => &self.asks,
        }
    }

    /// Best bid and offer.
    pub fn top(&self) -> Top {
        Top { bid: self.bids.first().copied(), ask: self.asks.first().copied() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(side: BookSide, level: u8, act: u8, price: i32, qty: u64, orders: u32) -> BookEntry {
        BookEntry { quantity: qty, price: Price(price), orders, side, level, action: act }
    }

    fn prices(b: &AggregatedBook, side: BookSide) -> Vec<i32> {
        b.levels(side).iter().map(|l| l.price.0).collect()
    }

    #[test]
    fn full_book_aggregates_orders_into_levels() {
        let mut b = FullBook::default();
        b.add(1, BookSide::Bid, Price(385_200), 1000).unwrap();
        b.add(2, BookSide::Bid, Price(385_200), 500).unwrap();
        b.add(3, BookSide::Bid, Price(385_000), 300).unwrap();
        b.add(4, BookSide::Offer, Price(385_400), 200).unwrap();
        b.add(5, BookSide::Offer, Price(385_600), 700).unwrap();
        let top = b.top();
        assert_eq!(top.bid, Some(Level { price: Price(385_200), quantity: 1500, orders: 2 }));
        assert_eq!(top.ask, Some(Level { price: Price(385_400), quantity: 200, orders: 1 }));
        b.modify(1, 400).unwrap();
        assert_eq!(b.top().bid.unwrap().quantity, 900);
        b.delete(1).unwrap();
        b.delete(2).unwrap();
        assert_eq!(b.top().bid, Some(Level { price: Price(385_000), quantity: 300, orders: 1 }));
        b.delete(4).unwrap();
        assert_eq!(b.top().ask.unwrap().price, Price(385_600));
        assert_eq!(b.delete(4), Err(BookError::UnknownOrder(4)));
        assert_eq!(b.modify(9, 1), Err(BookError::UnknownOrder(9)));
        assert_eq!(b.add(3, BookSide::Bid, Price(1), 1), Err(BookError::DuplicateOrder(3)));
        assert_eq!(b.add(8, BookSide::Other(7), Price(1), 1), Err(BookError::BadSide(7)));
        assert_eq!(b.order_count(), 2);
        assert_eq!(b.levels(BookSide::Bid, 5), vec![Level { price: Price(385_000), quantity: 300, orders: 1 }]);
    }

    #[test]
    fn at_auction_orders_are_not_levels() {
        let mut b = FullBook::default();
        b.add(1, BookSide::Bid, Price(0), 1000).unwrap();
        assert_eq!(b.top(), Top::default());
        b.add(2, BookSide::Bid, Price(10_000), 100).unwrap();
        assert_eq!(b.top().bid.unwrap().price, Price(10_000));
    }

    #[test]
    fn aggregated_new_shifts_down_and_drops_past_the_depth() {
        let mut b = AggregatedBook::default();
        for i in 0..DEPTH as i32 {
            b.apply(&e(BookSide::Bid, (i + 1) as u8, action::NEW, 100_000 - i * 100, 1000, 1)).unwrap();
        }
        assert_eq!(b.levels(BookSide::Bid).len(), DEPTH);
        // A better price at level 1: everything shifts down, the old level 10 drops out.
        b.apply(&e(BookSide::Bid, 1, action::NEW, 100_100, 500, 2)).unwrap();
        let p = prices(&b, BookSide::Bid);
        assert_eq!(p.len(), DEPTH);
        assert_eq!(p[0], 100_100);
        assert_eq!(p[1], 100_000);
        assert_eq!(p[9], 99_200);
        // Delete level 3: those below shift up.
        b.apply(&e(BookSide::Bid, 3, action::DELETE, 99_900, 0, 0)).unwrap();
        let p = prices(&b, BookSide::Bid);
        assert_eq!(p.len(), DEPTH - 1);
        assert_eq!(&p[..3], &[100_100, 100_000, 99_800]);
        // Change level 2.
        b.apply(&e(BookSide::Bid, 2, action::CHANGE, 100_000, 7000, 9)).unwrap();
        assert_eq!(b.levels(BookSide::Bid)[1], Level { price: Price(100_000), quantity: 7000, orders: 9 });
        // Errors leave the book as it was.
        let before = b.clone();
        assert!(matches!(b.apply(&e(BookSide::Bid, 11, action::NEW, 1, 1, 1)), Err(BookError::BadLevel { .. })));
        assert!(matches!(b.apply(&e(BookSide::Offer, 1, action::CHANGE, 1, 1, 1)), Err(BookError::BadLevel { .. })));
        assert!(matches!(b.apply(&e(BookSide::Offer, 2, action::NEW, 1, 1, 1)), Err(BookError::BadLevel { .. })));
        assert_eq!(b.apply(&e(BookSide::Bid, 1, 9, 1, 1, 1)), Err(BookError::BadAction(9)));
        assert_eq!(b, before);
        // Clear empties both sides.
        b.apply(&e(BookSide::Offer, 1, action::NEW, 100_200, 100, 1)).unwrap();
        b.apply(&e(BookSide::Bid, 0, action::CLEAR, 0, 0, 0)).unwrap();
        assert_eq!(b.top(), Top::default());
    }
}
