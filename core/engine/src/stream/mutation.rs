//! Deliberate defects, for showing that the simulator's checkers catch a broken engine. A job
//! runs with none of them unless a mutant run asks for one.

/// A defect to build into a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Operators with several inputs, and sources with several splits, take the maximum of
    /// their inputs' watermarks instead of the minimum.
    MaxWatermark,
    /// Time windows put a record whose timestamp is exactly a window start into the window
    /// before.
    WindowOffByOne,
}
