//! The call log and wiremock-style expectations.
//!
//! Every RPC the mock serves is recorded with its method, the decoded request, the status code it
//! ended with, the fault injected (if any) and when it happened. Expectations
//! (`mock.expect(Method::CreateMachine).times(1)`) count matching calls as they finish and are
//! verified when the [`MockRuntime`](crate::MockRuntime) is dropped.

use std::{
    any::Any,
    collections::VecDeque,
    fmt,
    ops::{Bound, RangeBounds},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, SystemTime},
};

use tonic::Code;

use crate::{Method, fault::Effect, lock};

/// A decoded request message, inspectable as its concrete type or through `Debug`.
pub trait RequestMessage: Any + fmt::Debug + Send + Sync {
    /// The message as `Any`, for downcasting.
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any + fmt::Debug + Send + Sync> RequestMessage for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A request as recorded: kept encoded (one allocation instead of a deep clone) and decoded on
/// first access.
pub(crate) struct Recorded {
    bytes: Box<[u8]>,
    decode: fn(&[u8]) -> Box<dyn RequestMessage>,
    decoded: OnceLock<Box<dyn RequestMessage>>,
}

fn decode_boxed<T: prost::Message + Default + RequestMessage>(
    bytes: &[u8],
) -> Box<dyn RequestMessage> {
    // The bytes came from encoding a `T`, so decoding succeeds; a default is the safe fallback.
    Box::new(T::decode(bytes).unwrap_or_default())
}

impl Recorded {
    pub(crate) fn new<T: prost::Message + Default + RequestMessage>(msg: &T) -> Arc<Self> {
        Arc::new(Recorded {
            bytes: msg.encode_to_vec().into_boxed_slice(),
            decode: decode_boxed::<T>,
            decoded: OnceLock::new(),
        })
    }

    fn get(&self) -> &dyn RequestMessage {
        self.decoded
            .get_or_init(|| (self.decode)(&self.bytes))
            .as_ref()
    }
}

/// One recorded RPC.
#[derive(Clone)]
pub struct Call {
    /// Position in the log, starting at 0 (keeps counting after [`crate::MockHandle::clear_calls`]).
    pub seq: u64,
    /// Which RPC.
    pub method: Method,
    /// The request (see [`Call::request`] and [`Call::request_message`]).
    pub(crate) recorded: Arc<Recorded>,
    /// The final status code; `None` while the call is still running (for example hanging).
    pub code: Option<Code>,
    /// The status message of a failed call ("" on success).
    pub message: String,
    /// The fault that was injected into this call, if any.
    pub fault: Option<Effect>,
    /// Wall-clock time the call arrived (follows tokio's clock, see the crate docs).
    pub at: SystemTime,
    /// Time since the mock started when the call arrived.
    pub elapsed: Duration,
}

impl Call {
    /// The request as its concrete message type, e.g. `call.request::<machine::CreateMachineRequest>()`.
    pub fn request<T: Any>(&self) -> Option<&T> {
        self.recorded.get().as_any().downcast_ref::<T>()
    }

    /// The request as a `Debug`-able, downcastable message.
    pub fn request_message(&self) -> &dyn RequestMessage {
        self.recorded.get()
    }

    /// Whether the call finished with OK.
    pub fn is_ok(&self) -> bool {
        self.code == Some(Code::Ok)
    }
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The request is left out on purpose: it may hold ignition or secret data.
        f.debug_struct("Call")
            .field("seq", &self.seq)
            .field("method", &self.method.name())
            .field("code", &self.code)
            .field("message", &self.message)
            .field("fault", &self.fault)
            .field("elapsed", &self.elapsed)
            .finish()
    }
}

type Predicate = Arc<dyn Fn(&Call) -> bool + Send + Sync>;

pub(crate) struct ExpectationState {
    pub(crate) method: Method,
    pub(crate) name: Option<String>,
    pub(crate) min: u64,
    pub(crate) max: Option<u64>,
    pub(crate) code: Option<Code>,
    pub(crate) predicate: Option<Predicate>,
    pub(crate) matched: u64,
}

impl ExpectationState {
    fn matches(&self, call: &Call) -> bool {
        call.method == self.method
            && self.code.is_none_or(|c| call.code == Some(c))
            && self.predicate.as_ref().is_none_or(|p| p(call))
    }

    fn describe_range(&self) -> String {
        match (self.min, self.max) {
            (min, Some(max)) if min == max => format!("exactly {min}"),
            (0, Some(max)) => format!("at most {max}"),
            (min, None) => format!("at least {min}"),
            (min, Some(max)) => format!("between {min} and {max}"),
        }
    }

    pub(crate) fn failure(&self) -> Option<String> {
        let ok = self.matched >= self.min && self.max.is_none_or(|max| self.matched <= max);
        if ok {
            return None;
        }
        let what = self.name.clone().unwrap_or_else(|| {
            let mut s = self.method.name().to_owned();
            if let Some(code) = self.code {
                s.push_str(&format!(" with code {code:?}"));
            }
            if self.predicate.is_some() {
                s.push_str(" matching a predicate");
            }
            s
        });
        Some(format!(
            "expected {} call(s) of {what}, got {}",
            self.describe_range(),
            self.matched
        ))
    }
}

/// An expectation on the calls of one method, created by [`crate::MockHandle::expect`].
///
/// By default at least one call must match. Refine it with the builder methods; they take effect
/// at once, so the returned value may be dropped. Expectations are checked when the
/// [`MockRuntime`](crate::MockRuntime) drops (a panic on the test's thread) or by
/// [`crate::MockHandle::verify`].
#[derive(Clone)]
pub struct Expectation {
    pub(crate) state: Arc<Mutex<ExpectationState>>,
}

impl Expectation {
    /// Exactly `n` matching calls.
    pub fn times(self, n: u64) -> Self {
        self.range(n..=n)
    }

    /// A number of matching calls in `range`, e.g. `2..=5` or `1..`.
    pub fn range(self, range: impl RangeBounds<u64>) -> Self {
        {
            let mut state = lock(&self.state);
            state.min = match range.start_bound() {
                Bound::Included(n) => *n,
                Bound::Excluded(n) => n.saturating_add(1),
                Bound::Unbounded => 0,
            };
            state.max = match range.end_bound() {
                Bound::Included(n) => Some(*n),
                Bound::Excluded(n) => Some(n.saturating_sub(1)),
                Bound::Unbounded => None,
            };
        }
        self
    }

    /// At least `n` matching calls.
    pub fn at_least(self, n: u64) -> Self {
        self.range(n..)
    }

    /// At most `n` matching calls.
    pub fn at_most(self, n: u64) -> Self {
        self.range(..=n)
    }

    /// No matching call at all.
    pub fn never(self) -> Self {
        self.times(0)
    }

    /// Only count calls that ended with `code`.
    pub fn with_code(self, code: Code) -> Self {
        lock(&self.state).code = Some(code);
        self
    }

    /// Only count calls for which `predicate` holds (e.g. on `call.request::<T>()`).
    pub fn matching(self, predicate: impl Fn(&Call) -> bool + Send + Sync + 'static) -> Self {
        lock(&self.state).predicate = Some(Arc::new(predicate));
        self
    }

    /// A name for failure messages.
    pub fn named(self, name: impl Into<String>) -> Self {
        lock(&self.state).name = Some(name.into());
        self
    }

    /// How many calls matched so far.
    pub fn matched(&self) -> u64 {
        lock(&self.state).matched
    }
}

impl fmt::Debug for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("Expectation")
            .field("method", &state.method)
            .field("range", &state.describe_range())
            .field("matched", &state.matched)
            .finish()
    }
}

/// The log itself: a ring of the last `capacity` calls plus the expectations.
pub(crate) struct CallLog {
    pub(crate) calls: VecDeque<Call>,
    pub(crate) capacity: usize,
    pub(crate) next_seq: u64,
    pub(crate) expectations: Vec<Arc<Mutex<ExpectationState>>>,
}

impl CallLog {
    pub(crate) fn new(capacity: usize) -> Self {
        CallLog {
            calls: VecDeque::new(),
            capacity,
            next_seq: 0,
            expectations: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, mut call: Call) -> u64 {
        call.seq = self.next_seq;
        self.next_seq += 1;
        if self.capacity > 0 {
            if self.calls.len() >= self.capacity {
                self.calls.pop_front();
            }
            self.calls.push_back(call);
        }
        self.next_seq - 1
    }

    /// Sets the outcome of call `seq` and counts it against the expectations.
    pub(crate) fn finish(
        &mut self,
        seq: u64,
        method: Method,
        recorded: &Arc<Recorded>,
        code: Code,
        message: &str,
        fault: Option<Effect>,
    ) {
        // The ring holds consecutive sequence numbers (pushed in order, dropped from the front or
        // cleared), so the position of `seq` is its distance from the front.
        let idx = self
            .calls
            .front()
            .and_then(|front| usize::try_from(seq.checked_sub(front.seq)?).ok())
            .filter(|&idx| self.calls.get(idx).is_some_and(|c| c.seq == seq));
        if let Some(idx) = idx {
            let call = &mut self.calls[idx];
            call.code = Some(code);
            call.message = message.to_owned();
        }
        if self.expectations.is_empty() {
            return;
        }
        let view = match idx {
            Some(idx) => self.calls[idx].clone(),
            None => Call {
                seq,
                method,
                recorded: recorded.clone(),
                code: Some(code),
                message: message.to_owned(),
                fault,
                at: SystemTime::UNIX_EPOCH,
                elapsed: Duration::ZERO,
            },
        };
        for exp in &self.expectations {
            let mut exp = lock(exp);
            if exp.matches(&view) {
                exp.matched += 1;
            }
        }
    }
}
