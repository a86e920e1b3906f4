//! Shutdown as a parameter: every long-running task takes a [`Shutdown`] and stops when it
//! fires, so tests can drive start and stop without signals.

use tokio::sync::watch;

/// The sending side: call [`Trigger::fire`] once to stop everything holding a [`Shutdown`].
#[derive(Debug, Clone)]
pub struct Trigger(std::sync::Arc<watch::Sender<bool>>);

/// A cloneable "stop now" signal.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new linked pair.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(std::sync::Arc::new(tx)), Shutdown(rx))
}

impl Trigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// A signal that never fires.
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        std::mem::forget(tx);
        Shutdown(rx)
    }
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }
    /// Resolves once the signal fires (at once if it already has).
    pub async fn wait(&mut self) {
        while !*self.0.borrow_and_update() {
            if self.0.changed().await.is_err() {
                // Sender gone without firing: never resolve.
                std::future::pending::<()>().await;
            }
        }
    }
}
