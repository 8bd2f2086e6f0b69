//! Order lifecycle: the latest state per order id; trading status: the latest per security and market.

use crate::model::{Order, OrderId};
use crate::operators::LatestFold;

/// [`LatestFold`] keeping, per order id, the event with the greatest `(ts, status, source_seq)`,
/// ties broken by the whole event (two files or partitions can give two events one position), so
/// the state never depends on which arrived first.
#[derive(Clone, Debug, Default)]
pub struct OrderFold;

impl OrderFold {
    /// Whether `value` replaces the state `held`: the greatest `(ts, status, source_seq)`, ties
    /// broken by the whole value (so the result does not depend on the order of arrival).
    pub fn supersedes(value: &Order, held: Option<&Order>) -> bool {
        let rank = |o: &Order| (o.ts, o.status, o.source_seq);
        held.is_none_or(|held| rank(value).cmp(&rank(held)).then_with(|| value.cmp(held)).is_gt())
    }
}

impl LatestFold for OrderFold {
    type Key = OrderId;
    type Value = Order;
    type State = Option<Order>;
    type Output = Order;

    fn fold(&self, state: &mut Option<Order>, value: Order) {
        if OrderFold::supersedes(&value, state.as_ref()) {
            *state = Some(value);
        }
    }

    fn show(&self, _key: &OrderId, state: &Option<Order>) -> Option<Order> {
        state.clone()
    }
}

/// [`LatestFold`] keeping, per security or market, the trading status with the greatest
/// `(ts, status, session)`: the latest by event time, ties broken by the whole value.
#[derive(Clone, Debug, Default)]
pub struct StatusFold;

impl LatestFold for StatusFold {
    type Key = crate::model::StatusSubject;
    type Value = crate::model::TradingStatus;
    type State = Option<crate::model::TradingStatus>;
    type Output = crate::model::TradingStatus;

    fn fold(&self, state: &mut Self::State, value: Self::Value) {
        let rank = |s: &crate::model::TradingStatus| (s.ts, s.status.clone(), s.session);
        if state.as_ref().is_none_or(|held| rank(&value).cmp(&rank(held)).then_with(|| value.cmp(held)).is_gt()) {
            *state = Some(value);
        }
    }

    fn show(&self, _key: &Self::Key, state: &Self::State) -> Option<Self::Output> {
        state.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OrderStatus, PositionKey, Side, Symbol};
    use rust_decimal::Decimal;

    fn order(qty: i64, status: OrderStatus, ts: i64) -> Order {
        Order {
            ts,
            order_id: "O1".into(),
            key: PositionKey { account: "A".into(), strategy: "S".into(), symbol: Symbol(700) },
            side: Side::Buy,
            qty,
            price: Some(Decimal::new(385_200, 3)),
            order_type: "LIMIT".into(),
            status,
            source_seq: 3,
        }
    }

    fn fold_all(events: &[Order]) -> Option<Order> {
        let mut state = None;
        for e in events {
            OrderFold.fold(&mut state, e.clone());
        }
        state
    }

    #[test]
    fn an_order_state_does_not_depend_on_arrival_order() {
        // The same time, status and source position (line 3 of two files): the whole event decides.
        let (a, b) = (order(1_000, OrderStatus::PartiallyFilled, 10), order(800, OrderStatus::PartiallyFilled, 10));
        assert_eq!(fold_all(&[a.clone(), b.clone()]), fold_all(&[b.clone(), a.clone()]));
        assert_eq!(fold_all(&[a.clone(), b.clone()]).unwrap().qty, 1_000);
        // A later event wins whatever arrives last.
        let later = order(800, OrderStatus::Filled, 11);
        assert_eq!(fold_all(&[later.clone(), a.clone(), b]), Some(later));
    }
}
