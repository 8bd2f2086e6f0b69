//! Order lifecycle: the latest state per order id.

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
