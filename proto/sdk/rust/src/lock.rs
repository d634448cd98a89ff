//! The one way this crate locks a std `Mutex`: a poisoned lock (a handler panicked while holding
//! it) is taken over, as the data it guards stays consistent between statements.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking it over if poisoned.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
