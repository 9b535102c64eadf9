//! Locking as the relay does it: short critical sections that leave their data valid.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex, recovering from poisoning: every critical section in the relay leaves the data
/// valid, so a panic elsewhere is no reason to stop using it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
