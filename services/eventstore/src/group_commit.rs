//! Group commit: one task writes the requests of every caller waiting at that moment in one
//! commit, so concurrent callers share one commit (one fsync on SQLite, one WAL flush and one
//! statement on PostgreSQL) instead of paying one each.
//!
//! A [`Commit`] says how a slice of requests is written and committed; [`GroupCommit`] does the
//! queueing and the replies. A caller's [`GroupCommit::submit`] returns only after the commit
//! holding its write (or after the commit failed). The SQLite side, one transaction on a
//! connection of its own, is [`crate::sqlite::group_commit`]; the email index and the key vault
//! implement [`Commit`] directly for PostgreSQL, one multi-row statement per batch.

use std::fmt;
use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// How a batch of one kind of write is written and committed.
pub trait Commit: Send + 'static {
    /// One caller's write.
    type Request: Send + Sync + 'static;
    /// What that caller gets back.
    type Reply: Send + 'static;

    /// Writes every request and commits them together, returning one reply per request, in
    /// the same order. An `Err` means nothing of the batch was committed; every caller gets an
    /// error.
    fn commit(
        &mut self,
        requests: &[Self::Request],
    ) -> impl Future<Output = Result<Vec<Self::Reply>, sqlx::Error>> + Send;
}

type Waiting<C> = (
    <C as Commit>::Request,
    oneshot::Sender<Result<<C as Commit>::Reply, sqlx::Error>>,
);

/// A handle on one writer task. Cheap to clone; the task stops when every handle is gone.
pub struct GroupCommit<C: Commit> {
    queue: mpsc::Sender<Waiting<C>>,
}

impl<C: Commit> Clone for GroupCommit<C> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<C: Commit> fmt::Debug for GroupCommit<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCommit")
            .field("commit", &std::any::type_name::<C>())
            .finish_non_exhaustive()
    }
}

impl<C: Commit> GroupCommit<C> {
    /// Starts the writer task (which owns `commit` from now on), committing at most
    /// `max_batch` requests at a time.
    pub fn spawn(commit: C, max_batch: usize) -> Self {
        let max_batch = max_batch.max(1);
        let (queue, waiting) = mpsc::channel(max_batch * 4);
        tokio::spawn(run(commit, waiting, max_batch));
        Self { queue }
    }

    /// Queues one write and waits until the commit holding it is done (or failed).
    /// [`sqlx::Error::WorkerCrashed`] when the writer task is gone.
    pub async fn submit(&self, request: C::Request) -> Result<C::Reply, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((request, reply))
            .await
            .map_err(|_| sqlx::Error::WorkerCrashed)?;
        answer.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }
}

async fn run<C: Commit>(mut commit: C, mut waiting: mpsc::Receiver<Waiting<C>>, max_batch: usize) {
    let mut taken = Vec::with_capacity(max_batch);
    let mut requests = Vec::with_capacity(max_batch);
    let mut replies = Vec::with_capacity(max_batch);
    while waiting.recv_many(&mut taken, max_batch).await > 0 {
        for (request, reply) in taken.drain(..) {
            requests.push(request);
            replies.push(reply);
        }
        match commit
            .commit(&requests)
            .await
            .and_then(|outcomes| one_each(&requests, outcomes))
        {
            Ok(outcomes) => {
                for (reply, outcome) in replies.drain(..).zip(outcomes) {
                    // A caller that gave up waiting is not an error of the writer.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                let message = error.to_string();
                tracing::error!(
                    commit = std::any::type_name::<C>(),
                    error = %message,
                    requests = replies.len(),
                    "group commit failed"
                );
                if replies.len() == 1 {
                    let _ = replies.remove(0).send(Err(error));
                }
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(sqlx::Error::Protocol(format!(
                        "group commit failed: {message}"
                    ))));
                }
            }
        }
        requests.clear();
    }
    tracing::debug!(
        commit = std::any::type_name::<C>(),
        "group-commit writer stopped: every handle is gone"
    );
}

/// Refuses replies that could not go one to each caller (a defect of the [`Commit`]).
pub(crate) fn one_each<R, O>(requests: &[R], outcomes: Vec<O>) -> Result<Vec<O>, sqlx::Error> {
    if outcomes.len() == requests.len() {
        Ok(outcomes)
    } else {
        Err(sqlx::Error::Protocol(format!(
            "a batch of {} requests gave {} replies",
            requests.len(),
            outcomes.len()
        )))
    }
}
