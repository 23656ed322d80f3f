//! Service name -> service.

use std::collections::HashMap;
use std::sync::Arc;

use crate::service::Service;

/// The services of one server, by wire name.
#[derive(Default)]
pub(crate) struct Router {
    services: HashMap<&'static str, Arc<dyn Service>>,
}

impl Router {
    /// Adds `service`; returns its name back if that name is taken.
    pub(crate) fn add(&mut self, service: Arc<dyn Service>) -> Result<(), &'static str> {
        let name = service.name();
        if self.services.contains_key(name) {
            return Err(name);
        }
        self.services.insert(name, service);
        Ok(())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn Service>> {
        self.services.get(name)
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.services.keys().copied()
    }
}
