//! Background tasks that use the store. actix runs its tasks in a `LocalSet` that it drops
//! before the tokio runtime at shutdown, outside the runtime's context; a task dropped there in
//! the middle of a statement drops a pooled connection, and sqlx hands a connection back to its
//! pool by spawning, which panics without a runtime. Two such tasks at once abort the process.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Spawns `future` on the current actix arbiter; when dropped unfinished it is dropped inside
/// the tokio runtime's context, so the connections it holds go back to their pool.
pub fn spawn<F: Future<Output = ()> + 'static>(future: F) {
    actix_web::rt::spawn(InRuntime {
        handle: tokio::runtime::Handle::current(),
        future: Some(Box::pin(future)),
    });
}

struct InRuntime<F> {
    handle: tokio::runtime::Handle,
    future: Option<Pin<Box<F>>>,
}

impl<F: Future<Output = ()>> Future for InRuntime<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.future.as_mut() {
            Some(future) => {
                let done = future.as_mut().poll(cx);
                if done.is_ready() {
                    self.future = None;
                }
                done
            }
            None => Poll::Ready(()),
        }
    }
}

impl<F> Drop for InRuntime<F> {
    fn drop(&mut self) {
        let _entered = self.handle.enter();
        self.future = None;
    }
}
