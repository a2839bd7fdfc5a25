//! Statements prepared once per pooled connection and kept there
//! (deadpool's statement cache, keyed by the SQL text): a statement then
//! costs one round trip to the server instead of two (prepare, then run),
//! and is not parsed and analysed again each time. Every statement of this
//! backend whose text does not change from call to call runs through these.

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::R;

/// A transaction of this backend.
pub(crate) type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Parameters of a statement.
pub(crate) type Params<'a> = [&'a (dyn ToSql + Sync)];

/// The rows of `sql`.
pub(crate) async fn query(tx: &Tx<'_>, sql: &str, params: &Params<'_>) -> R<Vec<Row>> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.query(&statement, params).await?)
}

/// The row of `sql`, if any (an error if more than one).
pub(crate) async fn query_opt(tx: &Tx<'_>, sql: &str, params: &Params<'_>) -> R<Option<Row>> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&statement, params).await?)
}

/// The one row of `sql` (an error otherwise).
pub(crate) async fn query_one(tx: &Tx<'_>, sql: &str, params: &Params<'_>) -> R<Row> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.query_one(&statement, params).await?)
}

/// Runs `sql`; returns the number of rows it changed.
pub(crate) async fn execute(tx: &Tx<'_>, sql: &str, params: &Params<'_>) -> R<u64> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&statement, params).await?)
}

/// Runs statements one after another in the transaction, sending them all
/// at once (pipelined: one round trip for all of them instead of one
/// each). The server runs them in the order given, exactly as if each had
/// waited for the one before. Returns the rows each changed, or the first
/// statement's failure (a failure aborts the transaction, so the ones
/// after it fail too, saying only that).
pub(crate) async fn execute_all(tx: &Tx<'_>, statements: &[(&str, &Params<'_>)]) -> R<Vec<u64>> {
    let prepared = prepare_all(tx, statements).await?;
    let runs = prepared
        .iter()
        .zip(statements)
        .map(|(statement, (_, params))| tx.execute(statement, params));
    Ok(in_order(runs).await?)
}

/// Runs the queries of `statements` like [`execute_all`], returning the
/// rows of each.
pub(crate) async fn query_all(tx: &Tx<'_>, statements: &[(&str, &Params<'_>)]) -> R<Vec<Vec<Row>>> {
    let prepared = prepare_all(tx, statements).await?;
    let runs = prepared
        .iter()
        .zip(statements)
        .map(|(statement, (_, params))| tx.query(statement, params));
    Ok(in_order(runs).await?)
}

/// The prepared statements of `statements` (cached per connection).
async fn prepare_all(
    tx: &Tx<'_>,
    statements: &[(&str, &Params<'_>)],
) -> R<Vec<tokio_postgres::Statement>> {
    let mut prepared = Vec::with_capacity(statements.len());
    for (sql, _) in statements {
        prepared.push(tx.prepare_cached(sql).await?);
    }
    Ok(prepared)
}

/// Awaits futures together, polling them in the order given: the first
/// poll of each sends its request, so the requests leave in that order.
/// Waits for all of them; returns the first failure by position.
async fn in_order<T, E, F>(futures: impl Iterator<Item = F>) -> Result<Vec<T>, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    use std::task::Poll;
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut done: Vec<Option<Result<T, E>>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, slot) in futures.iter_mut().zip(done.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(result) => *slot = Some(result),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}
