//! [`TaskGuard`]: ties a spawned task's life to the entry that owns it.

use tokio::task::AbortHandle;

/// Aborts a task (which closes its sockets) when dropped: when its relay
/// or connection is removed from the worker.
pub(super) struct TaskGuard(Option<AbortHandle>);

impl TaskGuard {
    pub(super) fn new(task: AbortHandle) -> Self {
        TaskGuard(Some(task))
    }

    /// Lets the task run on: for a task dropping its own guard as it ends.
    pub(super) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}
