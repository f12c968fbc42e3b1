//! Ids whose operation is under way: a second create of one id, or a
//! second VM boot in one shim, is refused while the first runs, instead of
//! both passing their checks and working on one state directory.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The claim key of booting this shim's VM (no container id has a space).
pub const VM_BOOT: &str = "vm boot";

#[derive(Default)]
pub struct Claims(Arc<Mutex<HashSet<String>>>);

/// Held for the length of the operation; dropping it releases the id.
pub struct Claim {
    set: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Claims {
    /// Claims `id`, or None while another holds it.
    pub fn claim(&self, id: &str) -> Option<Claim> {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(id.to_string()).then(|| Claim {
            set: self.0.clone(),
            id: id.to_string(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        set.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_per_id_until_it_lets_go() {
        let claims = Claims::default();
        let first = claims.claim("c1").expect("first claim");
        assert!(claims.claim("c1").is_none(), "a second claim of c1");
        let other = claims.claim("c2").expect("another id");
        drop(first);
        assert!(claims.claim("c1").is_some(), "c1 released");
        drop(other);
    }

    #[test]
    fn racing_claims_have_one_winner() {
        let claims = Arc::new(Claims::default());
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (claims, barrier) = (claims.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    // Held until every thread has tried.
                    let claim = claims.claim("same");
                    barrier.wait();
                    claim.is_some()
                })
            })
            .collect();
        let won: Vec<bool> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    }
}
