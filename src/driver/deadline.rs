//! A deadline on one awaited port call.
//!
//! postgres.js can leave a query on a connection whose socket closed
//! mid-write unanswered forever. Awaiting such a query would stall the
//! worker for good (a claim that never returns means no claim ever again),
//! so every database call the driver makes is raced against a timer; the
//! core chooses how long each may take.

use js_sys::{Array, Function, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// The `code` of the error a call that missed its deadline rejects with.
/// The classifier counts it as a lost connection.
pub const CALL_TIMEOUT: &str = "CALL_TIMEOUT";

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(callback: &Function, ms: f64) -> JsValue;

    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
}

/// Awaits `call`, or fails with a [`CALL_TIMEOUT`] error after `ms`. The
/// timer is cleared as soon as the call settles, so a stopped worker leaves
/// none behind. The call itself is not cancelled: a late answer is ignored,
/// and the fence makes a late write harmless.
pub async fn within(call: Promise, ms: f64, what: &str) -> Result<JsValue, JsValue> {
    let error = js_sys::Error::new(&format!("{what} did not answer within {ms} ms"));
    let _ = Reflect::set(&error, &"code".into(), &CALL_TIMEOUT.into());
    let mut reject_slot: Option<Function> = None;
    let expired = Promise::new(&mut |_resolve, reject| reject_slot = Some(reject));
    let Some(reject) = reject_slot else {
        // A Promise runs its executor at once; without it there is no timer
        // to race, so wait for the call alone.
        return JsFuture::from(call).await;
    };
    let fire = Closure::once(move || {
        let _ = reject.call1(&JsValue::NULL, &error);
    });
    let timer = set_timeout(fire.as_ref().unchecked_ref(), ms);
    let result = JsFuture::from(Promise::race(&Array::of2(&call, &expired))).await;
    clear_timeout(&timer);
    drop(fire);
    result
}
