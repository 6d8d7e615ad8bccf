//! State a function keeps between calls (built tables, idle coders) that is not part of
//! what the function is.

use std::sync::Mutex;

/// A lock around a function's kept state. DataFusion compares and hashes functions to
/// tell them apart; two instances are the same function whatever they have kept, so
/// this compares equal and hashes to nothing, and the function can derive both.
#[derive(Debug, Default)]
pub(crate) struct Kept<T>(Mutex<T>);

impl<T> std::ops::Deref for Kept<T> {
    type Target = Mutex<T>;
    fn deref(&self) -> &Mutex<T> {
        &self.0
    }
}

impl<T> PartialEq for Kept<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Kept<T> {}

impl<T> std::hash::Hash for Kept<T> {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}
