//! Single-threaded wake-up primitives shared by a partition's writer task and its callers.
//!
//! Both live on the partition's owner shard; nothing here is `Send` and nothing takes a lock.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes one waiting task (the writer) when there is work. Notifications before the wait are
/// not lost: the flag stays set until the waiter consumes it.
#[derive(Default)]
pub(crate) struct Notify {
    pending: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub(crate) fn notify(&self) {
        self.pending.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Resolves once `notify` was called since the last resolution.
    pub(crate) fn notified(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.pending.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// A monotonic offset (e.g. "everything below this is durable") that tasks wait on.
#[derive(Default)]
pub(crate) struct Watermark {
    value: Cell<u64>,
    waiters: RefCell<Vec<(u64, Waker)>>,
}

impl Watermark {
    pub(crate) fn new(value: u64) -> Watermark {
        Watermark {
            value: Cell::new(value),
            waiters: RefCell::default(),
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.value.get()
    }

    /// Raises the mark and wakes every task waiting for a value at or below it.
    pub(crate) fn advance(&self, to: u64) {
        assert!(
            to >= self.value.get(),
            "watermark moved back from {} to {to}",
            self.value.get()
        );
        self.value.set(to);
        let woken: Vec<Waker> = {
            let mut waiters = self.waiters.borrow_mut();
            let (ready, waiting): (Vec<_>, Vec<_>) = waiters.drain(..).partition(|(t, _)| *t <= to);
            *waiters = waiting;
            ready.into_iter().map(|(_, w)| w).collect()
        };
        woken.into_iter().for_each(Waker::wake);
    }

    /// Lowers the mark (truncation); only valid when nobody waits above the new value.
    pub(crate) fn reset(&self, to: u64) {
        self.value.set(to);
    }

    /// Wakes every waiter so it can re-check other conditions (failure, rollback).
    pub(crate) fn wake_all(&self) {
        let woken: Vec<(u64, Waker)> = self.waiters.borrow_mut().drain(..).collect();
        woken.into_iter().for_each(|(_, w)| w.wake());
    }

    /// Resolves when the mark reaches `target`, or when `give_up` says to stop waiting (checked
    /// first on every wake-up); returns whether the mark was reached.
    pub(crate) fn reached<'a>(
        &'a self,
        target: u64,
        give_up: impl Fn() -> bool + 'a,
    ) -> impl Future<Output = bool> + 'a {
        Reached {
            mark: self,
            target,
            give_up,
        }
    }
}

struct Reached<'a, F> {
    mark: &'a Watermark,
    target: u64,
    give_up: F,
}

impl<F: Fn() -> bool> Future for Reached<'_, F> {
    type Output = bool;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        if (self.give_up)() {
            return Poll::Ready(false);
        }
        if self.mark.get() >= self.target {
            return Poll::Ready(true);
        }
        self.mark
            .waiters
            .borrow_mut()
            .push((self.target, cx.waker().clone()));
        Poll::Pending
    }
}

/// The outcome of one request to the writer (an append, a truncation), set once by the writer
/// and awaited by the requester. If the requester went away the result is simply dropped.
pub(crate) struct Completion<T> {
    result: RefCell<Option<T>>,
    waker: RefCell<Option<Waker>>,
}

impl<T> Completion<T> {
    pub(crate) fn new() -> std::rc::Rc<Completion<T>> {
        std::rc::Rc::new(Completion {
            result: RefCell::new(None),
            waker: RefCell::new(None),
        })
    }

    pub(crate) fn complete(&self, result: T) {
        let previous = self.result.borrow_mut().replace(result);
        assert!(previous.is_none(), "a request was completed twice");
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    pub(crate) fn wait(&self) -> impl Future<Output = T> + '_ {
        std::future::poll_fn(move |cx| match self.result.borrow_mut().take() {
            Some(result) => Poll::Ready(result),
            None => {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}
