//! Group commit for one SQLite file: a writer task owns the file's write connection and commits
//! the writes of every caller waiting at that moment in one transaction, so they share one
//! fsync (the queueing and the replies are [`crate::group_commit`]).
//!
//! The event store's appends, the email index's claims and the key vault's new data keys all
//! go through it. A [`Batch`] says how to write a slice of requests inside the open transaction;
//! [`SqliteCommit`] wraps it in that transaction. A caller's [`GroupCommit::submit`] returns
//! only after the transaction holding its write is committed (durable when the connection runs
//! with `synchronous=FULL`, which every caller here forces).
//!
//! Writes of other processes (or of other connections of this one) to the same file still work:
//! each batch takes the write lock with `BEGIN IMMEDIATE` and waits for it up to the
//! connection's busy timeout.

use std::future::Future;

use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

pub use crate::group_commit::GroupCommit;
use crate::group_commit::{Commit, one_each};

/// How one kind of write is done in a SQLite batch.
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

/// A [`Batch`] on the connection it owns: one transaction (or one autocommit statement) a batch.
pub struct SqliteCommit<B: Batch> {
    conn: SqliteConnection,
    batch: B,
}

/// The group-commit writer of one SQLite file.
pub type SqliteGroupCommit<B> = GroupCommit<SqliteCommit<B>>;

impl<B: Batch> GroupCommit<SqliteCommit<B>> {
    /// Starts the writer task on `conn` (which it owns from now on), committing at most
    /// `max_batch` requests per transaction.
    pub fn on_sqlite(conn: SqliteConnection, batch: B, max_batch: usize) -> Self {
        GroupCommit::spawn(SqliteCommit { conn, batch }, max_batch)
    }
}

impl<B: Batch> Commit for SqliteCommit<B> {
    type Request = B::Request;
    type Reply = B::Reply;

    async fn commit(&mut self, requests: &[B::Request]) -> Result<Vec<B::Reply>, sqlx::Error> {
        let outcomes = if self.batch.single_statement(requests) {
            one_each(requests, self.batch.write(&mut self.conn, requests).await?)?
        } else {
            let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
            // Checked before the commit: a batch that does not answer every caller is rolled
            // back.
            let outcomes = one_each(requests, self.batch.write(&mut tx, requests).await?)?;
            tx.commit().await?;
            outcomes
        };
        self.batch.committed(&outcomes);
        Ok(outcomes)
    }
}
