//! Boxing a request's future where it is made.
//!
//! `Box::pin(f())` builds the future on the stack and then copies all of it into the box: the
//! whole size of the type (several KiB for a request's future, most of it states not yet
//! reached), for every request. Allocating first and writing the call's result into the
//! allocation lets the compiler build the future in place.

use std::future::Future;
use std::pin::Pin;

/// `Box::pin(make())`, with the future built in the box rather than copied into it.
#[inline(always)]
pub(crate) fn pinned<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_pinned_future_runs_to_its_output() {
        let big = [7u8; 4096];
        let fut = super::pinned(|| async move {
            tokio::task::yield_now().await;
            big.iter().map(|&b| u32::from(b)).sum::<u32>()
        });
        assert_eq!(fut.await, 7 * 4096);
    }
}
