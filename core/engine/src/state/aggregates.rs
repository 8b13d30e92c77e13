//! Ready-made aggregate functions.

use super::AggregateFunction;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::ops::AddAssign;

/// Count and sum of an amount each value carries: `(count, sum)`.
pub struct CountSum<T, S> {
    amount: fn(&T) -> S,
}

impl<T, S> CountSum<T, S> {
    /// Counts values and sums `amount` of each.
    pub fn new(amount: fn(&T) -> S) -> Self {
        Self { amount }
    }
}

impl<T, S> AggregateFunction<T> for CountSum<T, S>
where
    S: AddAssign + Default + Copy + Serialize + DeserializeOwned,
{
    type Acc = (u64, S);
    type Out = (u64, S);
    fn create_accumulator(&self) -> (u64, S) {
        (0, S::default())
    }
    fn add(&self, value: &T, acc: &mut (u64, S)) {
        acc.0 += 1;
        acc.1 += (self.amount)(value);
    }
    fn get_result(&self, acc: &(u64, S)) -> (u64, S) {
        *acc
    }
    fn merge(&self, into: &mut (u64, S), other: (u64, S)) {
        into.0 += other.0;
        into.1 += other.1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sums_and_merges() {
        let f = CountSum::new(|x: &f64| *x);
        let mut a = f.create_accumulator();
        f.add(&1.5, &mut a);
        f.add(&2.0, &mut a);
        let mut b = f.create_accumulator();
        f.add(&4.0, &mut b);
        f.merge(&mut a, b);
        assert_eq!(f.get_result(&a), (3, 7.5));
    }
}
