//! The sampling tasks besides the writer (the ticker and one per source), watched: a task that
//! panics is never lost silently. It ends the run, which then exits non-zero, so that systemd
//! restarts the monitor (a restart of the task alone would hide a bug that recurs every tick).

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinError, JoinSet};

#[derive(Default)]
pub(super) struct Tasks {
    set: JoinSet<()>,
    names: HashMap<Id, &'static str>,
}

impl Tasks {
    /// Runs `task`, named `name` in the message should it panic.
    pub(super) fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Resolves with what happened when a task panics; pending for ever while none does (a
    /// task that ends normally, as each does when sampling stops, is let go).
    pub(super) async fn panicked(&mut self) -> String {
        while let Some(ended) = self.set.join_next().await {
            if let Err(e) = ended
                && e.is_panic()
            {
                return self.describe_panic(e);
            }
        }
        std::future::pending().await
    }

    /// What a task's panic is logged and reported as.
    fn describe_panic(&self, e: JoinError) -> String {
        let name = self.names.get(&e.id()).copied().unwrap_or("sampling");
        format!(
            "the {name} task panicked: {}",
            panic_message(e.into_panic())
        )
    }

    /// Stops every task still running.
    pub(super) fn abort_all(&mut self) {
        self.set.abort_all();
    }

    /// Stops every task still running and waits for all of them, with what happened if one
    /// panicked. For the end of a run: a panicking source drops its report channel before
    /// tokio records the panic, so the run can see the channel close first.
    pub(super) async fn stop(&mut self) -> Option<String> {
        self.set.abort_all();
        let mut failure = None;
        while let Some(ended) = self.set.join_next().await {
            if let Err(e) = ended
                && e.is_panic()
                && failure.is_none()
            {
                failure = Some(self.describe_panic(e));
            }
        }
        failure
    }
}

/// The message a panic was raised with.
pub(super) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "no message".to_owned())
}

/// Test-only (feature `test-panic-in-run`): whether `SETMOV_TEST_PANIC_IN_RUN` names `task`,
/// which then panics on its third tick, so that the tests can check a panic ends `run`.
#[cfg(feature = "test-panic-in-run")]
pub(super) fn test_panic_wanted(task: &str) -> bool {
    std::env::var("SETMOV_TEST_PANIC_IN_RUN").is_ok_and(|t| t == task)
}
