//! The contract versions a plugin may implement, behind one call surface.
//!
//! * `switchyard:plugin/plugin@0.1.0` (`wit/v0.1.0/plugin.wit`): the first
//!   contract; plugins built against it load and run unchanged.
//! * `switchyard:plugin/plugin@0.2.0` (`wit/plugin.wit`): adds the error
//!   kind `rejected` (fail the delivery at once, no retry).
//! * `switchyard:plugin/batching-plugin@0.2.0`: 0.2.0 plus the optional
//!   `batch` export (provider limits, merge several bodies into one).
//!
//! Which one a component implements is read from the versions of the
//! `switchyard:plugin` interfaces it imports, then checked by wasmtime
//! when the component is pre-instantiated against that world.

use wasmtime::Store;
use wasmtime::component::{Component, InstancePre, Linker};

use super::engine::{
    State, WORLD_V1, WORLD_V2, WORLD_V2_BATCH, bindings, bindings_v1, wit, wit_batch, wit_v1,
};
use super::types::{BatchLimits, Merged, Outcome, PluginError, PluginErrorKind, PluginEvent};

/// A component pre-instantiated against the world it implements.
pub(crate) enum Pre {
    V1(bindings_v1::PluginPre<State>),
    V2 {
        pre: InstancePre<State>,
        plugin: bindings::PluginIndices,
        batch: Option<wit_batch::GuestIndices>,
    },
}

/// One instance of a plugin, of whichever contract version.
pub(crate) enum Instance {
    V1(bindings_v1::Plugin),
    V2(bindings::Plugin, Option<wit_batch::Guest>),
}

impl Pre {
    /// Finds the world `component` implements and pre-instantiates it.
    pub(crate) fn new(
        linker: &Linker<State>,
        engine: &wasmtime::Engine,
        component: &Component,
    ) -> wasmtime::Result<Pre> {
        let pre = linker.instantiate_pre(component)?;
        if imports_v1(engine, component) {
            return Ok(Pre::V1(bindings_v1::PluginPre::new(pre)?));
        }
        let plugin = bindings::PluginIndices::new(&pre)?;
        let batch = wit_batch::GuestIndices::new(&pre).ok();
        Ok(Pre::V2 { pre, plugin, batch })
    }

    pub(crate) fn component(&self) -> &Component {
        match self {
            Pre::V1(p) => p.instance_pre().component(),
            Pre::V2 { pre, .. } => pre.component(),
        }
    }

    /// The world's name, as `plugin check` reports it.
    pub(crate) fn world(&self) -> &'static str {
        match self {
            Pre::V1(_) => WORLD_V1,
            Pre::V2 { batch: None, .. } => WORLD_V2,
            Pre::V2 { batch: Some(_), .. } => WORLD_V2_BATCH,
        }
    }

    pub(crate) fn instantiate(&self, store: &mut Store<State>) -> wasmtime::Result<Instance> {
        match self {
            Pre::V1(pre) => Ok(Instance::V1(pre.instantiate(store)?)),
            Pre::V2 { pre, plugin, batch } => {
                let instance = pre.instantiate(&mut *store)?;
                let p = plugin.load(&mut *store, &instance)?;
                let b = match batch {
                    Some(b) => Some(b.load(&mut *store, &instance)?),
                    None => None,
                };
                Ok(Instance::V2(p, b))
            }
        }
    }
}

/// Whether the component imports the 0.1.0 interfaces (`types`, `log`).
fn imports_v1(engine: &wasmtime::Engine, component: &Component) -> bool {
    component
        .component_type()
        .imports(engine)
        .any(|(name, _)| name.starts_with("switchyard:plugin/") && name.ends_with("@0.1.0"))
}

/// A plugin's answer in the host's terms: `Ok(Err(e))` is an error the
/// plugin returned; `Err` is a wasmtime failure (trap, deadline...).
type Answer<T> = wasmtime::Result<Result<T, (PluginErrorKind, String)>>;

impl Instance {
    pub(crate) fn configure(&self, store: &mut Store<State>, config: &str) -> Answer<()> {
        Ok(match self {
            Instance::V1(p) => p.call_configure(store, config)?.map_err(from_v1),
            Instance::V2(p, _) => p.call_configure(store, config)?.map_err(from_v2),
        })
    }

    pub(crate) fn handle(&self, store: &mut Store<State>, event: &PluginEvent) -> Answer<Outcome> {
        Ok(match self {
            Instance::V1(p) => {
                let ev = wit_v1::Event {
                    id: event.id.clone(),
                    account: event.account.clone(),
                    endpoint: event.endpoint.clone(),
                    event_type: event.event_type.clone(),
                    created: event.created.clone(),
                    created_ms: event.created_ms,
                    payload: event.payload.clone(),
                };
                p.call_handle(store, &ev)?
                    .map(|o| match o {
                        wit_v1::Outcome::Pass => Outcome::Pass,
                        wit_v1::Outcome::Skip(r) => Outcome::Skip(r),
                        wit_v1::Outcome::Rewrite(p) => Outcome::Rewrite(p),
                        wit_v1::Outcome::Replace(r) => Outcome::Replace {
                            body: r.body,
                            content_type: r.content_type,
                            headers: r.headers,
                        },
                    })
                    .map_err(from_v1)
            }
            Instance::V2(p, _) => {
                let ev = wit::Event {
                    id: event.id.clone(),
                    account: event.account.clone(),
                    endpoint: event.endpoint.clone(),
                    event_type: event.event_type.clone(),
                    created: event.created.clone(),
                    created_ms: event.created_ms,
                    payload: event.payload.clone(),
                };
                p.call_handle(store, &ev)?
                    .map(|o| match o {
                        wit::Outcome::Pass => Outcome::Pass,
                        wit::Outcome::Skip(r) => Outcome::Skip(r),
                        wit::Outcome::Rewrite(p) => Outcome::Rewrite(p),
                        wit::Outcome::Replace(r) => Outcome::Replace {
                            body: r.body,
                            content_type: r.content_type,
                            headers: r.headers,
                        },
                    })
                    .map_err(from_v2)
            }
        })
    }

    /// The provider limits of a merging plugin; `None` when it does not merge.
    pub(crate) fn limits(&self, store: &mut Store<State>) -> wasmtime::Result<Option<BatchLimits>> {
        let Instance::V2(_, Some(b)) = self else {
            return Ok(None);
        };
        Ok(b.call_limits(store)?.map(|l| BatchLimits {
            max_events: l.max_events,
            max_bytes: l.max_bytes,
            max_item_bytes: l.max_item_bytes,
        }))
    }

    /// Merges bodies; a plugin without `batch` answers `Internal` (callers
    /// ask `limits` first).
    pub(crate) fn merge(&self, store: &mut Store<State>, items: &[Vec<u8>]) -> Answer<Merged> {
        let Instance::V2(_, Some(b)) = self else {
            return Ok(Err((
                PluginErrorKind::Internal,
                "the plugin does not export `batch`".into(),
            )));
        };
        Ok(b.call_merge(store, items)?
            .map(|m| Merged {
                body: m.body,
                content_type: m.content_type,
                headers: m.headers,
                refused: m.refused,
            })
            .map_err(from_v2))
    }
}

fn from_v1(e: wit_v1::Error) -> (PluginErrorKind, String) {
    let kind = match e.kind {
        wit_v1::ErrorKind::BadConfig => PluginErrorKind::BadConfig,
        wit_v1::ErrorKind::BadInput => PluginErrorKind::BadInput,
        wit_v1::ErrorKind::Internal => PluginErrorKind::Internal,
    };
    (kind, e.message)
}

fn from_v2(e: wit::Error) -> (PluginErrorKind, String) {
    let kind = match e.kind {
        wit::ErrorKind::BadConfig => PluginErrorKind::BadConfig,
        wit::ErrorKind::BadInput => PluginErrorKind::BadInput,
        wit::ErrorKind::Internal => PluginErrorKind::Internal,
        wit::ErrorKind::Rejected => PluginErrorKind::Rejected,
    };
    (kind, e.message)
}

/// Builds a [`PluginError`] from a plugin's answer.
pub(crate) fn error(plugin: &str, (kind, message): (PluginErrorKind, String)) -> PluginError {
    PluginError::new(plugin, kind, message)
}
