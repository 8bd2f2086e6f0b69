//! Order lifecycle: the latest state per order id; trading status: the latest per security and market.

use crate::model::{Order, OrderId};
use crate::operators::LatestFold;

/// [`LatestFold`] keeping, per order id, the event with the greatest `(ts, status, source_seq)`.
#[derive(Clone, Debug, Default)]
pub struct OrderFold;

impl LatestFold for OrderFold {
    type Key = OrderId;
    type Value = Order;
    type State = Option<Order>;
    type Output = Order;

    fn fold(&self, state: &mut Option<Order>, value: Order) {
        let rank = |o: &Order| (o.ts, o.status, o.source_seq);
        if state.as_ref().is_none_or(|held| rank(&value) > rank(held)) {
            *state = Some(value);
        }
    }

    fn show(&self, _key: &OrderId, state: &Option<Order>) -> Option<Order> {
        state.clone()
    }
}

/// [`LatestFold`] keeping, per security or market, the trading status with the greatest
/// `(ts, status, session)`: the latest by event time, ties broken by value.
#[derive(Clone, Debug, Default)]
pub struct StatusFold;

impl LatestFold for StatusFold {
    type Key = crate::model::StatusSubject;
    type Value = crate::model::TradingStatus;
    type State = Option<crate::model::TradingStatus>;
    type Output = crate::model::TradingStatus;

    fn fold(&self, state: &mut Self::State, value: Self::Value) {
        let rank = |s: &crate::model::TradingStatus| (s.ts, s.status.clone(), s.session);
        if state.as_ref().is_none_or(|held| rank(&value) > rank(held)) {
            *state = Some(value);
        }
    }

    fn show(&self, _key: &Self::Key, state: &Self::State) -> Option<Self::Output> {
        state.clone()
    }
}
