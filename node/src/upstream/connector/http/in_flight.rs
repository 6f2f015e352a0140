//! A request the upstream is still working on, cancelled there when its call ends first.

use super::poster::Poster;
use crate::upstream::connector::cancelled;
use http::HeaderMap;

/// Cancels a request at the upstream if its call ends before the answer does.
pub(super) struct InFlight {
    pub(super) poster: Poster,
    pub(super) id: u64,
    pub(super) armed: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let poster = self.poster.clone();
        let msg = cancelled(self.id);
        tokio::spawn(async move {
            let _ = poster.post(&msg, HeaderMap::new()).await;
        });
    }
}
