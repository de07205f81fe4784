//! The wasmtime engine and the sandbox every plugin call runs in: engine
//! configuration (component model, epoch interruption, pooling allocator),
//! the epoch ticker, the per-store state (empty WASI context, memory limiter,
//! the `log` import) and the mapping of wasmtime errors to [`PluginErrorKind`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::types::{PluginError, PluginErrorKind, RuntimeSettings};

/// The current contract, `switchyard:plugin@0.2.0` (`wit/plugin.wit`):
/// world `plugin`, and the optional `batch` export of `batching-plugin`.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit",
    });
}

/// The `batch` export of `switchyard:plugin/batching-plugin@0.2.0`, bound on
/// its own so a 0.2.0 component without it still loads.
pub(crate) mod batch_bindings {
    wasmtime::component::bindgen!({
        world: "batching-plugin",
        path: "../wit",
        with: {
            "switchyard:plugin/types": super::bindings::switchyard::plugin::types,
            "switchyard:plugin/log": super::bindings::switchyard::plugin::log,
        },
    });
}

/// The first contract, `switchyard:plugin@0.1.0` (`wit/v0.1.0/plugin.wit`),
/// bound as well: plugins built against it load and run unchanged.
pub(crate) mod bindings_v1 {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit/v0.1.0",
    });
}

pub(crate) use batch_bindings::exports::switchyard::plugin::batch as wit_batch;
pub(crate) use bindings::switchyard::plugin::types as wit;
pub(crate) use bindings_v1::switchyard::plugin::types as wit_v1;

/// The worlds a plugin may implement, as `plugin check` names them.
pub const WORLD_V1: &str = "switchyard:plugin/plugin@0.1.0";
pub const WORLD_V2: &str = "switchyard:plugin/plugin@0.2.0";
pub const WORLD_V2_BATCH: &str = "switchyard:plugin/batching-plugin@0.2.0";

/// How often the ticker thread advances the engine's epoch.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Knobs that are not part of `router.toml` but matter to benchmarks and
/// tests: instance strategy and pooling-allocator sizing.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Keep a pool of configured instances per binding and reuse them
    /// (default). `false` instantiates and configures a fresh instance for
    /// every call (measured in `BENCHMARKS.md`).
    pub warm_instances: bool,
    /// Most idle warm instances kept per binding (per plugin version), and
    /// the most chains an endpoint runs at once (`pool_size` overrides it).
    pub max_idle_per_binding: usize,
    /// Use wasmtime's pooling allocator (falls back to on-demand allocation
    /// when the pool cannot be reserved).
    pub pooling: bool,
    /// Component instances the pool can hold at once (live calls plus idle
    /// warm instances, across all plugins). Each reserves one linear-memory
    /// slot of `memory_reservation` (default 4 GiB + 32 MiB guard) of
    /// virtual address space, no RAM: 128 slots = ~516 GiB virtual.
    /// At most three quarters of them are kept as idle warm instances.
    pub pool_instances: u32,
    /// Virtual memory reserved per linear memory. `None`: wasmtime's default
    /// (4 GiB + guard on 64-bit hosts, which lets compiled code skip bounds
    /// checks). `Some(n)`: reserve `n` bytes (at least the memory cap) and
    /// let the compiler emit bounds checks.
    pub memory_reservation: Option<u64>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        RuntimeOptions {
            warm_instances: true,
            // Also the most chains an endpoint runs at once (its
            // `pool_size`): 4 per core, so a cheap plugin's calls are not
            // held to the latency of a blocking-pool round trip on a busy
            // box (BENCHMARKS.md, "Plugin calls wait for a warm instance"), while a CPython
            // endpoint keeps at most 8 warm instances here (the idle byte
            // budget bounds them all).
            max_idle_per_binding: (4 * cores).max(8),
            pooling: true,
            pool_instances: 128,
            memory_reservation: None,
        }
    }
}

fn base_config(settings: &RuntimeSettings, options: &RuntimeOptions) -> Config {
    let mut config = Config::new();
    if let Some(bytes) = options.memory_reservation {
        let bytes = bytes.max(settings.max_memory().div_ceil(65536) as u64 * 65536);
        // Small reservations: bounded virtual memory, explicit bounds checks.
        config.memory_reservation(bytes);
        config.memory_guard_size(64 << 10);
        config.memory_reservation_for_growth(0);
    }

    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(1 << 20);
    config.parallel_compilation(true);
    config
}

/// Builds the engine; returns it and whether the pooling allocator is used.
pub(crate) fn make_engine(
    settings: &RuntimeSettings,
    options: &RuntimeOptions,
) -> anyhow::Result<(Engine, bool)> {
    if options.pooling {
        let mut config = base_config(settings, options);
        let mut pool = PoolingAllocationConfig::default();
        let instances = options.pool_instances.max(8);
        // A Rust `wasm32-wasip2` component has a handful of core instances
        // (the program, the WASI adapter's shims) and one or two memories.
        pool.total_component_instances(instances)
            .total_core_instances(instances * 8)
            .max_core_instances_per_component(32)
            .total_memories(instances)
            .total_tables(instances * 2)
            .total_stacks(0)
            // The pool's per-memory cap: the largest sandbox limit (a
            // plugin may have its own) rounded up to a 64 KiB page; the
            // `Limiter` enforces each plugin's exact figure.
            .max_memory_size(settings.max_memory().div_ceil(65536) * 65536)
            .table_elements(20_000)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        match Engine::new(&config) {
            Ok(engine) => return Ok((engine, true)),
            Err(e) => tracing::warn!(
                error = %e,
                "cannot reserve the plugin instance pool; falling back to on-demand allocation"
            ),
        }
    }
    Ok((Engine::new(&base_config(settings, options))?, false))
}

/// Advances the engine's epoch every [`TICK`] until dropped.
pub(crate) struct Ticker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    pub(crate) fn start(engine: &Engine) -> anyhow::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                // The epoch follows real time: a late wake-up (a loaded
                // machine) catches up, but by at most MAX_CATCH_UP ticks,
                // so a long stall of this thread cannot expire the deadline
                // of calls that barely ran.
                const MAX_CATCH_UP: u128 = 4;
                let start = std::time::Instant::now();
                let mut ticks: u128 = 0;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    let Some(engine) = weak.upgrade() else { break };
                    let due = start.elapsed().as_micros() / TICK.as_micros();
                    let n = due.saturating_sub(ticks).clamp(1, MAX_CATCH_UP);
                    for _ in 0..n {
                        engine.increment_epoch();
                    }
                    ticks = (ticks + n).max(due.saturating_sub(MAX_CATCH_UP));
                }
            })?;
        Ok(Ticker {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Deadline in epoch ticks (at least 1).
pub(crate) fn deadline_ticks(deadline: Duration) -> u64 {
    (deadline.as_micros().div_ceil(TICK.as_micros()) as u64).max(1)
}

/// Memory (and table) limiter that remembers whether it refused a growth, so
/// the trap that follows (Rust's allocation-failure abort) is reported as
/// out-of-memory rather than a generic trap.
pub(crate) struct Limiter {
    memory_limit: usize,
    pub(crate) denied: bool,
    /// Bytes of linear memory this instance holds (all its memories): what
    /// an idle warm instance costs, for the pools' byte budget.
    pub(crate) used: usize,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.denied = true;
            return Ok(false);
        }
        self.used += desired.saturating_sub(current);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        16
    }
}

/// A wall clock stuck at the Unix epoch: plugins get no ambient time (the
/// event carries its creation time).
struct FrozenWallClock;
impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// A monotonic clock that never advances.
struct FrozenMonotonicClock;
impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Log bytes one call may write to the host's log; past it lines are
/// dropped and counted (one warning per call says how many).
pub(crate) const LOG_BYTES_PER_CALL: usize = 64 << 10;

/// Per-store state: the (empty) WASI context, the limiter, the plugin's name
/// for its log lines, the last panic message it logged, and this call's log
/// budget.
pub(crate) struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    plugin: Arc<str>,
    pub(crate) panic_message: Option<String>,
    log_bytes: usize,
    log_dropped_lines: u64,
    log_dropped_bytes: u64,
}

impl State {
    /// Resets the per-call log budget.
    pub(crate) fn begin_call(&mut self) {
        self.log_bytes = 0;
        self.log_dropped_lines = 0;
        self.log_dropped_bytes = 0;
    }

    /// Lines and bytes of log dropped by the call that just ended.
    pub(crate) fn log_dropped(&self) -> (u64, u64) {
        (self.log_dropped_lines, self.log_dropped_bytes)
    }
}

/// Escapes control characters (newlines, ANSI escapes) so a plugin cannot
/// forge log lines or drive the operator's terminal.
fn escape_controls(message: &str) -> String {
    if !message.chars().any(char::is_control) {
        return message.to_string();
    }
    let mut out = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for State {}
impl wit_v1::Host for State {}

impl bindings::switchyard::plugin::log::Host for State {
    fn log(&mut self, level: bindings::switchyard::plugin::log::Level, message: String) {
        use bindings::switchyard::plugin::log::Level as L;
        let level = match level {
            L::Trace => tracing::Level::TRACE,
            L::Debug => tracing::Level::DEBUG,
            L::Info => tracing::Level::INFO,
            L::Warn => tracing::Level::WARN,
            L::Error => tracing::Level::ERROR,
        };
        self.log_line(level, message);
    }
}

impl bindings_v1::switchyard::plugin::log::Host for State {
    fn log(&mut self, level: bindings_v1::switchyard::plugin::log::Level, message: String) {
        use bindings_v1::switchyard::plugin::log::Level as L;
        let level = match level {
            L::Trace => tracing::Level::TRACE,
            L::Debug => tracing::Level::DEBUG,
            L::Info => tracing::Level::INFO,
            L::Warn => tracing::Level::WARN,
            L::Error => tracing::Level::ERROR,
        };
        self.log_line(level, message);
    }
}

impl State {
    /// The `log` import of every contract version.
    fn log_line(&mut self, level: tracing::Level, message: String) {
        let plugin = &*self.plugin;
        let is_error = level == tracing::Level::ERROR;
        if self.log_bytes.saturating_add(message.len()) > LOG_BYTES_PER_CALL {
            self.log_dropped_lines += 1;
            self.log_dropped_bytes += message.len() as u64;
            if is_error {
                if let Some(p) = message.strip_prefix("panic: ") {
                    // Raw: `panic_line` makes it one line and escapes it.
                    self.panic_message = Some(p.to_string());
                }
            }
            return;
        }
        self.log_bytes += message.len();
        // Raw: `panic_line` makes it one line and escapes it.
        if is_error {
            if let Some(p) = message.strip_prefix("panic: ") {
                self.panic_message = Some(p.to_string());
            }
        }
        // Cap what one line can put in the host's logs.
        let mut message = escape_controls(&message);
        if message.len() > 8192 {
            let mut cut = 8192;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        match level {
            tracing::Level::TRACE => tracing::trace!(plugin, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(plugin, "{message}"),
            _ => tracing::error!(plugin, "{message}"),
        }
    }
}

/// A store for one instance: empty WASI (no args, env, preopens, network;
/// stdin closed, stdout/stderr discarded; frozen clocks), memory cap.
pub(crate) fn new_store(engine: &Engine, plugin: &Arc<str>, memory_limit: usize) -> Store<State> {
    let wasi = WasiCtx::builder()
        .wall_clock(FrozenWallClock)
        .monotonic_clock(FrozenMonotonicClock)
        .build();
    let state = State {
        wasi,
        table: ResourceTable::new(),
        limiter: Limiter {
            memory_limit,
            denied: false,
            used: 0,
        },
        plugin: plugin.clone(),
        panic_message: None,
        log_bytes: 0,
        log_dropped_lines: 0,
        log_dropped_bytes: 0,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_trap();
    store
}

/// A pollable that is always ready.
struct Ready;

impl wasmtime_wasi::p2::Pollable for Ready {
    fn ready<'a, 'b>(
        &'a mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async {})
    }
}

/// The WASI version whose monotonic clock the linker replaces (the one
/// `wasmtime-wasi` defines; guests importing older 0.2 versions match it).
const WASI_CLOCKS: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// The linker: WASI p2 (sync) plus the `log` import. The monotonic clock's
/// timers are replaced: with the clock frozen, a timer is ready at once, so
/// a guest that sleeps (`std::thread::sleep`, a poll on a timer) does not
/// block its thread in a host call the epoch deadline cannot interrupt; a
/// guest that sleeps in a loop spins and meets its CPU deadline.
pub(crate) fn make_linker(engine: &Engine) -> anyhow::Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    linker.allow_shadowing(true);
    {
        use wasmtime::StoreContextMut;
        use wasmtime::component::Resource;
        use wasmtime_wasi::p2::DynPollable;
        fn ready(mut cx: StoreContextMut<'_, State>) -> wasmtime::Result<Resource<DynPollable>> {
            let table = &mut cx.data_mut().table;
            let r = table.push(Ready)?;
            wasmtime_wasi::p2::subscribe(table, r)
        }
        let mut clock = linker.instance(WASI_CLOCKS)?;
        clock.func_wrap(
            "subscribe-duration",
            |cx: StoreContextMut<'_, State>, (_d,): (u64,)| Ok((ready(cx)?,)),
        )?;
        clock.func_wrap(
            "subscribe-instant",
            |cx: StoreContextMut<'_, State>, (_t,): (u64,)| Ok((ready(cx)?,)),
        )?;
    }
    linker.allow_shadowing(false);
    bindings::Plugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
    bindings_v1::Plugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// Maps an error raised by wasmtime during instantiation or a call.
pub(crate) fn classify(
    plugin: &str,
    err: wasmtime::Error,
    state: &mut State,
    deadline: Duration,
    memory_limit: usize,
) -> PluginError {
    let trap = err.downcast_ref::<wasmtime::Trap>().copied();
    let panic = state.panic_message.take();
    if trap == Some(wasmtime::Trap::Interrupt) {
        return PluginError::new(
            plugin,
            PluginErrorKind::Deadline,
            format!(
                "call exceeded its CPU deadline of {} ms",
                deadline.as_millis()
            ),
        );
    }
    if state.limiter.denied {
        return PluginError::new(
            plugin,
            PluginErrorKind::OutOfMemory,
            format!(
                "plugin hit its memory cap of {} MiB",
                memory_limit as f64 / (1 << 20) as f64
            ),
        );
    }
    let message = match (trap, panic) {
        (_, Some(p)) => panic_line(&p),
        (Some(t), None) => format!("{t}"),
        // Not raised by the guest: instantiation limits, pool exhaustion...
        (None, None) => {
            return PluginError::new(
                plugin,
                PluginErrorKind::Internal,
                format!("cannot run the plugin: {err:#}"),
            );
        }
    };
    PluginError::new(plugin, PluginErrorKind::Trap, message)
}

/// One line for a guest panic: Rust's `panicked at src/lib.rs:56:13:\nboom`
/// becomes `panic at src/lib.rs:56:13: boom` (the error kind, `trap`, is
/// said beside it). Plugins built with any version of the SDK send the
/// former through `log`.
pub(crate) fn panic_line(raw: &str) -> String {
    let raw = raw.trim();
    let (location, message) = match raw.strip_prefix("panicked at ") {
        Some(rest) => match rest.split_once(":\n") {
            Some((loc, msg)) => (Some(loc), msg),
            None => (None, rest),
        },
        None => (None, raw),
    };
    let message = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    // One line, and no control characters a plugin could use to forge
    // log lines or terminal sequences.
    escape_controls(&match location {
        Some(loc) => format!("panic at {loc}: {message}"),
        None => format!("panic: {message}"),
    })
}

#[cfg(test)]
mod tests {
    use super::panic_line;

    #[test]
    fn a_panic_is_one_line_with_its_location() {
        assert_eq!(
            panic_line("panicked at src/lib.rs:56:13:\nboom"),
            "panic at src/lib.rs:56:13: boom"
        );
        assert_eq!(
            panic_line("panicked at src/lib.rs:1:2:\nfirst\n\nsecond\n"),
            "panic at src/lib.rs:1:2: first / second"
        );
        assert_eq!(panic_line("boom"), "panic: boom");
    }
}
