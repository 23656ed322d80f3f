//! Service name -> service.

use std::sync::Arc;

use crate::service::Service;

/// The services of one server, by wire name. A list, searched in order: a
/// server has a handful of services, and comparing a few short names costs
/// less than hashing one (SipHash took a sixth of the server's routing).
#[derive(Default)]
pub(crate) struct Router {
    services: Vec<(&'static str, Arc<dyn Service>)>,
}

impl Router {
    /// Adds `service`; returns its name back if that name is taken.
    pub(crate) fn add(&mut self, service: Arc<dyn Service>) -> Result<(), &'static str> {
        let name = service.name();
        if self.get(name).is_some() {
            return Err(name);
        }
        self.services.push((name, service));
        Ok(())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn Service>> {
        self.services
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, service)| service)
    }

    /// Every service, by name.
    pub(crate) fn services(&self) -> impl Iterator<Item = (&'static str, Arc<dyn Service>)> + '_ {
        self.services
            .iter()
            .map(|(name, service)| (*name, service.clone()))
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.services.iter().map(|(name, _)| *name)
    }
}
