//! What the actor's tasks own, looked up by task id when a task ends, and
//! the reactors declared on the builder.

use std::collections::HashMap;

use tokio::task::{self, JoinError};

use super::handle::ReactorContext;
use crate::transport::BoxFuture;

/// A reactor declared on the builder: its name and how to start it.
pub(super) struct ReactorSpawn {
    pub(super) name: &'static str,
    pub(super) start: Box<dyn FnOnce(ReactorContext) -> BoxFuture<'static, ()> + Send>,
}

/// What a task in one of the actor's `JoinSet`s owns: looked up by task id
/// when it ends, so a task that panicked is cleaned up exactly like one
/// that returned.
pub(super) struct Owned<T> {
    by_task: HashMap<task::Id, T>,
}

impl<T> Default for Owned<T> {
    fn default() -> Self {
        Self {
            by_task: HashMap::new(),
        }
    }
}

impl<T> Owned<T> {
    pub(super) fn insert(&mut self, id: task::Id, what: T) {
        self.by_task.insert(id, what);
    }

    pub(super) fn take(&mut self, id: task::Id) -> Option<T> {
        self.by_task.remove(&id)
    }

    /// What the running tasks own.
    pub(super) fn values(&self) -> impl Iterator<Item = &T> {
        self.by_task.values()
    }

    /// How the task behind `done` ended, with what it owned (taken out).
    pub(super) fn ended<R>(&mut self, done: Joined<R>) -> Ended<T, R> {
        match done {
            Ok((id, output)) => Ended::Returned(self.take(id), output),
            Err(error) => Ended::Failed(self.take(error.id()), error),
        }
    }
}

/// A finished task: what it owned (if it was registered) and its output,
/// or why it has none (a panic or a cancellation).
pub(super) enum Ended<T, R> {
    Returned(Option<T>, R),
    Failed(Option<T>, JoinError),
}

/// The task id of a finished task and its output, or why it has none.
pub(super) type Joined<T> = Result<(task::Id, T), JoinError>;
