//! What the fuzz targets share.

use std::future::Future;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
}

/// Runs `f` to completion on this thread's runtime (one per fuzzing
/// thread, made once: not per input).
pub fn block_on<F: Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(f))
}
