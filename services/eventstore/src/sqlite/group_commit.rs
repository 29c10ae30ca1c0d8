//! Group commit for one SQLite file: a task owns the file's write connection and commits the
//! writes of every caller waiting at that moment in one transaction, so they share one fsync.
//!
//! The event store's appends, the email index's claims and the key vault's new data keys all
//! go through it. A [`Batch`] says how to write a slice of requests inside the open transaction;
//! [`GroupCommit`] does the queueing, the transaction and the replies. A caller's
//! [`GroupCommit::submit`] returns only after the transaction holding its write is committed
//! (durable when the connection runs with `synchronous=FULL`, which every caller here forces).
//!
//! Writes of other processes (or of other connections of this one) to the same file still work:
//! each batch takes the write lock with `BEGIN IMMEDIATE` and waits for it up to the
//! connection's busy timeout.

use std::fmt;
use std::future::Future;

use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

/// How one kind of write is done in a batch.
pub trait Batch: Send + 'static {
    /// One caller's write.
    type Request: Send + Sync + 'static;
    /// What that caller gets back.
    type Reply: Send + 'static;

    /// Writes every request inside the open transaction and returns one reply per request, in
    /// the same order. An `Err` rolls the whole batch back and every caller gets an error.
    fn write(
        &mut self,
        conn: &mut SqliteConnection,
        requests: &[Self::Request],
    ) -> impl Future<Output = Result<Vec<Self::Reply>, sqlx::Error>> + Send;

    /// True when these requests are written by one statement, atomic on its own: the batch
    /// then runs without `BEGIN`/`COMMIT` (autocommit), saving two statements.
    fn single_statement(&self, _requests: &[Self::Request]) -> bool {
        false
    }

    /// Called after a batch committed, with its replies (e.g. to announce new rows).
    fn committed(&mut self, _replies: &[Self::Reply]) {}
}

type Waiting<B> = (
    <B as Batch>::Request,
    oneshot::Sender<Result<<B as Batch>::Reply, sqlx::Error>>,
);

/// A handle on the writer task of one file. Cheap to clone; the task stops when every handle
/// is gone.
pub struct GroupCommit<B: Batch> {
    queue: mpsc::Sender<Waiting<B>>,
}

impl<B: Batch> Clone for GroupCommit<B> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<B: Batch> fmt::Debug for GroupCommit<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCommit")
            .field("batch", &std::any::type_name::<B>())
            .finish_non_exhaustive()
    }
}

impl<B: Batch> GroupCommit<B> {
    /// Starts the writer task on `conn` (which it owns from now on), committing at most
    /// `max_batch` requests per transaction.
    pub fn spawn(conn: SqliteConnection, batch: B, max_batch: usize) -> Self {
        let max_batch = max_batch.max(1);
        let (queue, waiting) = mpsc::channel(max_batch * 4);
        tokio::spawn(run(conn, batch, waiting, max_batch));
        Self { queue }
    }

    /// Queues one write and waits until the transaction holding it committed (or failed).
    /// [`sqlx::Error::WorkerCrashed`] when the writer task is gone.
    pub async fn submit(&self, request: B::Request) -> Result<B::Reply, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((request, reply))
            .await
            .map_err(|_| sqlx::Error::WorkerCrashed)?;
        answer.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }
}

async fn run<B: Batch>(
    mut conn: SqliteConnection,
    mut batch: B,
    mut waiting: mpsc::Receiver<Waiting<B>>,
    max_batch: usize,
) {
    let mut taken = Vec::with_capacity(max_batch);
    let mut requests = Vec::with_capacity(max_batch);
    let mut replies = Vec::with_capacity(max_batch);
    while waiting.recv_many(&mut taken, max_batch).await > 0 {
        for (request, reply) in taken.drain(..) {
            requests.push(request);
            replies.push(reply);
        }
        match write(&mut conn, &mut batch, &requests).await {
            Ok(outcomes) => {
                batch.committed(&outcomes);
                for (reply, outcome) in replies.drain(..).zip(outcomes) {
                    // A caller that gave up waiting is not an error of the writer.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                let message = error.to_string();
                tracing::error!(error = %message, requests = replies.len(), "sqlite group commit failed");
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
        batch = std::any::type_name::<B>(),
        "sqlite writer stopped: every handle is gone"
    );
}

/// One batch: one transaction (or one autocommit statement), one reply per request.
async fn write<B: Batch>(
    conn: &mut SqliteConnection,
    batch: &mut B,
    requests: &[B::Request],
) -> Result<Vec<B::Reply>, sqlx::Error> {
    if batch.single_statement(requests) {
        return one_each(requests, batch.write(conn, requests).await?);
    }
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    // Checked before the commit: a batch that does not answer every caller is rolled back.
    let outcomes = one_each(requests, batch.write(&mut tx, requests).await?)?;
    tx.commit().await?;
    Ok(outcomes)
}

/// Refuses replies that could not go one to each caller (a defect of the `Batch`).
fn one_each<R, O>(requests: &[R], outcomes: Vec<O>) -> Result<Vec<O>, sqlx::Error> {
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
