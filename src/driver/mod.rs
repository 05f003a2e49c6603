//! The async loop compiled to wasm.
//!
//! [`WorkerDriver`] owns a core [`Worker`] and a [`WorkerPort`]. It performs
//! each command the core returns by calling the port, and turns every result
//! (or error, classified in [`classify`]) back into an event. Handlers run
//! concurrently: each is a task of its own that reports when it settles, so
//! a free slot is refilled as soon as the core sees the event.

pub mod classify;
mod convert;
mod deadline;
mod port;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use futures::channel::mpsc::{self, UnboundedReceiver, UnboundedSender};
use futures::future::{self, Either};
use futures::StreamExt;
use serde_json::Value;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, spawn_local, JsFuture};

use crate::core::event::{Command, DbError, Event, StopReason};
use crate::core::{Timestamp, Worker};

pub use port::WorkerPort;

/// Validates a user configuration.
///
/// Returns `{ ok: true, config, warnings }` with every default filled in and
/// one warning per deprecated flat key, or `{ ok: false, error }` where
/// `error` names the field, the value and what is allowed. It never throws
/// for a bad configuration: the shim turns `error` into its
/// `EdgeWorkerConfigError`.
#[wasm_bindgen(js_name = validateConfig, unchecked_return_type = "ConfigValidation")]
pub fn validate_config(#[wasm_bindgen(unchecked_param_type = "unknown")] raw: JsValue) -> JsValue {
    convert::validation_result(convert::parse_config(raw))
}

/// The worker loop, driven from JavaScript.
///
/// Build it with a port and a configuration, call `run()` once and await
/// it; call `requestStop()` from a signal handler to make it drain and stop.
#[wasm_bindgen]
pub struct WorkerDriver {
    shared: Rc<Shared>,
}

struct Shared {
    port: WorkerPort,
    worker: RefCell<Worker>,
    events: UnboundedSender<Event>,
    inbox: RefCell<Option<UnboundedReceiver<Event>>>,
}

#[wasm_bindgen]
impl WorkerDriver {
    /// Builds a driver. `config` is validated again (it should come from
    /// `validateConfig`); an invalid one throws an `Error` naming the field.
    /// `seed` (any 32-bit unsigned number) seeds retry jitter and backoff.
    #[wasm_bindgen(constructor)]
    pub fn new(
        port: WorkerPort,
        #[wasm_bindgen(unchecked_param_type = "unknown")] config: JsValue,
        seed: u32,
    ) -> Result<WorkerDriver, JsValue> {
        let parsed = convert::parse_config(config)
            .map_err(|e| JsValue::from(js_sys::Error::new(&e.to_string())))?;
        let (events, inbox) = mpsc::unbounded();
        Ok(WorkerDriver {
            shared: Rc::new(Shared {
                port,
                worker: RefCell::new(Worker::new(parsed.config, seed.into())),
                events,
                inbox: RefCell::new(Some(inbox)),
            }),
        })
    }

    /// Runs the worker until it has stopped. Resolves after the worker row
    /// is marked stopped and the port closed its pool; rejects if the
    /// worker could not start (for example, the migrations are missing) or
    /// if `run` was called before.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn run(&self) -> js_sys::Promise {
        let shared = Rc::clone(&self.shared);
        future_to_promise(async move {
            shared.run_loop().await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Asks the worker to stop claiming and drain by `deadlineMs` (epoch
    /// milliseconds). `reason` is `"shutdown"` (the runtime's
    /// `beforeunload`), `"stop"` or `"deprecated"`; it reaches handlers
    /// through their AbortSignal. Calling it again may only bring the
    /// deadline closer.
    #[wasm_bindgen(js_name = requestStop)]
    pub fn request_stop(
        &self,
        #[wasm_bindgen(unchecked_param_type = "\"shutdown\" | \"stop\" | \"deprecated\"")]
        reason: &str,
        #[wasm_bindgen(js_name = deadlineMs)] deadline_ms: f64,
    ) -> Result<(), JsValue> {
        let reason = match reason {
            "shutdown" => StopReason::Shutdown,
            "stop" => StopReason::Stop,
            "deprecated" => StopReason::Deprecated,
            other => {
                return Err(js_sys::TypeError::new(&format!(
                    "stop reason {other:?} is not allowed; expected \"shutdown\", \"stop\" \
                     or \"deprecated\""
                ))
                .into())
            }
        };
        let deadline = convert::timestamp(deadline_ms);
        // The loop may have finished already; then there is nothing to stop.
        let _ = self
            .shared
            .events
            .unbounded_send(Event::StopRequested { reason, deadline });
        Ok(())
    }
}

impl Shared {
    fn now(&self) -> Timestamp {
        convert::timestamp(self.port.now())
    }

    async fn run_loop(self: &Rc<Self>) -> Result<(), JsValue> {
        let mut inbox = self
            .inbox
            .borrow_mut()
            .take()
            .ok_or_else(|| js_sys::Error::new("WorkerDriver.run() was already called"))?;
        self.worker.borrow_mut().start(self.now());
        // The pending timer and the time it was set for; kept across turns
        // so that an unchanged wake-up does not re-arm a timer.
        let mut timer: Option<(Timestamp, JsFuture)> = None;
        loop {
            let commands = self.worker.borrow_mut().poll(self.now());
            for command in commands {
                self.perform(command);
            }
            if let Some(result) = self.worker.borrow().stopped() {
                return result.map_err(|message| js_sys::Error::new(&message).into());
            }
            let wake = self.worker.borrow().next_wake();
            let event = match wake {
                None => {
                    timer = None;
                    inbox.next().await
                }
                Some(at) => {
                    if timer.as_ref().map(|(t, _)| *t) != Some(at) {
                        let ms = self.now().until(at).as_millis() as f64;
                        timer = Some((at, JsFuture::from(self.port.sleep(ms)?)));
                    }
                    let (_, sleeping) = timer.as_mut().expect("timer was just set");
                    match future::select(inbox.next(), sleeping).await {
                        Either::Left((event, _)) => event,
                        Either::Right(_) => {
                            timer = None;
                            continue;
                        }
                    }
                }
            };
            let Some(event) = event else {
                return Err(js_sys::Error::new("worker event channel closed").into());
            };
            let mut worker = self.worker.borrow_mut();
            worker.handle(self.now(), event);
            // Take everything else that is ready so one poll batches it.
            while let Ok(event) = inbox.try_recv() {
                worker.handle(self.now(), event);
            }
        }
    }

    /// Starts one command. Synchronous ones happen now; the others run as
    /// tasks that report back through the event channel.
    fn perform(self: &Rc<Self>, command: Command) {
        let (query_timeout, claim_timeout) = {
            let worker = self.worker.borrow();
            (
                worker.config().query_timeout(),
                worker.config().claim_timeout(),
            )
        };
        match command {
            Command::Log(record) => self.log(record.level.as_str(), record.event, record.fields),
            Command::AbortHandler { msg_id, reason } => {
                if let Err(e) = self
                    .port
                    .abort_handler(&msg_id.to_string(), reason.as_str())
                {
                    self.log_js_error("abort_handler", &e);
                }
            }
            Command::CancelClaim => {
                if let Err(e) = self.port.cancel_claim() {
                    self.log_js_error("cancel_claim", &e);
                }
            }
            Command::Setup => self.spawn(move |s| async move {
                let result = async {
                    call(s.port.ensure_queue(), query_timeout, "ensure_queue").await?;
                    call(s.port.register(), query_timeout, "register").await
                }
                .await;
                match result {
                    Ok(_) => Event::SetupFinished,
                    Err(e) => Event::SetupFailed(e),
                }
            }),
            Command::Claim {
                qty,
                vt,
                max_poll_seconds,
                poll_interval_ms,
            } => self.spawn(move |s| async move {
                let claim = s.port.claim(
                    qty,
                    vt.as_secs_f64().ceil(),
                    max_poll_seconds,
                    poll_interval_ms,
                );
                let result = call(claim, claim_timeout, "claim")
                    .await
                    .and_then(|v| convert::claimed(&v));
                match result {
                    Ok(claimed) => Event::ClaimFinished(claimed),
                    Err(e) => Event::ClaimFailed(e),
                }
            }),
            Command::StartHandler {
                msg_id,
                read_ct,
                attempt,
            } => self.spawn(move |s| async move {
                let settled = match s.port.start_handler(&msg_id.to_string(), read_ct, attempt) {
                    Ok(promise) => JsFuture::from(promise).await,
                    Err(e) => Err(e),
                };
                Event::HandlerFinished {
                    msg_id,
                    read_ct,
                    outcome: convert::outcome(settled),
                }
            }),
            Command::Write { id, batch } => self.spawn(move |s| async move {
                let result = call(convert::write(&s.port, &batch), query_timeout, batch.kind())
                    .await
                    .and_then(|v| convert::ids(&v));
                match result {
                    Ok(applied) => Event::WriteFinished { id, applied },
                    Err(error) => Event::WriteFailed { id, error },
                }
            }),
            Command::Heartbeat(stats) => self.spawn(move |s| async move {
                let beat = s.port.heartbeat(convert::stats(&stats));
                let result = call(beat, query_timeout, "heartbeat")
                    .await
                    .and_then(|v| convert::deprecated(&v));
                match result {
                    Ok(deprecated) => Event::HeartbeatFinished { deprecated },
                    Err(e) => Event::HeartbeatFailed(e),
                }
            }),
            Command::MarkStopped(stats) => self.spawn(move |s| async move {
                let stop = s.port.mark_stopped(convert::stats(&stats));
                if let Err(e) = call(stop, query_timeout, "mark_stopped").await {
                    s.log(
                        "warn",
                        "mark_stopped_failed",
                        vec![("error", Value::from(e.message))],
                    );
                }
                Event::MarkStoppedFinished
            }),
        }
    }

    fn spawn<F, Fut>(self: &Rc<Self>, task: F)
    where
        F: FnOnce(Rc<Shared>) -> Fut,
        Fut: std::future::Future<Output = Event> + 'static,
    {
        let shared = Rc::clone(self);
        let future = task(Rc::clone(self));
        spawn_local(async move {
            let event = future.await;
            // After the loop ended nobody listens; the result no longer
            // matters.
            let _ = shared.events.unbounded_send(event);
        });
    }

    fn log(&self, level: &str, event: &str, fields: Vec<(&'static str, Value)>) {
        // A logger that throws must not take the worker down with it.
        let _ = self.port.log(level, event, convert::fields(fields));
    }

    fn log_js_error(&self, call: &'static str, error: &JsValue) {
        let error = convert::db_error(error);
        self.log(
            "warn",
            "port_call_failed",
            vec![
                ("call", Value::from(call)),
                ("error", Value::from(error.message)),
            ],
        );
    }
}

/// Awaits a port call that returns a promise, for at most `timeout`,
/// classifying any failure.
async fn call(
    started: Result<js_sys::Promise, JsValue>,
    timeout: Duration,
    what: &str,
) -> Result<JsValue, DbError> {
    let promise = started.map_err(|e| convert::db_error(&e))?;
    deadline::within(promise, timeout.as_millis() as f64, what)
        .await
        .map_err(|e| convert::db_error(&e))
}
