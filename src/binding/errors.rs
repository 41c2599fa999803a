//! Errors as JS sees them: [`Coded`] (a stable `code` and a message, see README, "Error codes"),
//! thrown by [`js`] as index.js's `ClusterShmError`; the mapping of every core error to its code;
//! and [`whole`], the check of JS numbers used as sizes and offsets.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::core::map::MapError;
use crate::core::objects::{ObjectError, OutOfBounds};
use crate::core::semaphore::AcquireError;
use crate::core::topics::TopicError;
use crate::core::{AttachError, InitError, SendError, WriteError};

/// A JS error with a stable `code` (see README, "Error codes").
pub struct Coded {
    code: &'static str,
    message: String,
}

pub(super) type CodedResult<T> = std::result::Result<T, Coded>;

pub(super) fn coded(code: &'static str, msg: impl ToString) -> Coded {
    Coded {
        code,
        message: msg.to_string(),
    }
}

/// The JS error class (index.js's ClusterShmError), registered once per environment.
type ErrorClass = FunctionRef<FnArgs<(String, String)>, Unknown<'static>>;

/// index.js registers its `ClusterShmError(code, message)` class here, so that errors thrown by
/// the addon are instances of it.
#[napi]
pub fn register_error_class(env: Env, error_class: Function<FnArgs<(String, String)>, Unknown<'static>>) -> Result<()> {
    env.set_instance_data(error_class.create_ref()?, (), |_| {})
}

/// Throws `Coded` errors as `ClusterShmError`s (or, before index.js registered it, as plain errors
/// with the same `code`).
pub(super) fn js<T>(env: &Env, r: CodedResult<T>) -> Result<T> {
    r.or_else(|e| {
        let class = env.get_instance_data::<ErrorClass>().ok().flatten();
        let thrown = class
            .and_then(|c| c.borrow_back(env).ok())
            .and_then(|ctor| ctor.new_instance((e.code.to_owned(), e.message.clone()).into()).ok())
            .map(|err| env.throw(err));
        if !matches!(thrown, Some(Ok(()))) {
            env.throw_error(&e.message, Some(e.code))?;
        }
        Err(Error::new(Status::PendingException, e.message))
    })
}

pub(super) fn init_error(e: InitError) -> Coded {
    use crate::core::segment::CreateError;
    let code = match &e {
        InitError::Geometry(_) => "ERR_INVALID_ARG",
        InitError::Segment(CreateError::NoSpace) => "ERR_NO_SPACE",
        InitError::Segment(_) => "ERR_SEGMENT_CREATE",
    };
    coded(code, e)
}

pub(super) fn attach_error(e: AttachError) -> Coded {
    use crate::core::segment::OpenError;
    let code = match &e {
        AttachError::Segment(OpenError::NotFound) => "ERR_SEGMENT_NOT_FOUND",
        AttachError::Segment(OpenError::InvalidName) => "ERR_INVALID_ARG",
        AttachError::Segment(OpenError::PermissionDenied) => "ERR_SEGMENT_ACCESS",
        AttachError::Segment(_) | AttachError::BadHeader(_) => "ERR_BAD_SEGMENT",
        AttachError::IndexOutOfRange { .. } => "ERR_INDEX_OUT_OF_RANGE",
        AttachError::IndexTaken(_) => "ERR_INDEX_TAKEN",
        AttachError::NoFreeIndex => "ERR_NO_FREE_INDEX",
        AttachError::Closed => "ERR_CLUSTER_CLOSED",
    };
    coded(code, e)
}

pub(super) fn write_error(e: WriteError) -> Coded {
    let code = match &e {
        WriteError::TargetOutOfRange { .. } | WriteError::ToSelf => "ERR_INDEX_OUT_OF_RANGE",
        WriteError::TooLarge { .. } => "ERR_PAYLOAD_TOO_LARGE",
        WriteError::Closed => "ERR_CLOSED",
        WriteError::ClusterClosed => "ERR_CLUSTER_CLOSED",
        WriteError::Corrupt => "ERR_CORRUPT",
    };
    coded(code, e)
}

pub(super) fn object_error(e: ObjectError) -> Coded {
    let code = match &e {
        ObjectError::InvalidName | ObjectError::InvalidParams(_) => "ERR_INVALID_ARG",
        ObjectError::Mismatch(_) => "ERR_MISMATCH",
        ObjectError::TableFull | ObjectError::NoSpace { .. } => "ERR_NO_SPACE",
        ObjectError::Corrupt => "ERR_CORRUPT",
    };
    coded(code, e)
}

pub(super) fn topic_error(e: TopicError) -> Coded {
    let code = match &e {
        TopicError::InvalidName | TopicError::InvalidPublishName => "ERR_INVALID_ARG",
        TopicError::TableFull => "ERR_NO_SPACE",
    };
    coded(code, e)
}

pub(super) fn map_error(e: MapError) -> Coded {
    let code = match &e {
        MapError::KeyTooLarge { .. } | MapError::ValueTooLarge { .. } => "ERR_PAYLOAD_TOO_LARGE",
        MapError::Full { .. } => "ERR_MAP_FULL",
        MapError::NotANumber => "ERR_NOT_A_NUMBER",
        MapError::Busy { .. } => "ERR_LOCK_TIMEOUT",
    };
    coded(code, e)
}

pub(super) fn bounds_error(e: OutOfBounds) -> Coded {
    coded("ERR_OUT_OF_BOUNDS", e)
}

/// A JS number that must be a whole, non-negative, exactly representable integer.
pub(super) fn whole(v: f64, what: &str) -> CodedResult<u64> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9007199254740991.0 {
        Ok(v as u64)
    } else {
        Err(coded(
            "ERR_INVALID_ARG",
            format!("{what} must be a non-negative integer, got {v}"),
        ))
    }
}

/// The code a queued send's completion carries when it failed.
pub(super) fn send_error_code(e: &SendError) -> &'static str {
    match e {
        SendError::Closed => "ERR_CLOSED",
        SendError::TimedOut => "ERR_TIMEOUT",
        SendError::ClusterClosed => "ERR_CLUSTER_CLOSED",
        SendError::TargetLeft => "ERR_PEER_GONE",
        SendError::Corrupt => "ERR_CORRUPT",
    }
}

/// The code a queued acquire's completion carries when it failed.
pub(super) fn acquire_error_code(e: &AcquireError) -> &'static str {
    match e {
        AcquireError::TimedOut => "ERR_TIMEOUT",
        AcquireError::Cancelled => "ERR_ABORTED",
        AcquireError::Closed => "ERR_CLOSED",
    }
}
