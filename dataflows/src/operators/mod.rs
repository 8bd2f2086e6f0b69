//! Custom timely operators over differential collections, for folds that `reduce` would make slow.
//!
//! The operators buffer updates until the input frontier has passed their time, then apply them
//! in time order to per-key state held in a hash map, and emit the changes of their outputs as
//! differential updates at the same time. Output is therefore exactly what a from-scratch
//! recomputation at that time would give, while the cost per update does not depend on how many
//! updates a key has seen (see each operator for its bound).

mod book;
mod latest;
mod pending;
mod positions;
mod risk;

pub use book::{FillPnl, CHECKPOINT_EVERY};
pub use latest::{latest_fold, LatestFold};
pub use positions::positions;
pub use risk::risk;
