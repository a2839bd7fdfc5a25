//! Work on many records spread over the cores.

/// Below this many items the work runs on the calling thread.
const INLINE_BELOW: usize = 16;

/// `f` of every item, in order, spread over the cores (at most 8
/// threads; on the calling thread for fewer than 16 items or one core).
/// `None` if a thread panicked.
pub fn spread<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Option<Vec<R>> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    if items.len() < INLINE_BELOW || threads == 1 {
        return Some(items.into_iter().map(f).collect());
    }
    let chunk = items.len().div_ceil(threads);
    let total = items.len();
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        chunks.push(items.by_ref().take(chunk).collect());
    }
    std::thread::scope(|scope| {
        let f = &f;
        let parts: Vec<_> = chunks
            .into_iter()
            .map(|part| scope.spawn(move || part.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out = Vec::with_capacity(total);
        for part in parts {
            out.extend(part.join().ok()?);
        }
        Some(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_order_few_or_many() {
        for n in [0, 1, 15, 16, 17, 1000] {
            let items: Vec<usize> = (0..n).collect();
            let out = spread(items, |i| i * 2).expect("no panic");
            assert_eq!(out, (0..n).map(|i| i * 2).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_panicking_thread_gives_none() {
        let items: Vec<usize> = (0..100).collect();
        let out = spread(items, |i| {
            assert!(i != 99, "the last item fails");
            i
        });
        assert!(out.is_none());
    }
}
