//! A counting global allocator for this test binary: live heap bytes of the whole
//! process (server and bots run in it), and separately the bytes allocated and freed on
//! threads marked as client side (the bots), so the server's share can be told apart.
//!
//! Heap numbers are only meaningful while no other test runs: a test that reads them
//! holds [`exclusive`]; every other test holds [`shared`].
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static CLIENT: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    // Const-initialised and without a destructor: safe to read inside the allocator.
    static CLIENT_SIDE: Cell<bool> = const { Cell::new(false) };
}

fn client_side() -> bool {
    CLIENT_SIDE.try_with(Cell::get).unwrap_or(false)
}

fn grew(bytes: usize) {
    LIVE.fetch_add(bytes, Relaxed);
    if client_side() {
        CLIENT.fetch_add(bytes as isize, Relaxed);
    }
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes, Relaxed);
    if client_side() {
        CLIENT.fetch_sub(bytes as isize, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (we forward everything).
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Live heap bytes of the whole process.
pub fn live_bytes() -> usize {
    LIVE.load(Relaxed)
}

/// Net heap bytes allocated on client-side (bot) threads.
pub fn client_bytes() -> isize {
    CLIENT.load(Relaxed)
}

/// Marks the current thread as client side (bots) for [`client_bytes`].
pub fn mark_client_thread() {
    CLIENT_SIDE.with(|c| c.set(true));
}

/// Runs `f` with the current thread counted as client side.
pub fn as_client<T>(f: impl FnOnce() -> T) -> T {
    let before = CLIENT_SIDE.with(Cell::get);
    CLIENT_SIDE.with(|c| c.set(true));
    let result = f();
    CLIENT_SIDE.with(|c| c.set(before));
    result
}

static HEAP_LOCK: RwLock<()> = RwLock::const_new(());

/// Held by every test that does not read heap numbers.
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    HEAP_LOCK.read().await
}

/// Held by a test that reads heap numbers: no other test runs meanwhile.
pub async fn exclusive() -> RwLockWriteGuard<'static, ()> {
    HEAP_LOCK.write().await
}
