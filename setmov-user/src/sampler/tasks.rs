//! The sampling tasks besides the writer (the ticker and one per source), watched: a task that
//! panics is never lost silently. It ends the run, which then exits non-zero, so that systemd
//! restarts the monitor (a restart of the task alone would hide a bug that recurs every tick).

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinSet};

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
                let name = self.names.get(&e.id()).copied().unwrap_or("sampling");
                return format!(
                    "the {name} task panicked: {}",
                    panic_message(e.into_panic())
                );
            }
        }
        std::future::pending().await
    }

    /// Stops every task still running.
    pub(super) fn abort_all(&mut self) {
        self.set.abort_all();
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
