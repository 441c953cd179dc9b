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
    spawn_awaited(future);
}

/// [`spawn`], with the future's output for whoever awaits the handle: work that must run to
/// its end even when the one waiting for it is dropped.
pub fn spawn_awaited<F: Future + 'static>(future: F) -> actix_web::rt::task::JoinHandle<F::Output> {
    actix_web::rt::spawn(InRuntime {
        handle: tokio::runtime::Handle::current(),
        future: Some(Box::pin(future)),
    })
}

struct InRuntime<F> {
    handle: tokio::runtime::Handle,
    future: Option<Pin<Box<F>>>,
}

impl<F: Future> Future for InRuntime<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(future) = self.future.as_mut() else {
            // Polled again after its output was taken: a task is not.
            return Poll::Pending;
        };
        let done = future.as_mut().poll(cx);
        if done.is_ready() {
            self.future = None;
        }
        done
    }
}

impl<F> Drop for InRuntime<F> {
    fn drop(&mut self) {
        let _entered = self.handle.enter();
        self.future = None;
    }
}
